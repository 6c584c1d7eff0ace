-- Threads, their messages as rows, a checkpoint per step of every graph run,
-- and the escalations. The bounds are generous: the server validates its
-- inputs before they get here, and these only keep a bug from storing
-- anything at all.

CREATE TABLE threads (
    id         text        PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 255),
    channel    text        NOT NULL CHECK (length(channel) <= 255),
    -- data is the client's context of the thread. The thread store port
    -- does not carry it yet: each run's first checkpoint keeps the data
    -- the chat was sent with.
    data       jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- updated_at is when a message was last appended.
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Appending inserts rows; nothing is rewritten. Appends to a thread take
-- its row's lock first, so seq follows the order in which messages were
-- appended even when instances append at once.
CREATE TABLE messages (
    seq        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    thread_id  text        NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    id         text        NOT NULL CHECK (length(id) BETWEEN 1 AND 255),
    role       text        NOT NULL CHECK (role IN ('user', 'assistant')),
    content    text        NOT NULL,
    cancelled  boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL,
    CONSTRAINT messages_thread_id_id_key UNIQUE (thread_id, id)
);
CREATE INDEX messages_thread_seq_idx ON messages (thread_id, seq);

-- One row per step of a graph run: a run's history is
-- SELECT * FROM checkpoints WHERE run_id = $1 ORDER BY step.
CREATE TABLE checkpoints (
    seq        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    thread_id  text        NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    run_id     text        NOT NULL CHECK (length(run_id) <= 255),
    step       integer     NOT NULL CHECK (step >= 0),
    node       text        NOT NULL CHECK (length(node) <= 255),
    state      jsonb       NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX checkpoints_thread_seq_idx ON checkpoints (thread_id, seq);
CREATE INDEX checkpoints_run_step_idx ON checkpoints (run_id, step);

CREATE TABLE escalations (
    seq        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    thread_id  text        NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    run_id     text        NOT NULL CHECK (length(run_id) <= 255),
    reason     text        NOT NULL CHECK (length(reason) <= 64),
    detail     text        NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX escalations_thread_seq_idx ON escalations (thread_id, seq);
