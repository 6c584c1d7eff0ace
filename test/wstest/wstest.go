// Package wstest is the WebSocket client of the end-to-end tests
// (test/e2e, test/fullstack): one connection whose reader keeps every
// message, so that a test reads them in order, at its own pace.
//
// Every text frame a Client of /ws/chat/ or /ws/session/<id>/ receives is
// validated against the schema docs/asyncapi.yaml gives its type on that
// endpoint (test/schema); a frame that does not match fails the test that
// opened the Client, so the document cannot drift from what the server
// sends.
package wstest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	neturl "net/url"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/test/schema"
)

// buffered is how many messages a Client keeps unread before its reader
// waits: more than any test sends one socket.
const buffered = 4096

// Client is one WebSocket connection and its reader. Its methods take the
// test that uses it, which may be a subtest of the one that opened it.
type Client struct {
	Conn *websocket.Conn
	// Msgs are the messages read, JSON-decoded; a frame that is not JSON
	// is kept as {"raw": text}.
	Msgs <-chan map[string]any
	// Done is closed when the connection has ended.
	Done <-chan struct{}

	msgs chan map[string]any
	done chan struct{}
	wait time.Duration
	err  error // how the connection ended; read after done is closed

	// proto and ep validate what the reader receives; proto is nil on a
	// path that is neither endpoint.
	proto *schema.Protocol
	ep    schema.Endpoint

	mu       sync.Mutex
	bad      []string // frames that did not match the schema
	reported int      // how many of bad the test was told of
}

// Dial opens url with header; every wait of the Client (the handshake, a
// message, the close) gives up after wait. The connection is closed when
// t ends.
func Dial(t testing.TB, url string, header http.Header, wait time.Duration) *Client {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: wait}
	conn, resp, err := d.Dial(url, header)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	require.NoError(t, err, "dial %s", url)
	c := &Client{Conn: conn, msgs: make(chan map[string]any, buffered), done: make(chan struct{}), wait: wait}
	c.Msgs, c.Done = c.msgs, c.done
	if u, err := neturl.Parse(url); err == nil {
		if ep, ok := schema.EndpointOf(u.Path); ok {
			proto, err := schema.AsyncAPI()
			require.NoError(t, err, "docs/asyncapi.yaml")
			c.proto, c.ep = proto, ep
		}
	}
	go c.read()
	t.Cleanup(func() { _ = conn.Close() })
	t.Cleanup(func() { c.report(t) })
	return c
}

// report fails t with every frame that did not match its schema and that
// t was not told of yet.
func (c *Client) report(t reporter) {
	t.Helper()
	c.mu.Lock()
	bad := c.bad[c.reported:]
	c.reported = len(c.bad)
	c.mu.Unlock()
	for _, b := range bad {
		t.Errorf("wstest: the server sent a message docs/asyncapi.yaml does not allow: %s", b)
	}
}

// reporter is the part of testing.TB that report needs.
type reporter interface {
	Helper()
	Errorf(format string, args ...any)
}

// check validates one received frame; a mismatch is kept for report.
func (c *Client) check(p []byte) {
	if c.proto == nil {
		return
	}
	if err := c.proto.Validate(c.ep, p); err != nil {
		c.mu.Lock()
		c.bad = append(c.bad, fmt.Sprintf("%.300s: %v", p, err))
		c.mu.Unlock()
	}
}

func (c *Client) read() {
	defer close(c.done)
	for {
		typ, p, err := c.Conn.ReadMessage()
		if err != nil {
			c.err = err
			return
		}
		if typ == websocket.TextMessage {
			c.check(p)
		} else {
			c.mu.Lock()
			c.bad = append(c.bad, fmt.Sprintf("a frame of opcode %d: the server sends text frames only", typ))
			c.mu.Unlock()
		}
		var m map[string]any
		if json.Unmarshal(p, &m) != nil {
			m = map[string]any{"raw": string(p)}
		}
		c.msgs <- m
	}
}

// Send writes msg as a text frame.
func (c *Client) Send(t testing.TB, msg string) {
	t.Helper()
	require.NoError(t, c.Conn.WriteMessage(websocket.TextMessage, []byte(msg)))
}

// Next returns the next message; the test fails when none comes, or the
// connection ends first.
func (c *Client) Next(t testing.TB) map[string]any {
	t.Helper()
	defer c.report(t)
	select {
	case m := <-c.msgs:
		return m
	case <-c.done:
		select {
		case m := <-c.msgs:
			return m
		default:
		}
		t.Fatalf("the connection ended (%v) before the next message", c.err)
	case <-time.After(c.wait):
		t.Fatal("no message came")
	}
	return nil
}

// NextOf skips messages until one of type typ.
func (c *Client) NextOf(t testing.TB, typ string) map[string]any {
	t.Helper()
	for {
		if m := c.Next(t); m["type"] == typ {
			return m
		}
	}
}

// Closed waits for the connection to end and returns its close code, or
// -1 when it ended without a close frame.
func (c *Client) Closed(t testing.TB) int {
	t.Helper()
	defer c.report(t)
	select {
	case <-c.done:
	case <-time.After(c.wait):
		t.Fatal("the connection was not closed")
	}
	var ce *websocket.CloseError
	if errors.As(c.err, &ce) {
		return ce.Code
	}
	return -1
}
