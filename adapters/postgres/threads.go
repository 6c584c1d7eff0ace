package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
)

// Bounds of what is stored, in characters; the schema's CHECKs say the
// same. The server validates its inputs before they get here: these turn a
// value that slipped through into a clear error rather than a failed query.
const (
	maxKey = ports.MaxStoredKey // ids, channel, run ids, node names
)

// A batch of statements is sent in one round trip and, ending with one
// Sync, runs as one implicit transaction: either all of it is stored or
// none. Reads batch their statements too; each sees what was committed
// when it started, which is enough for rows that are only ever appended.

const (
	selectThread = `SELECT channel, created_at FROM threads WHERE id = $1`
	threadExists = `SELECT EXISTS (SELECT 1 FROM threads WHERE id = $1)`

	selectMessages = `SELECT id, role, content, cancelled, created_at
		FROM messages WHERE thread_id = $1 ORDER BY seq`

	selectCheckpoints = `SELECT run_id, step, node, state, created_at
		FROM checkpoints WHERE thread_id = $1 ORDER BY seq`

	selectEscalations = `SELECT run_id, reason, detail, created_at
		FROM escalations WHERE thread_id = $1 ORDER BY seq`

	// A turn creates its thread or, when it exists, locks its row (and
	// notes the time), so that the turns of one thread, from any instance,
	// take their seq in turn. Two turns creating one thread at once
	// are fine: the second's insert waits for the first to commit, then
	// updates the row it made. The row's lock also orders the fence check:
	// a turn of a fence older than the thread's sets it to -1, which the
	// CHECK threads_fence_stale refuses, rolling the whole turn back; a
	// newer fence raises it; zero (unfenced) leaves it.
	upsertThread = `INSERT INTO threads (id, channel, fence) VALUES ($1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET updated_at = now(), fence = CASE
			WHEN EXCLUDED.fence = 0 THEN threads.fence
			WHEN EXCLUDED.fence >= threads.fence THEN EXCLUDED.fence
			ELSE -1 END`
	// The thread's row is there and locked: no need to check for it. A
	// turn's checkpoints, six or so, are one statement of arrays, which
	// costs the database a fifth less CPU per turn than six statements
	// (measured: ~400 µs against ~500 µs); they take their seq in the
	// order of the arrays.
	insertTurnCheckpoints = `INSERT INTO checkpoints (thread_id, run_id, step, node, state, created_at)
		SELECT $1::text, run_id, step, node, state::jsonb, created_at
		FROM unnest($2::text[], $3::integer[], $4::text[], $5::text[], $6::timestamptz[])
			WITH ORDINALITY AS c (run_id, step, node, state, created_at, n)
		ORDER BY n`
	// A turn's messages, the user's and the answer, are one statement of
	// arrays too, which saves PostgreSQL a statement's parse, plan and
	// executor start per turn; they take their seq in the arrays' order.
	insertTurnMessages = `INSERT INTO messages (thread_id, id, role, content, cancelled, created_at)
		SELECT $1::text, id, role, content, cancelled, created_at
		FROM unnest($2::text[], $3::text[], $4::text[], $5::boolean[], $6::timestamptz[])
			WITH ORDINALITY AS m (id, role, content, cancelled, created_at, n)
		ORDER BY n`
	insertTurnEscalation = `INSERT INTO escalations (thread_id, run_id, reason, detail, created_at)
		VALUES ($1, $2, $3, $4, $5)`
)

// Load returns the thread with its messages and escalations.
func (s *Store) Load(ctx context.Context, threadID string) (ports.Thread, error) {
	if !storable(threadID, maxKey) {
		return ports.Thread{}, conversation.ErrThreadNotFound
	}
	th := ports.Thread{ID: threadID}
	found := false
	b := &pgx.Batch{}
	b.Queue(selectThread, threadID).QueryRow(func(row pgx.Row) error {
		err := row.Scan(&th.Channel, &th.CreatedAt)
		if errors.Is(err, pgx.ErrNoRows) {
			// Not returned as an error: pgx drops the cached statements
			// of a batch that fails, and every new thread is looked up
			// before it is created.
			return nil
		}
		found = err == nil
		return err
	})
	b.Queue(selectMessages, threadID).Query(func(rows pgx.Rows) (err error) {
		th.Messages, err = scanMessages(rows)
		return err
	})
	b.Queue(selectEscalations, threadID).Query(func(rows pgx.Rows) (err error) {
		th.Escalations, err = scanEscalations(rows)
		return err
	})
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return ports.Thread{}, s.fail(ctx, "load thread", err)
	}
	if !found {
		return ports.Thread{}, conversation.ErrThreadNotFound
	}
	th.CreatedAt = th.CreatedAt.UTC()
	return th, nil
}

// History returns the thread's messages in the order appended.
func (s *Store) History(ctx context.Context, threadID string) ([]ports.Message, error) {
	if !storable(threadID, maxKey) {
		return nil, conversation.ErrThreadNotFound
	}
	var (
		found bool
		msgs  []ports.Message
	)
	b := &pgx.Batch{}
	b.Queue(threadExists, threadID).QueryRow(func(row pgx.Row) error { return row.Scan(&found) })
	b.Queue(selectMessages, threadID).Query(func(rows pgx.Rows) (err error) {
		msgs, err = scanMessages(rows)
		return err
	})
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, s.fail(ctx, "history", err)
	}
	if !found {
		return nil, conversation.ErrThreadNotFound
	}
	return msgs, nil
}

// Checkpoints returns the thread's checkpoints in the order saved, or
// conversation.ErrThreadNotFound. It is not part of ports.ThreadStore: the
// conversation never reads checkpoints back; tests and operators do.
func (s *Store) Checkpoints(ctx context.Context, threadID string) ([]ports.Checkpoint, error) {
	if !storable(threadID, maxKey) {
		return nil, conversation.ErrThreadNotFound
	}
	var (
		found bool
		cps   []ports.Checkpoint
	)
	b := &pgx.Batch{}
	b.Queue(threadExists, threadID).QueryRow(func(row pgx.Row) error { return row.Scan(&found) })
	b.Queue(selectCheckpoints, threadID).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var (
				cp    ports.Checkpoint
				state []byte
			)
			if err := rows.Scan(&cp.RunID, &cp.Step, &cp.Node, &state, &cp.CreatedAt); err != nil {
				return err
			}
			cp.State = state
			cp.CreatedAt = cp.CreatedAt.UTC()
			cps = append(cps, cp)
		}
		return rows.Err()
	})
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, s.fail(ctx, "checkpoints", err)
	}
	if !found {
		return nil, conversation.ErrThreadNotFound
	}
	return cps, nil
}

// SaveTurn stores t in one transaction and one round trip (once the
// connection has prepared its statements: the first batch of each
// statement on a connection costs one more).
//
// The whole turn is one batch: pgx sends its statements in a pipeline that
// ends with a single Sync, and PostgreSQL runs the statements before a Sync
// as one implicit transaction, committed at the Sync or rolled back
// entirely when one of them fails. That is BEGIN ... COMMIT without their
// statements, and leaves no transaction open on the connection after a
// failure (an explicit BEGIN in a batch would, and the pool would drop
// the connection). pgx's Batch.BeginTx, or pool.BeginTx then SendBatch and
// Commit, would cost one or two more round trips for the same effect.
//
// The commit waits for the WAL to reach the disk: the turn holds the
// messages, and its checkpoints come with them.
//
// A turn of a fence older than the thread's is refused with ErrFenced (see
// upsertThread), in the same transaction: nothing of it is stored.
func (s *Store) SaveTurn(ctx context.Context, t ports.Turn) error {
	if t.ThreadID == "" {
		return errors.New("postgres: save turn: the thread id is empty")
	}
	if err := ports.CheckTurn(t); err != nil {
		return unstorable("save turn", err)
	}
	b := &pgx.Batch{}
	b.Queue(upsertThread, t.ThreadID, t.Channel, t.Fence)
	if n := len(t.Messages); n > 0 {
		var (
			ids       = make([]string, n)
			roles     = make([]string, n)
			contents  = make([]string, n)
			cancelled = make([]bool, n)
			times     = make([]time.Time, n)
		)
		for i, m := range t.Messages {
			ids[i], roles[i], contents[i], cancelled[i], times[i] = m.ID, string(m.Role), m.Content, m.Cancelled, m.CreatedAt
		}
		b.Queue(insertTurnMessages, t.ThreadID, ids, roles, contents, cancelled, times)
	}
	if n := len(t.Checkpoints); n > 0 {
		var (
			runs   = make([]string, n)
			steps  = make([]int32, n)
			nodes  = make([]string, n)
			states = make([]string, n)
			times  = make([]time.Time, n)
		)
		for i, cp := range t.Checkpoints {
			// checkTurn bounded the step.
			runs[i], steps[i], nodes[i], states[i], times[i] = cp.RunID, int32(cp.Step), cp.Node, string(cp.State), cp.CreatedAt //nolint:gosec // checkTurn (checkCheckpoint) refused steps outside 0..MaxInt32

		}
		b.Queue(insertTurnCheckpoints, t.ThreadID, runs, steps, nodes, states, times)
	}
	if e := t.Escalation; e != nil {
		b.Queue(insertTurnEscalation, t.ThreadID, e.RunID, string(e.Reason), e.Detail, e.CreatedAt)
	}
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		switch {
		case constraint(err, "23514", "threads_fence_stale"):
			return fmt.Errorf("postgres: save turn: fence %d: %w", t.Fence, conversation.ErrFenced)
		case constraint(err, "23505", "messages_thread_id_id_key"):
			err = fmt.Errorf("a message id is already in the thread: %w", err)
		case refused(err):
			return unstorable("save turn", err)
		}
		return s.fail(ctx, "save turn", err)
	}
	return nil
}

// unstorable wraps why a value cannot be stored; it is not counted as a
// failure of the database.
func unstorable(op string, err error) error {
	return fmt.Errorf("postgres: %s: %w: %w", op, conversation.ErrUnstorable, err)
}

// refused reports whether PostgreSQL refused a value that ports.CheckTurn
// and friends should have caught first: an escape jsonb cannot hold
// (22P05: \u0000; 22P02: a lone surrogate), or bytes that are not UTF-8
// (22021).
func refused(err error) bool {
	switch code(err) {
	case "22P05", "22P02", "22021":
		return true
	}
	return false
}

func scanMessages(rows pgx.Rows) ([]ports.Message, error) {
	var out []ports.Message
	for rows.Next() {
		var (
			m    ports.Message
			role string
		)
		if err := rows.Scan(&m.ID, &role, &m.Content, &m.Cancelled, &m.CreatedAt); err != nil {
			return nil, err
		}
		m.Role = ports.Role(role)
		m.CreatedAt = m.CreatedAt.UTC()
		out = append(out, m)
	}
	return out, rows.Err()
}

func scanEscalations(rows pgx.Rows) ([]ports.EscalationRecord, error) {
	var out []ports.EscalationRecord
	for rows.Next() {
		var (
			e      ports.EscalationRecord
			reason string
		)
		if err := rows.Scan(&e.RunID, &reason, &e.Detail, &e.CreatedAt); err != nil {
			return nil, err
		}
		e.Reason = ports.EscalationReason(reason)
		e.CreatedAt = e.CreatedAt.UTC()
		out = append(out, e)
	}
	return out, rows.Err()
}

// fail wraps a failed call's error with its operation, and counts it
// unless the caller's context ended it. A statement the server cancelled
// for the context says so only in words: the context's error is added, so
// that errors.Is finds it.
func (s *Store) fail(ctx context.Context, op string, err error) error {
	ctxErr := ctx.Err()
	switch {
	case ctxErr == nil:
		s.onError(op)
	case !errors.Is(err, ctxErr):
		return fmt.Errorf("postgres: %s: %w: %w", op, ctxErr, err)
	}
	return fmt.Errorf("postgres: %s: %w", op, err)
}

// code returns the SQLSTATE of PostgreSQL's error err, or "".
func code(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// constraint reports whether err is PostgreSQL's error sqlstate on the
// named constraint.
func constraint(err error, sqlstate, name string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == sqlstate && pgErr.ConstraintName == name
}

// storable reports whether PostgreSQL can store s as a text of at most
// maxLen characters. A thread id it cannot store names no thread.
func storable(s string, maxLen int) bool {
	return s != "" && ports.CheckText("", s, maxLen) == nil
}
