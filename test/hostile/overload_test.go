package hostile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/config"
	"github.com/wsserver/wsserver/test/wstest"
)

// goroutinesBack waits until the process runs no more goroutines than it
// did at baseline: every socket the test opened has left nothing behind.
func goroutinesBack(t *testing.T, baseline int) {
	t.Helper()
	var now int
	deadline := time.Now().Add(wait)
	for now = runtime.NumGoroutine(); now > baseline; now = runtime.NumGoroutine() {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d at baseline:\n%s", now, baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("goroutines: %d, %d at baseline", now, baseline)
}

func TestMoreSocketsThanMaxConnections(t *testing.T) {
	const limit, extra = 8, 5
	s := start(t, func(c *config.Config) { c.HTTP.MaxConnections = limit })
	baseline := runtime.NumGoroutine()
	refused := `wsserver_upgrades_refused_total{reason="max_connections"}`

	var admitted []*wstest.Client
	for i := range limit {
		admitted = append(admitted, s.join(t, "full", fmt.Sprintf("agent%d", i)))
	}
	require.InDelta(t, limit, s.metric(t, `wsserver_sockets_open{endpoint="session"}`), 0)

	// Each socket past the limit, on either endpoint, is refused before
	// the upgrade with 503 max_connections, and counted.
	for i := range extra {
		path := "/ws/session/full/"
		if i%2 == 1 {
			path = "/ws/chat/"
		}
		conn, resp, err := websocket.DefaultDialer.Dial(s.ws(path), nil)
		if conn != nil {
			_ = conn.Close()
		}
		require.ErrorIs(t, err, websocket.ErrBadHandshake, path)
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, path)
		assert.Contains(t, string(body), `"max_connections"`, path)
	}
	assert.InDelta(t, extra, s.metric(t, refused), 0)

	// The admitted sockets are served as before.
	admitted[0].Send(t, `{"type":"broadcast","msg":"still here"}`)
	for _, c := range admitted {
		assert.Equal(t, "still here", c.NextOf(t, "session_message")["msg"])
	}

	// A socket that leaves frees its place.
	require.NoError(t, admitted[0].Conn.Close())
	eventually(t, "a place is free again", func() bool {
		conn, resp, err := websocket.DefaultDialer.Dial(s.ws("/ws/session/full/"), nil)
		if resp != nil && resp.Body != nil {
			_ = resp.Body.Close()
		}
		if err != nil {
			return false
		}
		_ = conn.Close()
		return true
	})

	// Everyone leaves: nothing is held.
	for _, c := range admitted {
		_ = c.Conn.Close()
	}
	eventually(t, "no socket is open", func() bool {
		return s.metric(t, `wsserver_sockets_open{endpoint="session"}`) == 0
	})
	goroutinesBack(t, baseline)
}

// dialNonReader opens a session socket whose kernel receive buffer is
// small, says hello, reads hello_ok, and then reads nothing: the server's
// frames pile up in its send queue.
func dialNonReader(t *testing.T, s *server, session string) *websocket.Conn {
	t.Helper()
	small := func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return errors.Join(err, serr)
	}
	d := websocket.Dialer{
		HandshakeTimeout: wait,
		NetDialContext:   (&net.Dialer{Control: small}).DialContext,
	}
	conn, resp, err := d.Dial(s.ws("/ws/session/"+session+"/"), nil)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	require.NoError(t, conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"hello","user_type":"agent","client_type":"web"}`)))
	var ok map[string]any
	require.NoError(t, conn.ReadJSON(&ok))
	require.Equal(t, "hello_ok", ok["type"])
	return conn
}

func TestSlowReaderIsDroppedAndTheOthersGetEveryMessage(t *testing.T) {
	const queue = 8
	s := start(t, func(c *config.Config) {
		c.WebSocket.SendQueueSize = queue
		c.WebSocket.RateLimitPerSec = 100000 // the sender is fast on purpose
		c.WebSocket.RateLimitBurst = 100000
	})
	baseline := runtime.NumGoroutine()
	slowMetric := `wsserver_slow_consumer_disconnects_total{endpoint="session"}`

	sender := s.join(t, "slow", "admin")
	readers := []*wstest.Client{sender}
	for i := range 3 {
		readers = append(readers, s.join(t, "slow", fmt.Sprintf("reader%d", i)))
	}
	slow := dialNonReader(t, s, "slow")
	// Another session's slow reader must not matter to this one either.
	elsewhere := s.join(t, "slow-elsewhere", "admin")
	idle := dialNonReader(t, s, "slow-elsewhere")

	// The sender sends one message at a time and waits until every
	// reader has it: a well-behaved reader never has more than one frame
	// queued, far below the bound, whatever the machine's speed. The
	// non-reader's frames fill its kernel buffers, then its queue.
	pad := strings.Repeat("x", 16<<10)
	sent := 0
	send := func() {
		t.Helper()
		sender.Send(t, fmt.Sprintf(`{"type":"broadcast","msg":"%d","data":{"pad":%q}}`, sent, pad))
		for _, r := range readers {
			m := r.NextOf(t, "session_message")
			require.Equal(t, fmt.Sprint(sent), m["msg"], "a reader missed or reordered a message")
		}
		sent++
	}
	for s.metric(t, slowMetric) == 0 {
		require.Less(t, sent, 8000, "8000 messages of 16 KiB never filled the non-reader's queue")
		for range 10 {
			send()
		}
	}
	dropped := sent

	// The non-reader, reading at last, finds the messages up to its drop,
	// in order, then the close 1008. It reads from now on, while the others
	// go on: the server waits for its close frame to be read only for its
	// write timeout, which the 100 broadcasts below may outlast on a busy
	// machine.
	type slowResult struct {
		got      int
		closeErr *websocket.CloseError
		err      error
	}
	slowDone := make(chan slowResult, 1)
	go func() {
		var r slowResult
		defer func() { slowDone <- r }()
		if r.err = slow.SetReadDeadline(time.Now().Add(wait)); r.err != nil {
			return
		}
		for {
			_, p, err := slow.ReadMessage()
			if err != nil {
				if !errors.As(err, &r.closeErr) {
					r.err = fmt.Errorf("the non-reader's connection ended without a close frame: %w", err)
				}
				return
			}
			var m map[string]any
			if err := json.Unmarshal(p, &m); err != nil {
				r.err = err
				return
			}
			if m["msg"] != fmt.Sprint(r.got) {
				r.err = fmt.Errorf("the non-reader got message %v where %d was due", m["msg"], r.got)
				return
			}
			r.got++
		}
	}()

	for range 100 {
		send()
	}
	t.Logf("the non-reader was dropped after at most %d messages; %d sent to %d readers, none missed", dropped, sent, len(readers))
	assert.InDelta(t, 1, s.metric(t, slowMetric), 0)

	r := <-slowDone
	require.NoError(t, r.err)
	got := r.got
	assert.Equal(t, websocket.ClosePolicyViolation, r.closeErr.Code)
	assert.Less(t, got, dropped)
	t.Logf("the non-reader had %d messages before its close 1008", got)
	eventually(t, "the non-reader is gone; the readers and the other session's two sockets remain", func() bool {
		return s.metric(t, `wsserver_sockets_open{endpoint="session"}`) == float64(len(readers)+2)
	})

	// The other session still works, and nothing is left once all leave.
	elsewhere.Send(t, `{"type":"broadcast","msg":"after"}`)
	assert.Equal(t, "after", elsewhere.NextOf(t, "session_message")["msg"])
	for _, r := range append(readers, elsewhere) {
		_ = r.Conn.Close()
	}
	_ = idle.Close()
	eventually(t, "no socket is open", func() bool {
		return s.metric(t, `wsserver_sockets_open{endpoint="session"}`) == 0
	})
	goroutinesBack(t, baseline)
}

func TestHandshakeThatNeverEndsIsClosedAndCounted(t *testing.T) {
	// Room for the two well-behaved sockets only: the slow clients, which
	// never reach the upgrade, must not take a place.
	s := start(t, func(c *config.Config) { c.HTTP.MaxConnections = 2 })
	baseline := runtime.NumGoroutine()
	unserved := "wsserver_http_connections_unserved_total"

	// Slow clients: some send nothing, some half a request line, some
	// headers that trickle in a byte a second and never end.
	const each = 10
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var wg sync.WaitGroup
	ended := make(chan error, 3*each)
	for i := range 3 * each {
		c, err := net.Dial("tcp", s.addr)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		var start string
		switch i % 3 {
		case 1:
			start = "GET /ws/session/loris/ HT"
		case 2:
			start = "GET /ws/session/loris/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
		}
		if start != "" {
			_, err = io.WriteString(c, start)
			require.NoError(t, err)
		}
		if i%3 == 2 {
			wg.Go(func() { trickle(ctx, c) })
		}
		go func() {
			_ = c.SetReadDeadline(time.Now().Add(wait))
			_, err := io.Copy(io.Discard, c) // returns when the server closes
			ended <- err
		}()
	}

	// Meanwhile the server serves the others.
	a, b := s.join(t, "beside-loris", "admin"), s.join(t, "beside-loris", "agent")
	for i := range 20 {
		a.Send(t, fmt.Sprintf(`{"type":"broadcast","msg":"%d"}`, i))
		for _, c := range []*wstest.Client{a, b} {
			assert.Equal(t, fmt.Sprint(i), c.NextOf(t, "session_message")["msg"])
		}
	}
	assert.Equal(t, http.StatusOK, s.status(t, "/health/"))

	// The server closes each slow client by its header timeout; the test
	// waits for that (10 s in app.Run), however long it takes, up to wait.
	for range 3 * each {
		var ne net.Error
		if err := <-ended; errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the server kept a client that never finished its request")
		}
	}
	cancel()
	wg.Wait()
	// The client sees the close before the server's connection-state hook
	// has counted it: wait for the count, which must then be exact.
	eventually(t, fmt.Sprintf("%s reaches %d", unserved, 3*each), func() bool {
		return s.metric(t, unserved) >= 3*each
	})
	assert.InDelta(t, 3*each, s.metric(t, unserved), 0)

	_ = a.Conn.Close()
	_ = b.Conn.Close()
	eventually(t, "only the scrape's own connection is held", func() bool {
		return s.metric(t, "wsserver_http_connections") == 1
	})
	goroutinesBack(t, baseline)
}

// trickle writes a header byte a second until ctx ends or the server
// closes c.
func trickle(ctx context.Context, c net.Conn) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if _, err := io.WriteString(c, "X"); err != nil {
				return
			}
		}
	}
}

func TestMessagesOverTheRateLimitAreRefusedAndCounted(t *testing.T) {
	const burst, sent = 5, 40
	s := start(t, func(c *config.Config) {
		c.WebSocket.RateLimitPerSec = 0.001 // no token comes back during the test
		c.WebSocket.RateLimitBurst = burst
	})

	// replies reads n answers on c and counts those of type typ and the
	// rate_limited errors; it fails on anything else.
	replies := func(c *wstest.Client, n int, typ string) (answered, limited int) {
		t.Helper()
		for range n {
			m := c.Next(t)
			switch {
			case m["type"] == typ:
				answered++
			case m["type"] == "error" && m["code"] == "rate_limited":
				limited++
			default:
				t.Fatalf("unexpected %v", m)
			}
		}
		return answered, limited
	}

	t.Run("session", func(t *testing.T) {
		flood, other := s.join(t, "limited", "admin"), s.join(t, "limited", "agent")
		for i := range sent {
			flood.Send(t, fmt.Sprintf(`{"type":"broadcast","msg":"%d"}`, i))
		}
		accepted, limited := replies(flood, sent, "session_message")
		assert.Equal(t, sent, accepted+limited)
		assert.LessOrEqual(t, accepted, burst, "more got through than the burst")
		assert.InDelta(t, limited, s.metric(t, `wsserver_messages_rate_limited_total{endpoint="session"}`), 0)

		// The other member got exactly what was accepted, and is not
		// limited by its neighbour's flood.
		other.Send(t, `{"type":"broadcast","msg":"end"}`)
		got := 0
		for other.NextOf(t, "session_message")["msg"] != "end" {
			got++
		}
		assert.Equal(t, accepted, got)
	})

	t.Run("chat", func(t *testing.T) {
		flood := dialChat(t, s)
		for range sent {
			flood.Send(t, `{"type":"ping"}`)
		}
		_, limited := replies(flood, sent, "pong")
		assert.GreaterOrEqual(t, limited, sent-burst)
		assert.InDelta(t, limited, s.metric(t, `wsserver_messages_rate_limited_total{endpoint="chat"}`), 0)
	})
}
