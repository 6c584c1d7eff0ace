// Package postgres keeps threads in PostgreSQL with pgx: the thread store
// that instances share. Messages, checkpoints and escalations are rows;
// the schema is migrated at start.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wsserver/wsserver/ports"
)

var _ ports.ThreadStore = (*Store)(nil)

// Config configures Open.
type Config struct {
	// DSN names the database: a postgres:// URL or a keyword/value string.
	// Required. Its pool_* settings (see pgxpool.ParseConfig) apply unless
	// a field below overrides them.
	DSN string
	// MaxConns bounds the pool's connections. Zero: the DSN's
	// pool_max_conns, else 10.
	MaxConns int32
	// ConnectWait bounds how long Open retries the first connection, so
	// that an instance starting next to a database that is still booting
	// does not fail. Zero: 30 s.
	ConnectWait time.Duration
	// StatementTimeout is the server's statement_timeout for the pool's
	// sessions: a statement that runs or waits on a lock longer is
	// cancelled by PostgreSQL, whatever the caller's context. Zero: the
	// DSN's statement_timeout, else 10 s. (A database that does not answer
	// at all is bounded by the callers' contexts: the conversation's
	// StoreTimeout and WriteTimeout.)
	StatementTimeout time.Duration
	// OnError is called with the operation's name each time a call fails
	// for another reason than an unknown thread or the caller's context
	// (a metric). Nil: nothing is called.
	OnError func(op string)
	// Log receives start-up and migration messages. Nil: they are dropped.
	Log *slog.Logger
}

// Pool bounds used when neither the DSN nor the Config sets them.
const (
	defaultMaxConns    = 10
	defaultConnectWait = 30 * time.Second
	// connectTimeout bounds one connection attempt, TLS and authentication
	// included, unless the DSN sets connect_timeout.
	connectTimeout = 5 * time.Second
	// Idle connections are checked this often; one idle this long is
	// closed.
	healthCheckPeriod = 30 * time.Second
	maxConnIdleTime   = 5 * time.Minute
	// Connections are replaced after a while, so that a database failover
	// or a DNS change is followed.
	maxConnLifetime       = 30 * time.Minute
	maxConnLifetimeJitter = 5 * time.Minute
	// cancelGrace bounds how long a call outlives its context while the
	// server cancels its statement.
	cancelGrace = time.Second
	// defaultStatementTimeout is the server's statement_timeout unless
	// the DSN or the Config sets one: longer than the conversation's own
	// deadlines (5 s), so that it only catches what they do not bound.
	defaultStatementTimeout = 10 * time.Second
)

// Store is a thread store in PostgreSQL. Its methods are safe for
// concurrent use, by any number of instances on one database.
type Store struct {
	pool    *pgxpool.Pool
	onError func(op string)
}

// Open connects to cfg.DSN, retrying for up to cfg.ConnectWait, applies the
// migrations the database lacks, and returns the store. Close releases it.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.DSN == "" {
		return nil, errors.New("postgres: a DSN is required")
	}
	if cfg.MaxConns < 0 {
		return nil, errors.New("postgres: max conns must not be negative")
	}
	if cfg.ConnectWait < 0 {
		return nil, errors.New("postgres: connect wait must not be negative")
	}
	if cfg.StatementTimeout < 0 {
		return nil, errors.New("postgres: statement timeout must not be negative")
	}
	if cfg.ConnectWait == 0 {
		cfg.ConnectWait = defaultConnectWait
	}
	if cfg.OnError == nil {
		cfg.OnError = func(string) {}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	migrations, err := loadMigrations(migrationFiles)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	pcfg, err := poolConfig(cfg)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if err := waitReady(ctx, pool, cfg.ConnectWait); err != nil {
		pool.Close()
		return nil, err
	}
	applied, err := migrate(ctx, pool, migrations, cfg.Log)
	if err != nil {
		pool.Close()
		return nil, err
	}
	var encoding string
	if err := pool.QueryRow(ctx, `SHOW server_encoding`).Scan(&encoding); err == nil && encoding != "UTF8" {
		// jsonb then refuses escapes of characters beyond ASCII (\u00e9)
		// that the in-process store keeps: turns holding them are lost.
		cfg.Log.WarnContext(ctx, "postgres: the database's encoding is not UTF8: create it with ENCODING 'UTF8'", "server_encoding", encoding)
	}
	cfg.Log.InfoContext(ctx, "postgres: ready", "max_conns", pcfg.MaxConns, "migrations_applied", applied,
		"schema_version", migrations[len(migrations)-1].version)
	return &Store{pool: pool, onError: cfg.OnError}, nil
}

// poolConfig parses cfg.DSN and applies the bounds.
func poolConfig(cfg Config) (*pgxpool.Config, error) {
	pcfg, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		// The error quotes the DSN with its password masked.
		return nil, fmt.Errorf("postgres: %w", err)
	}
	// ParseConfig fills the defaults in, so look at the DSN itself to tell
	// whether it chose.
	raw, err := pgx.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	set := func(name string) bool { _, ok := raw.RuntimeParams[name]; return ok }
	switch {
	case cfg.MaxConns > 0:
		pcfg.MaxConns = cfg.MaxConns
	case !set("pool_max_conns"):
		pcfg.MaxConns = defaultMaxConns
	}
	if !set("pool_health_check_period") {
		pcfg.HealthCheckPeriod = healthCheckPeriod
	}
	if !set("pool_max_conn_idle_time") {
		pcfg.MaxConnIdleTime = maxConnIdleTime
	}
	if !set("pool_max_conn_lifetime") {
		pcfg.MaxConnLifetime = maxConnLifetime
	}
	if !set("pool_max_conn_lifetime_jitter") {
		pcfg.MaxConnLifetimeJitter = maxConnLifetimeJitter
	}
	if pcfg.ConnConfig.ConnectTimeout == 0 {
		pcfg.ConnConfig.ConnectTimeout = connectTimeout
	}
	// A call whose context ends asks the server to cancel its statement,
	// rather than only dropping the connection: a backend does not notice
	// its client has gone while it waits for a lock, and would then commit
	// what the caller was told had failed. If the server does not answer
	// within cancelGrace, the connection is dropped all the same.
	pcfg.ConnConfig.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		w := &cancelWatcher{CancelRequestContextWatcherHandler: &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: cancelGrace}}
		if data := c.CustomData(); data != nil {
			data[cancelWatcherKey] = w
		}
		return w
	}
	// The server acts on a cancel request when it gets to it: on a busy
	// machine that can be after the statement ended, and then it cancels
	// the connection's next statement, another caller's (pgx waits 100 ms
	// for it, which a starved server outlasts: a turn's save failed so,
	// "canceling statement due to user request"). A connection a cancel
	// request went out for is closed rather than used again, whether the
	// statement was a caller's or the pool's ping before handing it out.
	pcfg.AfterRelease = func(c *pgx.Conn) bool { return !cancelSent(c.PgConn()) }
	pcfg.PrepareConn = func(_ context.Context, c *pgx.Conn) (bool, error) { return !cancelSent(c.PgConn()), nil }
	switch {
	case cfg.StatementTimeout > 0:
		pcfg.ConnConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(max(cfg.StatementTimeout.Milliseconds(), 1), 10)
	case !set("statement_timeout"):
		pcfg.ConnConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(defaultStatementTimeout.Milliseconds(), 10)
	}
	if _, ok := pcfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		pcfg.ConnConfig.RuntimeParams["application_name"] = "wsserver"
	}
	return pcfg, nil
}

// cancelWatcher is pgx's cancel-request handler of a connection that
// remembers whether it sent a request.
type cancelWatcher struct {
	*pgconn.CancelRequestContextWatcherHandler
	sent atomic.Bool
}

// cancelWatcherKey finds a connection's cancelWatcher in its CustomData.
const cancelWatcherKey = "wsserver.cancel_watcher"

// HandleCancel is called when the context of a statement under way ends.
func (w *cancelWatcher) HandleCancel(ctx context.Context) {
	w.sent.Store(true)
	w.CancelRequestContextWatcherHandler.HandleCancel(ctx)
}

// cancelSent reports whether a cancel request went out for c: it may yet
// reach c's next statement.
func cancelSent(c *pgconn.PgConn) bool {
	w, ok := c.CustomData()[cancelWatcherKey].(*cancelWatcher)
	return ok && w.sent.Load()
}

// waitReady pings the database until it answers, for up to wait. Errors
// that waiting cannot cure, a wrong password or database name, end it at
// once.
func waitReady(ctx context.Context, pool *pgxpool.Pool, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	backoff := 100 * time.Millisecond
	for {
		err := pool.Ping(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("postgres: connect: %w", errors.Join(err, ctx.Err()))
		}
		if permanent(err) || time.Now().Add(backoff).After(deadline) {
			return fmt.Errorf("postgres: connect: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("postgres: connect: %w", errors.Join(err, ctx.Err()))
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// permanent reports whether err is a refusal that retrying cannot change.
func permanent(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	// Class 28: invalid authorization; 3D000: no such database.
	return strings.HasPrefix(pgErr.Code, "28") || pgErr.Code == "3D000"
}

// Ping checks that the database answers, for /ready/.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("postgres: ping: %w", err)
	}
	return nil
}

// Close closes the pool's connections, waiting for the calls in progress.
func (s *Store) Close() { s.pool.Close() }

// Setting returns the value of a run-time setting of the pool's sessions
// (SHOW name), for diagnostics and tests.
func (s *Store) Setting(ctx context.Context, name string) (string, error) {
	var v string
	if err := s.pool.QueryRow(ctx, `SELECT current_setting($1)`, name).Scan(&v); err != nil {
		return "", fmt.Errorf("postgres: setting %s: %w", name, err)
	}
	return v, nil
}
