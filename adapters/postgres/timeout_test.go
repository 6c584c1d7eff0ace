package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/postgres"
	"github.com/wsserver/wsserver/ports"
)

// A statement that waits on PostgreSQL (here a row lock another session
// holds, as a stuck transaction or a hung database would) is cancelled by
// the server's statement_timeout, whatever the caller's context: the
// store's calls cannot hang a thread for ever.
func TestStatementTimeoutFires(t *testing.T) {
	dsn := newDatabase(t)
	s, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn, MaxConns: 2, StatementTimeout: 300 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // only against a hang
	defer cancel()
	require.NoError(t, s.SaveTurn(ctx, ports.Turn{ThreadID: "t", Channel: "web"}))

	// Another session holds the thread's row.
	other := connect(t, dsn)
	tx, err := other.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SELECT 1 FROM threads WHERE id = 't' FOR UPDATE`)
	require.NoError(t, err)

	turn := ports.Turn{ThreadID: "t", Channel: "web", Messages: []ports.Message{message("m1", "hi")}}
	err = s.SaveTurn(ctx, turn)
	require.Error(t, err)
	require.NoError(t, ctx.Err(), "the server's timeout fired, not the caller's context")
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	assert.Equal(t, "57014", pgErr.Code, "query_canceled: %v", err)
	assert.Contains(t, pgErr.Message, "statement timeout")

	require.NoError(t, tx.Rollback(ctx))
	require.NoError(t, s.SaveTurn(ctx, turn), "the store works once the row is free")
	msgs, err := s.History(ctx, "t")
	require.NoError(t, err)
	assert.Len(t, msgs, 1, "the timed-out turn stored nothing")
}

// A statement_timeout in the DSN wins over the default; the Config's
// wins over the DSN's.
func TestStatementTimeoutSetting(t *testing.T) {
	dsn := newDatabase(t)
	show := func(cfg postgres.Config) string {
		t.Helper()
		s, err := postgres.Open(context.Background(), cfg)
		require.NoError(t, err)
		defer s.Close()
		v, err := s.Setting(context.Background(), "statement_timeout")
		require.NoError(t, err)
		return v
	}
	assert.Equal(t, "10s", show(postgres.Config{DSN: dsn}), "the default")
	withParam := dsn + "&statement_timeout=1500"
	if !containsQuery(dsn) {
		withParam = dsn + "?statement_timeout=1500"
	}
	assert.Equal(t, "1500ms", show(postgres.Config{DSN: withParam}), "the DSN's")
	assert.Equal(t, "2s", show(postgres.Config{DSN: withParam, StatementTimeout: 2 * time.Second}), "the Config's")
	_, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn, StatementTimeout: -time.Second})
	require.Error(t, err)
}

func containsQuery(dsn string) bool {
	for _, c := range dsn {
		if c == '?' {
			return true
		}
	}
	return false
}

// A connection a statement was cancelled on is closed, not used again:
// PostgreSQL acts on a cancel request when it gets to it, on a busy machine
// after the statement ended, and then it cancels the connection's next
// statement, another caller's (a turn's save failed so).
func TestCancelledConnectionIsNotReused(t *testing.T) {
	dsn := newDatabase(t)
	pcfg, err := postgres.PoolConfig(postgres.Config{DSN: dsn, MaxConns: 1})
	require.NoError(t, err)
	pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // only against a hang
	defer cancel()
	backend := func() int32 {
		t.Helper()
		var pid int32
		require.NoError(t, pool.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid))
		return pid
	}
	first := backend()
	require.Equal(t, first, backend(), "the connection serves statement after statement")

	// A statement whose caller gives up while it runs.
	const sleep = "SELECT pg_sleep(60) -- TestCancelledConnectionIsNotReused"
	stmtCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := pool.Exec(stmtCtx, sleep)
		done <- err
	}()
	watch := connect(t, dsn)
	for running := 0; running == 0; time.Sleep(10 * time.Millisecond) {
		require.NoError(t, watch.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'", sleep).Scan(&running))
	}
	stop()
	require.Error(t, <-done)

	assert.NotEqual(t, first, backend(), "a new connection, not the one the cancel request went out for")
	assert.Equal(t, int32(1), pool.Stat().TotalConns())
}
