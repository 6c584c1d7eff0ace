-- The fencing token of the newest lease whose turn was saved on the thread
-- (ports.Turn.Fence). A turn of an older lease is refused: SaveTurn's upsert
-- sets the fence to -1 for it, which this CHECK refuses, and the turn's
-- transaction with it. Zero: no fenced turn yet.
ALTER TABLE threads
    ADD COLUMN fence bigint NOT NULL DEFAULT 0
    CONSTRAINT threads_fence_stale CHECK (fence >= 0);
