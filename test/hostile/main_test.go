// Package hostile runs wsserver against clients that mean it harm: more
// sockets than it admits, readers that never read, handshakes that never
// end, a ping flood, and random and broken frames. Each test asserts that
// the server refuses what it must, counts each refusal in /metrics, stays
// within its bounds, and keeps serving the well-behaved clients beside the
// hostile ones. None needs Docker: the servers run in-process on the
// in-process stores, or as the built binary (the ping flood, which
// measures the process's memory).
package hostile

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/wsserver/wsserver/adapters/config"
	"github.com/wsserver/wsserver/cmd/wsserver/app"
	"github.com/wsserver/wsserver/test/wstest"
)

// TestMain fails the package when a goroutine outlives its tests: every
// server stopped, every hostile socket gone, nothing left behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// wait bounds every wait of these tests. A passing run never comes close.
const wait = 30 * time.Second

// server is one in-process wsserver instance.
type server struct {
	addr string
	logs *logScan
}

// start runs a server on the development defaults (DJANGO_DEBUG=1: no API
// key, the in-process stores) changed by edit, until the test ends. The
// server logs at debug level into a logScan, so that a panic anywhere,
// net/http's recovered ones included, is seen.
func start(t *testing.T, edit func(*config.Config)) *server {
	t.Helper()
	t.Setenv("DJANGO_DEBUG", "1")
	cfg, err := config.Load("")
	require.NoError(t, err)
	cfg.InstanceID = "hostile"
	if edit != nil {
		edit(&cfg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	logs := &logScan{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	go func() { result <- app.Run(ctx, cfg, log, ln) }()
	s := &server{addr: ln.Addr().String(), logs: logs}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-result:
			if err != nil {
				t.Errorf("the server stopped with %v", err)
			}
		case <-time.After(wait):
			t.Error("the server did not stop")
		}
		s.noPanic(t)
	})
	eventually(t, "the server answers /health/", func() bool { return s.status(t, "/health/") == http.StatusOK })
	return s
}

// noPanic fails the test when the server logged a panic.
func (s *server) noPanic(t *testing.T) {
	t.Helper()
	if p := s.logs.panics(); len(p) > 0 {
		t.Errorf("the server logged %d panics; the first:\n%s", len(p), p[0])
	}
}

// ws returns the WebSocket URL of path.
func (s *server) ws(path string) string { return "ws://" + s.addr + path }

// status GETs path and returns the status code.
func (s *server) status(t *testing.T, path string) int {
	t.Helper()
	resp, err := httpClient.Get("http://" + s.addr + path)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// httpClient keeps no idle connections, so that the tests' own requests
// are never counted as sockets the server holds.
var httpClient = &http.Client{Timeout: wait, Transport: &http.Transport{DisableKeepAlives: true}}

// metric returns the sample of /metrics named name (labels included, as
// the text format writes them: `x_total{reason="max_connections"}`), or 0
// when there is none yet.
func (s *server) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := httpClient.Get("http://" + s.addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		sample, value, ok := strings.Cut(sc.Text(), " ")
		if ok && sample == name {
			v, err := strconv.ParseFloat(value, 64)
			require.NoError(t, err, sc.Text())
			return v
		}
	}
	require.NoError(t, sc.Err())
	return 0
}

// join opens a session socket and says hello.
func (s *server) join(t *testing.T, session, userType string) *wstest.Client {
	t.Helper()
	c := wstest.Dial(t, s.ws("/ws/session/"+session+"/"), nil, wait)
	c.Send(t, fmt.Sprintf(`{"type":"hello","user_type":%q,"client_type":"web"}`, userType))
	ok := c.Next(t)
	require.Equal(t, "hello_ok", ok["type"], "%v", ok)
	return c
}

// chat sends one chat message on c and reads the answer to its end; it
// returns the text of the tokens, and the code of an error event instead.
func chat(t *testing.T, c *wstest.Client, message string) (text, errCode string) {
	t.Helper()
	raw, err := json.Marshal(map[string]any{"type": "chat", "message": message, "channel": "web", "data": []any{}})
	require.NoError(t, err)
	c.Send(t, string(raw))
	for {
		ev := c.Next(t)
		switch ev["type"] {
		case "token":
			text += ev["content"].(string)
		case "end":
			return text, ""
		case "error":
			return text, fmt.Sprint(ev["code"])
		}
	}
}

// eventually retries try until it reports true, at most wait long.
func eventually(t *testing.T, what string, try func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !try() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logScan is the server's log as far as these tests care: the lines that
// tell of a panic, kept whole, and how many lines there were. The rest is
// dropped, so that a long fuzz run does not hold its whole log.
type logScan struct {
	mu      sync.Mutex
	partial []byte
	lines   int
	panicky []string
}

func (l *logScan) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(l.partial[:i])
		l.partial = l.partial[i+1:]
		l.lines++
		if strings.Contains(strings.ToLower(line), "panic") {
			l.panicky = append(l.panicky, line)
		}
	}
}

func (l *logScan) panics() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.panicky...)
}
