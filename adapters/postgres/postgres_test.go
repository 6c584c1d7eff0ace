package postgres_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/postgres"
	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/ports/porttest"
	"github.com/wsserver/wsserver/test/containers"
)

// server is the one PostgreSQL of this package's tests; each test has a
// database of its own. It is nil with -short.
var server *containers.Postgres

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run()) // the tests that need PostgreSQL skip themselves
	}
	ctx := context.Background()
	var err error
	server, err = containers.StartPostgres(ctx)
	if err != nil {
		log.Fatal(err)
	}
	code := m.Run()
	if err := server.Terminate(ctx); err != nil {
		log.Print(err)
	}
	os.Exit(code)
}

// newDatabase returns the DSN of an empty database of the test's own.
func newDatabase(t testing.TB) string {
	t.Helper()
	if server == nil {
		t.Skip("needs PostgreSQL (skipped by -short)")
	}
	return server.NewDatabase(context.Background(), t)
}

// open opens a store on dsn, closed when the test ends.
func open(t testing.TB, dsn string) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn, MaxConns: 4})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s
}

// connect opens a connection of the test's own to dsn.
func connect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func message(id, content string) ports.Message {
	return ports.Message{ID: id, Role: ports.RoleUser, Content: content, CreatedAt: time.Now()}
}

// save stores a turn of msgs on thread, as a chat does; a turn without
// messages creates an empty thread.
func save(t testing.TB, s *postgres.Store, thread string, msgs ...ports.Message) {
	t.Helper()
	require.NoError(t, s.SaveTurn(t.Context(), ports.Turn{ThreadID: thread, Channel: "web", Messages: msgs}))
}

func TestThreadStoreContract(t *testing.T) {
	porttest.ThreadStore(t, func(t *testing.T) (porttest.CheckpointStore, porttest.CheckpointStore) {
		t.Helper()
		dsn := newDatabase(t)
		// Two stores on one database, as two instances have.
		return open(t, dsn), open(t, dsn)
	})
}

// logs collects what stores log, from many goroutines.
type logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logs) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), s)
}

// versions returns the versions recorded in schema_migrations, in order.
func versions(t *testing.T, dsn string) []int {
	t.Helper()
	rows, err := connect(t, dsn).Query(context.Background(), `SELECT version FROM schema_migrations ORDER BY version`)
	require.NoError(t, err)
	got, err := pgx.CollectRows(rows, pgx.RowTo[int])
	require.NoError(t, err)
	return got
}

func TestMigrationsRunOnce(t *testing.T) {
	ctx := t.Context()
	dsn := newDatabase(t)
	var out logs
	log := slog.New(slog.NewTextHandler(&out, nil))

	first, err := postgres.Open(ctx, postgres.Config{DSN: dsn, Log: log})
	require.NoError(t, err)
	t.Cleanup(first.Close)
	save(t, first, "t1", message("m1", "kept"))
	applied := out.count("migration applied")
	require.Positive(t, applied)

	second, err := postgres.Open(ctx, postgres.Config{DSN: dsn, Log: log})
	require.NoError(t, err)
	t.Cleanup(second.Close)
	assert.Equal(t, applied, out.count("migration applied"), "the second start applies nothing")
	msgs, err := second.History(ctx, "t1")
	require.NoError(t, err)
	require.Len(t, msgs, 1)
	assert.Equal(t, "kept", msgs[0].Content)

	got := versions(t, dsn)
	want := make([]int, applied)
	for i := range want {
		want[i] = i + 1
	}
	assert.Equal(t, want, got)
}

func TestMigrationsRunConcurrently(t *testing.T) {
	const instances = 4
	for round := range 3 {
		t.Run(fmt.Sprint("round ", round), func(t *testing.T) {
			dsn := newDatabase(t)
			var (
				out    logs
				wg     sync.WaitGroup
				start  = make(chan struct{})
				stores = make([]*postgres.Store, instances)
				errs   = make([]error, instances)
			)
			log := slog.New(slog.NewTextHandler(&out, nil))
			for i := range instances {
				wg.Go(func() {
					<-start
					stores[i], errs[i] = postgres.Open(context.Background(), postgres.Config{DSN: dsn, MaxConns: 2, Log: log})
				})
			}
			close(start)
			wg.Wait()
			for i, err := range errs {
				require.NoError(t, err, "instance %d", i)
				t.Cleanup(stores[i].Close)
			}
			got := versions(t, dsn)
			assert.Equal(t, len(got), out.count("migration applied"), "each migration applied by one instance")
			for i, v := range got {
				assert.Equal(t, i+1, v, "each version recorded once")
			}
			// Every instance works on the schema.
			ctx := t.Context()
			for i, s := range stores {
				save(t, s, "t", message(fmt.Sprint("m", i), "hi"))
			}
			msgs, err := stores[instances-1].History(ctx, "t")
			require.NoError(t, err)
			assert.Len(t, msgs, instances)
		})
	}
}

func TestMessagesAreRows(t *testing.T) {
	ctx := t.Context()
	dsn := newDatabase(t)
	s := open(t, dsn)
	db := connect(t, dsn)
	save(t, s, "t", message("m1", "first"))

	// xmin names the transaction that wrote a row version: a turn must
	// not write the first message again.
	var before, after string
	rowVersion := `SELECT xmin::text FROM messages WHERE thread_id = 't' AND id = 'm1'`
	require.NoError(t, db.QueryRow(ctx, rowVersion).Scan(&before))
	save(t, s, "t", message("m2", "second"), message("m3", "third"))
	require.NoError(t, db.QueryRow(ctx, rowVersion).Scan(&after))
	assert.Equal(t, before, after)
	var n int
	require.NoError(t, db.QueryRow(ctx, `SELECT count(*) FROM messages WHERE thread_id = 't'`).Scan(&n))
	assert.Equal(t, 3, n)

	// A run's steps can be read back by run id.
	tr := ports.Turn{ThreadID: "t"}
	for i, node := range []string{"load", "generate", "respond"} {
		tr.Checkpoints = append(tr.Checkpoints, ports.Checkpoint{
			RunID: "run-1", Step: i, Node: node, State: json.RawMessage(`{"node":"` + node + `"}`), CreatedAt: time.Now(),
		})
	}
	require.NoError(t, s.SaveTurn(ctx, tr))
	rows, err := db.Query(ctx, `SELECT node FROM checkpoints WHERE run_id = 'run-1' ORDER BY step`)
	require.NoError(t, err)
	nodes, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	assert.Equal(t, []string{"load", "generate", "respond"}, nodes)
}

func TestRefusesWhatPostgresCannotStore(t *testing.T) {
	ctx := t.Context()
	s := open(t, newDatabase(t))
	save(t, s, "t")
	long := strings.Repeat("x", 256)
	at := time.Now()

	refused := func(t *testing.T, tr ports.Turn, says string) {
		t.Helper()
		tr.ThreadID = "t"
		err := s.SaveTurn(ctx, tr)
		require.Error(t, err)
		require.NotErrorIs(t, err, conversation.ErrThreadNotFound)
		assert.Contains(t, err.Error(), says)
		assert.True(t, strings.HasPrefix(err.Error(), "postgres: "), err.Error())
	}
	messages := func(msgs ...ports.Message) ports.Turn { return ports.Turn{Messages: msgs} }
	t.Run("messages", func(t *testing.T) {
		refused(t, messages(message("m1", "a\x00b")), "NUL")
		refused(t, messages(message("m1", "a\xffb")), "UTF-8")
		refused(t, messages(message("", "no id")), "id is empty")
		refused(t, messages(message(long, "long id")), "longer than")
		refused(t, messages(ports.Message{ID: "m1", Role: "system", Content: "x", CreatedAt: at}), "role")
		refused(t, messages(ports.Message{ID: "m1", Role: ports.RoleUser, CreatedAt: time.Date(300000, 1, 1, 0, 0, 0, 0, time.UTC)}), "out of range")

		save(t, s, "t", message("m1", "kept"))
		refused(t, messages(message("m2", "lost with the next"), message("m1", "again")), "already in the thread")
		msgs, err := s.History(ctx, "t")
		require.NoError(t, err)
		require.Len(t, msgs, 1, "a failed turn stores none of its messages")
		assert.Equal(t, "kept", msgs[0].Content)
	})
	t.Run("checkpoints", func(t *testing.T) {
		cp := ports.Checkpoint{RunID: "r", Node: "load", State: json.RawMessage(`{}`), CreatedAt: at}
		checkpoint := func(c ports.Checkpoint) ports.Turn { return ports.Turn{Checkpoints: []ports.Checkpoint{c}} }
		bad := cp
		bad.State = json.RawMessage(`{"a":`)
		refused(t, checkpoint(bad), "not valid JSON")
		bad.State = nil
		refused(t, checkpoint(bad), "not valid JSON")
		bad.State = json.RawMessage(`{"a":"x\u0000y"}`)
		refused(t, checkpoint(bad), `\u0000`)
		bad = cp
		bad.Step = -1
		refused(t, checkpoint(bad), "step")
		bad = cp
		bad.Node = long
		refused(t, checkpoint(bad), "longer than")
		cps, err := s.Checkpoints(ctx, "t")
		require.NoError(t, err)
		assert.Empty(t, cps)
	})
	t.Run("escalations", func(t *testing.T) {
		e := ports.EscalationRecord{RunID: "r", Reason: ports.EscalationReason(strings.Repeat("r", 65)), CreatedAt: at}
		refused(t, ports.Turn{Escalation: &e}, "longer than")
		e.Reason, e.Detail = ports.ReasonRule, "\x00"
		refused(t, ports.Turn{Escalation: &e}, "NUL")
		th, err := s.Load(ctx, "t")
		require.NoError(t, err)
		assert.Empty(t, th.Escalations)
	})
	t.Run("threads", func(t *testing.T) {
		refused(t, ports.Turn{Channel: long}, "longer than")
		refused(t, ports.Turn{Channel: "a\x00b"}, "NUL")
		// An id no thread can have names no thread.
		for _, id := range []string{"", long, "a\x00b", "a\xffb"} {
			_, err := s.Load(ctx, id)
			require.ErrorIs(t, err, conversation.ErrThreadNotFound)
			_, err = s.History(ctx, id)
			require.ErrorIs(t, err, conversation.ErrThreadNotFound)
			_, err = s.Checkpoints(ctx, id)
			require.ErrorIs(t, err, conversation.ErrThreadNotFound)
		}
	})
}

// blockedSave starts a SaveTurn on thread that waits for the thread's row
// lock, held by another transaction, and returns the pid of the backend
// that waits, and the channel of SaveTurn's result. The lock is released
// when the test ends.
func blockedSave(t *testing.T, ctx context.Context, s *postgres.Store, dsn, thread string) (int32, <-chan error) {
	t.Helper()
	holder := connect(t, dsn)
	tx, err := holder.Begin(t.Context())
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	_, err = tx.Exec(t.Context(), `SELECT 1 FROM threads WHERE id = $1 FOR UPDATE`, thread)
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() {
		done <- s.SaveTurn(ctx, ports.Turn{ThreadID: thread, Messages: []ports.Message{message("blocked", "never stored")}})
	}()

	watcher := connect(t, dsn)
	for range 1000 {
		var pid int32
		err := watcher.QueryRow(t.Context(), `SELECT pid FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO threads%'`).Scan(&pid)
		if err == nil {
			return pid, done
		}
		require.ErrorIs(t, err, pgx.ErrNoRows)
		select {
		case err := <-done:
			t.Fatalf("the turn was saved without waiting: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatal("the turn never waited for the lock")
	return 0, nil
}

func TestDatabaseGoingAwayFailsTheCallsInProgress(t *testing.T) {
	ctx := t.Context()
	dsn := newDatabase(t)
	s := open(t, dsn)
	save(t, s, "t")

	pid, done := blockedSave(t, ctx, s, dsn, "t")
	admin := connect(t, dsn)
	_, err := admin.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid)
	require.NoError(t, err)
	err = <-done
	require.Error(t, err)
	require.NotErrorIs(t, err, conversation.ErrThreadNotFound)
	assert.True(t, strings.HasPrefix(err.Error(), "postgres: save turn: "), err.Error())

	// Every connection goes, as when the server restarts: calls fail with
	// clear errors until the pool has replaced its connections.
	_, err = admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid()`)
	require.NoError(t, err)
	recovered := false
	for range 10 {
		_, err := s.History(ctx, "t")
		if err == nil {
			recovered = true
			break
		}
		assert.True(t, strings.HasPrefix(err.Error(), "postgres: history: "), err.Error())
	}
	require.True(t, recovered, "the store never recovered")
	require.NoError(t, s.Ping(ctx))
	save(t, s, "t", message("m1", "after"))
	msgs, err := s.History(ctx, "t")
	require.NoError(t, err)
	require.Len(t, msgs, 1, "the interrupted turn stored nothing")
	assert.Equal(t, "m1", msgs[0].ID)
}

// gate forwards TCP connections to a PostgreSQL server once opened, and
// refuses them until then, as a server that is still booting does.
type gate struct {
	target  string
	ln      net.Listener
	open    atomic.Bool
	refused chan struct{}

	mu    sync.Mutex
	conns []net.Conn
}

func newGate(t *testing.T, target string) *gate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	g := &gate{target: target, ln: ln, refused: make(chan struct{}, 100)}
	go g.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		g.mu.Lock()
		defer g.mu.Unlock()
		for _, c := range g.conns {
			_ = c.Close()
		}
	})
	return g
}

func (g *gate) serve() {
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		if !g.open.Load() {
			_ = c.Close()
			select {
			case g.refused <- struct{}{}:
			default:
			}
			continue
		}
		go g.forward(c)
	}
}

func (g *gate) forward(client net.Conn) {
	server, err := net.Dial("tcp", g.target)
	if err != nil {
		_ = client.Close()
		return
	}
	g.mu.Lock()
	g.conns = append(g.conns, client, server)
	g.mu.Unlock()
	go func() {
		_, _ = io.Copy(server, client)
		_ = server.Close()
	}()
	_, _ = io.Copy(client, server)
	_ = client.Close()
}

// through returns dsn with its host and port replaced by addr.
func through(t *testing.T, dsn, addr string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	require.NoError(t, err)
	u.Host = addr
	return u.String()
}

// target returns the host:port of dsn.
func target(t *testing.T, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	require.NoError(t, err)
	return u.Host
}

func TestOpenWaitsForTheDatabase(t *testing.T) {
	dsn := newDatabase(t)
	g := newGate(t, target(t, dsn))
	type result struct {
		s   *postgres.Store
		err error
	}
	gated := through(t, dsn, g.ln.Addr().String())
	done := make(chan result, 1)
	go func() {
		s, err := postgres.Open(context.Background(), postgres.Config{DSN: gated, ConnectWait: time.Minute})
		done <- result{s, err}
	}()
	for range 2 {
		select {
		case <-g.refused:
		case r := <-done:
			t.Fatalf("Open returned before the database answered: %v", r.err)
		}
	}
	g.open.Store(true)
	r := <-done
	require.NoError(t, r.err)
	t.Cleanup(r.s.Close)
	require.NoError(t, r.s.Ping(t.Context()))
}

func TestOpenFails(t *testing.T) {
	dsn := newDatabase(t)
	t.Run("when the database never answers", func(t *testing.T) {
		g := newGate(t, target(t, dsn))
		_, err := postgres.Open(t.Context(), postgres.Config{DSN: through(t, dsn, g.ln.Addr().String()), ConnectWait: 300 * time.Millisecond})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "postgres: connect: ")
	})
	t.Run("when its start is cancelled", func(t *testing.T) {
		g := newGate(t, target(t, dsn))
		ctx, cancel := context.WithCancel(t.Context())
		gated := through(t, dsn, g.ln.Addr().String())
		done := make(chan error, 1)
		go func() {
			_, err := postgres.Open(ctx, postgres.Config{DSN: gated, ConnectWait: time.Hour})
			done <- err
		}()
		<-g.refused
		cancel()
		require.ErrorIs(t, <-done, context.Canceled)
	})
	t.Run("at once on an unknown database", func(t *testing.T) {
		u, err := url.Parse(dsn)
		require.NoError(t, err)
		u.Path = "/no_such_database"
		// Were this retried, Open would wait for an hour.
		_, err = postgres.Open(t.Context(), postgres.Config{DSN: u.String(), ConnectWait: time.Hour})
		require.Error(t, err)
		assert.Contains(t, err.Error(), "3D000")
	})
	t.Run("on a bad config", func(t *testing.T) {
		for _, cfg := range []postgres.Config{
			{},
			{DSN: dsn, MaxConns: -1},
			{DSN: dsn, ConnectWait: -time.Second},
			{DSN: "postgres://user:sekret@127.0.0.1:notaport/db"},
		} {
			_, err := postgres.Open(t.Context(), cfg)
			require.Error(t, err)
			assert.True(t, strings.HasPrefix(err.Error(), "postgres: "), err.Error())
			assert.NotContains(t, err.Error(), "sekret")
		}
	})
}

func TestCountsFailures(t *testing.T) {
	ctx := t.Context()
	dsn := newDatabase(t)
	var (
		mu  sync.Mutex
		ops []string
	)
	s, err := postgres.Open(ctx, postgres.Config{DSN: dsn, OnError: func(op string) {
		mu.Lock()
		defer mu.Unlock()
		ops = append(ops, op)
	}})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	_, err = s.Load(ctx, "unknown")
	require.ErrorIs(t, err, conversation.ErrThreadNotFound)
	save(t, s, "t", message("m1", "hi"))
	require.Error(t, s.SaveTurn(ctx, ports.Turn{ThreadID: "t", Messages: []ports.Message{message("m1", "again")}}))
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"save turn"}, ops, "an unknown thread is no failure")
}
