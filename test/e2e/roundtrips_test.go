package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// What one chat costs in round trips to Redis and PostgreSQL, on a thread
// nobody else uses, with the statements prepared and the scripts loaded:
// a count, so that a change that adds a call per chat fails here whatever
// the machine's load (docs/BENCHMARKS.md, "Round trips per chat").
//
// Redis, read with MONITOR and counted by the commands that name the
// chat's thread (the PING rueidis sends after an UNSUBSCRIBE names none):
//   - one EVALSHA takes the thread, the lock behind a look at its queue,
//     before session_started;
//   - one PUBLISH mirrors the user's message, one the answer;
//   - one EVALSHA releases the lock (and would tell waiters, if any);
//   - the stop channel's SUBSCRIBE and UNSUBSCRIBE, on the pub/sub
//     connection, off the chat's path (at most one each: a chat that ends
//     before the subscription is made sends neither).
//
// PostgreSQL, read on the wire between the instance and the database:
// one batch loads the thread (three statements), one saves the turn (the
// thread's row, the messages, the checkpoints: three); each batch is one
// Sync, so one round trip.
func TestChatRoundTrips(t *testing.T) {
	singleRedisOnly(t)
	const chats = 5
	tap := newPGTap(t, servers.Postgres.NewDatabase(context.Background(), t))
	c := defaults(t)
	c.InstanceID = "roundtrips"
	useRedis(&c, redisURL())
	c.Store.DatabaseURL = tap.dsn
	c.Auth.APIKey = apiKey
	c.Conversation.LocalTokenDelay = 0
	in := start(t, c)
	cl := dialChat(t, in)
	const message = "Please explain how streaming answers work here."
	prefix := fmt.Sprintf("rt-%d-", time.Now().UnixNano())
	for i := range 2 { // warm: the statements prepared, the scripts loaded
		require.Empty(t, chat(t, cl, message, fmt.Sprintf("%swarm-%d", prefix, i)).errCode)
	}

	mon := monitor(t, redisURL())
	tap.reset()
	for i := range chats {
		require.Empty(t, chat(t, cl, message, fmt.Sprintf("%s%d", prefix, i)).errCode)
	}
	// The UNSUBSCRIBE of the last chat follows its end.
	eventually(t, "the last chat's stop channel unsubscribed", func() bool {
		return mon.count(prefix, fmt.Sprintf("{%s%d}", prefix, chats-1), "UNSUBSCRIBE") > 0 ||
			mon.count(prefix, fmt.Sprintf("{%s%d}", prefix, chats-1), "SUBSCRIBE") == 0
	})
	time.Sleep(100 * time.Millisecond) // anything late would show
	redis := mon.stop()
	pg := tap.counts()

	perKind := map[string]int{}
	total := 0
	for _, cmd := range redis {
		if strings.Contains(cmd.line, "{"+prefix) && !strings.Contains(cmd.line, "{"+prefix+"warm-") {
			perKind[cmd.name]++
			total++
		}
	}
	t.Logf("redis, %d chats: %d commands naming their threads: %v", chats, total, perKind)
	byType := map[string]int{}
	for k, v := range pg {
		byType[string(rune(k))] = v
	}
	t.Logf("postgres, %d chats: frontend messages by type: %v", chats, byType)
	assert.Equal(t, 2*chats, perKind["EVALSHA"], "one script takes the thread, one releases it")
	assert.Equal(t, 2*chats, perKind["PUBLISH"], "the user's message and the answer mirrored to the session")
	assert.LessOrEqual(t, perKind["SUBSCRIBE"], chats)
	assert.LessOrEqual(t, perKind["UNSUBSCRIBE"], chats)
	assert.LessOrEqual(t, total, 6*chats, "Redis commands per chat")
	for i := range chats {
		thread := fmt.Sprintf("{%s%d}", prefix, i)
		before := 0
		for _, cmd := range redis {
			if !strings.Contains(cmd.line, thread) {
				continue
			}
			if cmd.name == "PUBLISH" {
				break // the user's message, mirrored after session_started
			}
			if cmd.name == "EVALSHA" {
				before++
			}
		}
		assert.Equal(t, 1, before, "chat %d: scripts run before session_started", i)
	}
	assert.Equal(t, 2*chats, pg['S'], "PostgreSQL round trips (Syncs): the load's batch and the turn's")
	assert.Equal(t, 6*chats, pg['E'], "PostgreSQL statements: three to load, three to save")
	assert.Zero(t, pg['P'], "no statement prepared again")
}

// redisCommand is a line of MONITOR's: a command an instance sent.
type redisCommand struct {
	name string // upper case: EVALSHA, PUBLISH...
	line string
}

// monitorTap reads MONITOR on a connection of its own.
type monitorTap struct {
	conn net.Conn
	done chan struct{}

	mu    sync.Mutex
	lines []redisCommand
}

// monitor starts MONITOR on the Redis at rawURL; stop ends it.
func monitor(t *testing.T, rawURL string) *monitorTap {
	t.Helper()
	u, err := url.Parse(rawURL)
	require.NoError(t, err)
	conn, err := net.DialTimeout("tcp", u.Host, wait)
	require.NoError(t, err)
	r := bufio.NewReader(conn)
	_, err = conn.Write([]byte("MONITOR\r\n"))
	require.NoError(t, err)
	ok, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "+OK\r\n", ok)
	m := &monitorTap{conn: conn, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			// +1700000000.123456 [0 127.0.0.1:5000] "EVALSHA" "..." ...;
			// the commands a script runs come as [0 lua]: not round trips.
			_, rest, found := strings.Cut(line, "] \"")
			if !found || strings.Contains(line, " lua] ") {
				continue
			}
			name, _, _ := strings.Cut(rest, "\"")
			m.mu.Lock()
			m.lines = append(m.lines, redisCommand{name: strings.ToUpper(name), line: line})
			m.mu.Unlock()
		}
	}()
	t.Cleanup(func() { _ = conn.Close(); <-m.done })
	return m
}

// count counts the commands called name that name both a and b.
func (m *monitorTap) count(a, b, name string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, c := range m.lines {
		if c.name == name && strings.Contains(c.line, a) && strings.Contains(c.line, b) {
			n++
		}
	}
	return n
}

// stop ends MONITOR and returns what it saw, in order.
func (m *monitorTap) stop() []redisCommand {
	_ = m.conn.Close()
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lines
}

// pgTap forwards the connections of dsn through a local port, counting
// the messages each client sends by type (PostgreSQL's frontend protocol:
// 'P' Parse, 'B' Bind, 'E' Execute, 'S' Sync, 'Q' a simple query...).
type pgTap struct {
	dsn    string // the database through the tap
	target string

	mu   sync.Mutex
	seen map[byte]int
}

func newPGTap(t *testing.T, dsn string) *pgTap {
	t.Helper()
	u, err := url.Parse(dsn)
	require.NoError(t, err, "the tap needs a postgres:// DSN")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &pgTap{target: u.Host, seen: map[byte]int{}}
	u.Host = ln.Addr().String()
	p.dsn = u.String()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { p.forward(c) })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return p
}

func (p *pgTap) forward(client net.Conn) {
	defer client.Close()
	server, err := net.DialTimeout("tcp", p.target, wait)
	if err != nil {
		return
	}
	defer server.Close()
	go func() {
		_, _ = io.Copy(client, server)
		_ = client.Close()
	}()
	// What the client sends goes on to the server as it is read; the
	// reader only looks at it. The first messages have no type byte:
	// SSLRequest and GSSENCRequest (answered with one byte), then the
	// startup message.
	r := bufio.NewReader(io.TeeReader(client, server))
	var head [5]byte
	for started := false; !started; {
		if _, err := io.ReadFull(r, head[:4]); err != nil {
			return
		}
		body := make([]byte, binary.BigEndian.Uint32(head[:4])-4)
		if _, err := io.ReadFull(r, body); err != nil || len(body) < 4 {
			return
		}
		started = binary.BigEndian.Uint32(body[:4]) == 196608 // protocol 3.0
	}
	for {
		if _, err := io.ReadFull(r, head[:]); err != nil {
			return
		}
		if _, err := r.Discard(int(binary.BigEndian.Uint32(head[1:])) - 4); err != nil {
			return
		}
		p.mu.Lock()
		p.seen[head[0]]++
		p.mu.Unlock()
	}
}

func (p *pgTap) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.seen)
}

// counts returns the messages seen since reset by type, as characters.
func (p *pgTap) counts() map[byte]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[byte]int, len(p.seen))
	for k, v := range p.seen {
		out[k] = v
	}
	return out
}
