package postgres_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/postgres"
	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
)

// turn returns a chat's turn on thread: a question, its answer and the
// six checkpoints of a run that passed the guardrail.
func turn(thread string, n int) ports.Turn {
	run := fmt.Sprintf("run-%d", n)
	t := ports.Turn{
		ThreadID: thread,
		Channel:  "web",
		Messages: []ports.Message{
			{ID: fmt.Sprintf("q%d", n), Role: ports.RoleUser, Content: "Where is my order?", CreatedAt: time.Now()},
			{ID: fmt.Sprintf("a%d", n), Role: ports.RoleAssistant, Content: "On its way.", CreatedAt: time.Now()},
		},
	}
	for i, node := range []string{"load", "escalation_check", "generate", "guardrail", "respond", "done"} {
		t.Checkpoints = append(t.Checkpoints, ports.Checkpoint{
			RunID: run, Step: i, Node: node, State: json.RawMessage(`{"node":"` + node + `"}`), CreatedAt: time.Now(),
		})
	}
	return t
}

func TestSaveTurnRefusesWhatPostgresCannotStore(t *testing.T) {
	ctx := t.Context()
	s := open(t, newDatabase(t))
	save(t, s, "t", message("m1", "kept"))

	refused := func(t *testing.T, tr ports.Turn, says string) {
		t.Helper()
		err := s.SaveTurn(ctx, tr)
		require.Error(t, err)
		require.NotErrorIs(t, err, conversation.ErrThreadNotFound)
		assert.Contains(t, err.Error(), says)
		assert.True(t, strings.HasPrefix(err.Error(), "postgres: save turn: "), err.Error())
	}
	long := strings.Repeat("x", 256)
	for _, thread := range []string{"t", "new"} {
		t.Run(thread, func(t *testing.T) {
			tr := turn(thread, 1)
			tr.Messages[1].Content = "a\x00b"
			refused(t, tr, "message 1: the content holds a NUL")
			tr = turn(thread, 1)
			tr.Messages[0].Role = "system"
			refused(t, tr, "message 0: unknown role")
			tr = turn(thread, 1)
			tr.Messages[1].ID = tr.Messages[0].ID
			refused(t, tr, "message 1: a message id is already in the thread")
			tr = turn(thread, 1)
			tr.Checkpoints[2].State = json.RawMessage(`{"a":`)
			refused(t, tr, "checkpoint 2: the state is not valid JSON")
			tr = turn(thread, 1)
			tr.Escalation = &ports.EscalationRecord{RunID: "run-1", Reason: ports.EscalationReason(long), CreatedAt: time.Now()}
			refused(t, tr, "escalation: the reason is longer than")
			tr = turn(thread, 1)
			tr.Channel = long
			refused(t, tr, "the channel is longer than")
			// Only the database sees these: the turn is rolled back after
			// its thread was created and messages appended.
			tr = turn(thread, 1)
			tr.Checkpoints[5].State = json.RawMessage(`{"a":"x\u0000y"}`)
			refused(t, tr, `\u0000`)
		})
	}
	tr := turn("t", 1)
	tr.Messages[1].ID = "m1"
	refused(t, tr, "a message id is already in the thread")
	for _, id := range []string{"", long, "a\x00b", "a\xffb"} {
		refused(t, turn(id, 1), "thread id")
	}

	msgs, err := s.History(ctx, "t")
	require.NoError(t, err)
	require.Len(t, msgs, 1, "no refused turn appended anything")
	cps, err := s.Checkpoints(ctx, "t")
	require.NoError(t, err)
	assert.Empty(t, cps)
	_, err = s.Load(ctx, "new")
	require.ErrorIs(t, err, conversation.ErrThreadNotFound, "no refused turn created its thread")
}

func TestSaveTurnStopsWithItsContext(t *testing.T) {
	dsn := newDatabase(t)
	s := open(t, dsn)
	save(t, s, "t")

	// Another transaction holds the thread's row: the turn waits for it
	// before it appends anything.
	holder := connect(t, dsn)
	tx, err := holder.Begin(t.Context())
	require.NoError(t, err)
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	_, err = tx.Exec(t.Context(), `SELECT 1 FROM threads WHERE id = 't' FOR UPDATE`)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.SaveTurn(ctx, turn("t", 1)) }()
	watcher := connect(t, dsn)
	require.Eventually(t, func() bool {
		var waiting bool
		err := watcher.QueryRow(t.Context(), `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO threads%')`).Scan(&waiting)
		return err == nil && waiting
	}, 10*time.Second, 10*time.Millisecond, "the turn never waited for the thread's lock")
	cancel()
	err = <-done
	require.ErrorIs(t, err, context.Canceled)
	assert.True(t, strings.HasPrefix(err.Error(), "postgres: save turn: "), err.Error())

	require.NoError(t, tx.Rollback(t.Context()))
	require.NoError(t, s.SaveTurn(t.Context(), turn("t", 2)), "the connection is clean after the cancel")
	msgs, err := s.History(t.Context(), "t")
	require.NoError(t, err)
	require.Len(t, msgs, 2, "the cancelled turn stored nothing")
	assert.Equal(t, "q2", msgs[0].ID)
	cps, err := s.Checkpoints(t.Context(), "t")
	require.NoError(t, err)
	require.Len(t, cps, 6)
	assert.Equal(t, "run-2", cps[0].RunID)
}

// TestSaveTurnIsOneRoundTrip counts the round trips of a turn on a
// connection that has prepared its statements.
func TestSaveTurnIsOneRoundTrip(t *testing.T) {
	ctx := t.Context()
	dsn := newDatabase(t)
	w := newWire(t, target(t, dsn))
	// One connection, so that every call finds the statements it prepared.
	s, err := postgres.Open(ctx, postgres.Config{DSN: through(t, dsn, w.ln.Addr().String()), MaxConns: 1})
	require.NoError(t, err)
	t.Cleanup(s.Close)

	escalated := func(tr ports.Turn) ports.Turn {
		tr.Escalation = &ports.EscalationRecord{RunID: "run", Reason: ports.ReasonRule, CreatedAt: time.Now()}
		return tr
	}
	// Warm up: the first use of a statement on a connection prepares it.
	require.NoError(t, s.SaveTurn(ctx, escalated(turn("warm", 1))))

	count := func(call func() error) int64 {
		t.Helper()
		before := w.ready.Load()
		require.NoError(t, call())
		return w.ready.Load() - before
	}
	assert.Equal(t, int64(1), count(func() error { return s.SaveTurn(ctx, escalated(turn("new", 1))) }), "a turn that creates its thread")
	assert.Equal(t, int64(1), count(func() error { return s.SaveTurn(ctx, turn("new", 2)) }), "a turn on an existing thread")
}

// wire forwards TCP connections to a PostgreSQL server, counting the
// ReadyForQuery messages the server sends: one ends each round trip.
type wire struct {
	target string
	ln     net.Listener
	ready  atomic.Int64
}

func newWire(t *testing.T, target string) *wire {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	w := &wire{target: target, ln: ln}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				_ = client.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, client, server)
			mu.Unlock()
			go func() {
				_, _ = io.Copy(server, client)
				_ = server.Close()
			}()
			go func() {
				w.forward(client, server)
				_ = client.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return w
}

// forward copies the server's messages to the client one by one, counting
// each ReadyForQuery before the client can see it. The DSN's
// sslmode=disable makes every message, from the first, a typed one.
func (w *wire) forward(client, server net.Conn) {
	r := bufio.NewReader(server)
	header := make([]byte, 5)
	for {
		if _, err := io.ReadFull(r, header); err != nil {
			return
		}
		body := make([]byte, binary.BigEndian.Uint32(header[1:])-4)
		if _, err := io.ReadFull(r, body); err != nil {
			return
		}
		if header[0] == 'Z' {
			w.ready.Add(1)
		}
		if _, err := client.Write(append(header, body...)); err != nil {
			return
		}
	}
}
