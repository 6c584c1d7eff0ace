package metrics_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/metrics"
)

// wait bounds every wait; a passing run never comes close.
const wait = 20 * time.Second

// scrape returns the value of the sample named name (with its labels, as
// the text format writes them), or 0 when there is none.
func scrape(t *testing.T, m *metrics.Metrics, name string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for line := range strings.Lines(rec.Body.String()) {
		sample, value, ok := strings.Cut(strings.TrimSpace(line), " ")
		if ok && sample == name {
			v, err := strconv.ParseFloat(value, 64)
			require.NoError(t, err, line)
			return v
		}
	}
	return 0
}

// eventually retries try until it reports true, at most wait long.
func eventually(t *testing.T, what string, try func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !try() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWatchConnsCountsConnectionsThatNeverSentARequest(t *testing.T) {
	m := metrics.New()
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/hijack" {
				c, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					_ = c.Close()
				}
				return
			}
			_, _ = io.WriteString(w, "ok")
		}),
		ReadHeaderTimeout: 200 * time.Millisecond, // the slow clients below end by it
	}
	m.WatchConns(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	addr := ln.Addr().String()

	// ended opens a connection, writes req, and waits for the server to
	// end it; it returns what the server answered.
	ended := func(req string, closeFirst bool) string {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer c.Close()
		if req != "" {
			_, err = io.WriteString(c, req)
			require.NoError(t, err)
		}
		if closeFirst {
			return ""
		}
		require.NoError(t, c.SetReadDeadline(time.Now().Add(wait)))
		got, err := io.ReadAll(bufio.NewReader(c))
		require.NoError(t, err, "the server did not end the connection")
		return string(got)
	}

	tests := []struct {
		name       string
		req        string
		closeFirst bool
		unserved   float64 // added to the counter
		answer     string  // a prefix of the server's answer
	}{
		{name: "nothing sent, header timeout", unserved: 1},
		{name: "half a request line, header timeout", req: "GET /slow HT", unserved: 1},
		{name: "headers never end, header timeout", req: "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n", unserved: 1},
		{name: "garbage", req: "\x16\x03\x01garbage\r\n\r\n", unserved: 1, answer: "HTTP/1.1 400"},
		{name: "client leaves at once", closeFirst: true, unserved: 1},
		{name: "whole request", req: "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", answer: "HTTP/1.1 200"},
		{name: "whole request, hijacked", req: "GET /hijack HTTP/1.1\r\nHost: x\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := scrape(t, m, "wsserver_http_connections_unserved_total")
			got := ended(tt.req, tt.closeFirst)
			assert.True(t, strings.HasPrefix(got, tt.answer), "answer %q", got)
			eventually(t, "the connection is no longer counted open", func() bool {
				return scrape(t, m, "wsserver_http_connections") == 0
			})
			assert.InDelta(t, before+tt.unserved, scrape(t, m, "wsserver_http_connections_unserved_total"), 0)
		})
	}
}

func TestWatchConnsCountsOpenConnections(t *testing.T) {
	m := metrics.New()
	srv := &http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: wait}
	m.WatchConns(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		conns = append(conns, c)
	}
	eventually(t, "three open", func() bool { return scrape(t, m, "wsserver_http_connections") == 3 })
	for _, c := range conns {
		require.NoError(t, c.Close())
	}
	eventually(t, "none open", func() bool { return scrape(t, m, "wsserver_http_connections") == 0 })
	assert.InDelta(t, 3, scrape(t, m, "wsserver_http_connections_unserved_total"), 0)
}
