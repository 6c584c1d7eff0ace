package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
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
