package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/local"
	"github.com/wsserver/wsserver/adapters/memory"
	"github.com/wsserver/wsserver/adapters/metrics"
	"github.com/wsserver/wsserver/adapters/socket"
	"github.com/wsserver/wsserver/adapters/web"
	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/core/session"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/test/schema"
)

// newChatOn builds the conversation service for a config being made.
func newChatOn(c *web.Config, tokenDelay time.Duration) *conversation.Conversation {
	return newChat(nil, c.Hub, tokenDelay)
}

// newChat builds the conversation service on the in-process adapters and
// the local model, mirroring chat events to hub.
func newChat(_ *testing.T, hub *session.Hub, tokenDelay time.Duration) *conversation.Conversation {
	appdata, err := local.LoadAppdata("")
	must(err)
	model, err := local.NewModel(local.ModelConfig{TokenDelay: tokenDelay})
	must(err)
	guard, err := local.NewGuardrail(local.GuardrailConfig{Rules: appdata.Guardrail})
	must(err)
	esc, err := local.NewEscalation(appdata.Escalation)
	must(err)
	chat, err := conversation.New(conversation.Config{
		Store: memory.NewThreads(0), Lock: memory.NewLock(), Model: model, Guardrail: guard, Escalation: esc,
		Publisher: mirror{hub}, SystemPrompt: appdata.SystemPrompt, MaxGuardrailRewrites: 2,
	})
	must(err)
	return chat
}

// must stops a test set-up that cannot go on; the embedded appdata and
// in-process adapters fail only when the code is broken.
func must(err error) {
	if err != nil {
		panic(err)
	}
}

type mirror struct{ hub *session.Hub }

func (m mirror) PublishChat(ctx context.Context, threadID string, ev ports.ChatEvent) error {
	return m.hub.Publish(ctx, threadID, conversation.EncodeChatEvent(threadID, ev))
}

// wait bounds every wait; a passing run never comes near it.
const wait = 10 * time.Second

type fixture struct {
	srv  *web.Server
	http *httptest.Server
	url  string // ws://host
}

func newFixture(t *testing.T, change func(*web.Config)) *fixture {
	t.Helper()
	m := metrics.New()
	hub, err := session.NewHub(session.HubConfig{
		Broker: memory.NewBroker(), Presence: memory.NewPresence(), Encode: socket.Frame, Observer: m,
	})
	require.NoError(t, err)
	cfg := web.Config{
		InstanceID:    "test-1",
		Chat:          newChat(t, hub, 0),
		CSRFSecret:    "test-csrf-secret-of-enough-length-0123456789",
		HostAllowed:   func(h string) bool { return strings.HasPrefix(h, "127.0.0.1") },
		OriginAllowed: func(o string) bool { return o == "http://good.example" },
		Hub:           hub,
		Metrics:       m,
		Sockets:       socket.Config{ReadLimit: 4096, CloseWait: time.Second},
	}
	if change != nil {
		change(&cfg)
	}
	srv, err := web.New(cfg)
	require.NoError(t, err)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return &fixture{srv: srv, http: hs, url: "ws" + strings.TrimPrefix(hs.URL, "http")}
}

func (f *fixture) dial(t *testing.T, path string, h http.Header) (*websocket.Conn, error) {
	t.Helper()
	c, resp, err := f.dialResp(t, path, h)
	if resp != nil {
		resp.Body.Close()
	}
	return c, err
}

// refused dials a socket the server must refuse and returns the refusal's
// status and error code.
func (f *fixture) refused(t *testing.T, path string, h http.Header) (int, string) {
	t.Helper()
	_, resp, err := f.dialResp(t, path, h)
	require.Error(t, err)
	return errorBody(t, resp)
}

func (f *fixture) dialResp(t *testing.T, path string, h http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: wait}
	c, resp, err := d.Dial(f.url+path, h)
	if c != nil {
		if ep, ok := schema.EndpointOf(path); ok {
			endpoints.Store(c, ep)
		}
		t.Cleanup(func() { endpoints.Delete(c); c.Close() })
	}
	return c, resp, err
}

// endpoints maps every socket a fixture dialed to its endpoint, so that
// readFrame knows which messages of docs/asyncapi.yaml a frame may be.
var endpoints sync.Map // *websocket.Conn -> schema.Endpoint

// readFrame reads the next message of c. Every text frame the server sends
// on /ws/chat/ or /ws/session/<id>/ is validated against the schema
// docs/asyncapi.yaml gives its type on that endpoint: a message shape the
// document does not allow fails the test here, as it does end to end
// (test/wstest).
func readFrame(t *testing.T, c *websocket.Conn) ([]byte, error) {
	t.Helper()
	typ, p, err := c.ReadMessage()
	if err != nil || typ != websocket.TextMessage {
		return p, err
	}
	if ep, ok := endpoints.Load(c); ok {
		proto, perr := schema.AsyncAPI()
		require.NoError(t, perr, "docs/asyncapi.yaml")
		if verr := proto.Validate(ep.(schema.Endpoint), p); verr != nil {
			t.Errorf("the server sent a message docs/asyncapi.yaml does not allow: %.300s: %v", p, verr)
		}
	}
	return p, nil
}

// join opens a session socket and says hello.
func (f *fixture) join(t *testing.T, sessionID, userType string) *websocket.Conn {
	t.Helper()
	c, err := f.dial(t, "/ws/session/"+sessionID+"/", nil)
	require.NoError(t, err)
	send(t, c, fmt.Sprintf(`{"type":"hello","user_type":%q,"client_type":"web"}`, userType))
	assert.Equal(t, "hello_ok", recv(t, c)["type"])
	return c
}

func send(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	require.NoError(t, c.WriteMessage(websocket.TextMessage, []byte(msg)))
}

func recv(t *testing.T, c *websocket.Conn) map[string]any {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(wait)))
	p, err := readFrame(t, c)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(p, &m), "%s", p)
	return m
}

// closeCode reads until the server closes and returns its close code.
func closeCode(t *testing.T, c *websocket.Conn) int {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(wait)))
	for {
		_, err := readFrame(t, c)
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		require.ErrorAs(t, err, &ce)
		return ce.Code
	}
}

func errorBody(t *testing.T, resp *http.Response) (int, string) {
	t.Helper()
	require.NotNil(t, resp)
	defer resp.Body.Close()
	var b struct {
		Error struct{ Code, Message string }
	}
	raw, _ := io.ReadAll(resp.Body)
	require.NoError(t, json.Unmarshal(raw, &b), "%s", raw)
	assert.NotEmpty(t, b.Error.Message)
	return resp.StatusCode, b.Error.Code
}

func TestRefusedUpgrades(t *testing.T) {
	tests := []struct {
		name   string
		change func(*web.Config)
		path   string
		header http.Header
		status int
		code   string
	}{
		{"no key", func(c *web.Config) { c.APIKey = "k3y" }, "/ws/session/s/", nil, 401, "unauthorized"},
		{"wrong key", func(c *web.Config) { c.APIKey = "k3y" }, "/ws/session/s/?authorization=nope", nil, 401, "unauthorized"},
		{"wrong bearer", func(c *web.Config) { c.APIKey = "k3y" }, "/ws/session/s/", http.Header{"Authorization": {"Bearer nope"}}, 401, "unauthorized"},
		{"wrong lowercase bearer", func(c *web.Config) { c.APIKey = "k3y" }, "/ws/session/s/", http.Header{"Authorization": {"bearer nope"}}, 401, "unauthorized"},
		{"bearer glued to the key", func(c *web.Config) { c.APIKey = "k3y" }, "/ws/session/s/", http.Header{"Authorization": {"Bearerk3y"}}, 401, "unauthorized"},
		{"scheme only", func(c *web.Config) { c.APIKey = "k3y" }, "/ws/session/s/", http.Header{"Authorization": {"Bearer "}}, 401, "unauthorized"},
		{"bad origin", nil, "/ws/session/s/", http.Header{"Origin": {"http://evil.example"}}, 403, "forbidden_origin"},
		{"bad session id", nil, "/ws/session/a%20b/", nil, 400, "invalid_session_id"},
		{"long session id", nil, "/ws/session/" + strings.Repeat("x", 129) + "/", nil, 400, "invalid_session_id"},
		{"bad host", nil, "/ws/session/s/", http.Header{"Host": {"evil.example"}}, 400, "bad_host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.change)
			h := tt.header
			if host := h.Get("Host"); host != "" {
				// The dialer takes the Host from the URL; send it raw instead.
				req, err := http.NewRequest("GET", f.http.URL+tt.path, nil)
				require.NoError(t, err)
				req.Host = host
				resp, err := http.DefaultClient.Do(req)
				require.NoError(t, err)
				status, code := errorBody(t, resp)
				assert.Equal(t, tt.status, status)
				assert.Equal(t, tt.code, code)
				return
			}
			status, code := f.refused(t, tt.path, h)
			assert.Equal(t, tt.status, status)
			assert.Equal(t, tt.code, code)
		})
	}
}

func TestAcceptedKeys(t *testing.T) {
	for _, tc := range []struct {
		name   string
		path   string
		header http.Header
	}{
		{"query", "/ws/session/s/?authorization=k3y", nil},
		{"bare header", "/ws/session/s/", http.Header{"Authorization": {"k3y"}}},
		{"bearer header", "/ws/session/s/", http.Header{"Authorization": {"Bearer k3y"}}},
		// The scheme is case-insensitive (RFC 7235 §2.1), and one or more
		// spaces may follow it.
		{"lowercase bearer", "/ws/session/s/", http.Header{"Authorization": {"bearer k3y"}}},
		{"uppercase bearer", "/ws/session/s/", http.Header{"Authorization": {"BEARER k3y"}}},
		{"mixed case bearer, two spaces", "/ws/session/s/", http.Header{"Authorization": {"BeArEr  k3y"}}},
		{"bearer in the query", "/ws/session/s/?authorization=bearer%20k3y", nil},
		{"good origin", "/ws/session/s/?authorization=k3y", http.Header{"Origin": {"http://good.example"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(c *web.Config) { c.APIKey = "k3y" })
			_, err := f.dial(t, tc.path, tc.header)
			require.NoError(t, err)
		})
	}
}

func TestMaxConnections(t *testing.T) {
	f := newFixture(t, func(c *web.Config) { c.MaxConnections = 2 })
	f.join(t, "s", "a")
	f.join(t, "s", "b")
	status, code := f.refused(t, "/ws/session/s/", nil)
	assert.Equal(t, 503, status)
	assert.Equal(t, "max_connections", code)
}

func TestHello(t *testing.T) {
	tests := []struct {
		name  string
		first string
		code  string
	}{
		{"another first message", `{"type":"presence"}`, "hello_required"},
		{"a broadcast first", `{"type":"broadcast","msg":"x"}`, "hello_required"},
		{"hello without user_type", `{"type":"hello","client_type":"web"}`, "invalid_message"},
		{"not JSON", `hi`, "invalid_json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, nil)
			c, err := f.dial(t, "/ws/session/s/", nil)
			require.NoError(t, err)
			send(t, c, tt.first)
			m := recv(t, c)
			assert.Equal(t, "error", m["type"])
			assert.Equal(t, tt.code, m["code"])
			assert.Equal(t, websocket.ClosePolicyViolation, closeCode(t, c))
		})
	}
}

func TestHelloTimeout(t *testing.T) {
	f := newFixture(t, func(c *web.Config) { c.HelloTimeout = 50 * time.Millisecond })
	c, err := f.dial(t, "/ws/session/s/", nil)
	require.NoError(t, err)
	assert.Equal(t, "hello_required", recv(t, c)["code"])
	assert.Equal(t, websocket.ClosePolicyViolation, closeCode(t, c))
}

func TestSessionMessages(t *testing.T) {
	f := newFixture(t, nil)
	a := f.join(t, "s", "admin")
	b := f.join(t, "s", "agent")
	other := f.join(t, "t", "agent")

	send(t, a, `{"type":"broadcast","msg":"hello","data":{"n":1}}`)
	want := map[string]any{"type": "session_message", "user_type": "admin", "client_type": "web", "msg": "hello", "data": map[string]any{"n": float64(1)}}
	assert.Equal(t, want, recv(t, a))
	assert.Equal(t, want, recv(t, b))

	send(t, b, `{"type":"presence"}`)
	p := recv(t, b)
	assert.Equal(t, "presence", p["type"])
	assert.InDelta(t, 2, p["count"], 0) // a JSON number: exactly 2
	assert.Len(t, p["connections"], 2)

	send(t, b, `{"type":"ping"}`)
	assert.Equal(t, map[string]any{"type": "pong"}, recv(t, b))
	send(t, b, `{"type":"broadcast"}`)
	assert.Equal(t, "invalid_message", recv(t, b)["code"])
	send(t, b, `{"type":"dance"}`)
	assert.Equal(t, "unknown_type", recv(t, b)["code"])
	send(t, b, `{"type":"hello","user_type":"x"}`)
	assert.Equal(t, "invalid_message", recv(t, b)["code"])

	// Nothing of session s reached t: its next message is its own pong.
	send(t, other, `{"type":"ping"}`)
	assert.Equal(t, "pong", recv(t, other)["type"])
}

func TestOrderFromOneSender(t *testing.T) {
	f := newFixture(t, nil)
	a := f.join(t, "s", "admin")
	b := f.join(t, "s", "agent")
	for i := range 100 {
		send(t, a, fmt.Sprintf(`{"type":"broadcast","msg":%d}`, i))
	}
	for i := range 100 {
		assert.InDelta(t, i, recv(t, b)["msg"], 0) // a JSON number: exactly i
	}
}

func TestRateLimit(t *testing.T) {
	f := newFixture(t, func(c *web.Config) { c.RatePerSec, c.RateBurst = 0.001, 3 })
	c := f.join(t, "s", "admin") // the hello is not counted
	for range 3 {
		send(t, c, `{"type":"ping"}`)
		assert.Equal(t, "pong", recv(t, c)["type"])
	}
	send(t, c, `{"type":"ping"}`)
	assert.Equal(t, "rate_limited", recv(t, c)["code"])
}

func TestFrameTooBig(t *testing.T) {
	f := newFixture(t, nil)
	c := f.join(t, "s", "admin")
	send(t, c, `{"type":"broadcast","msg":"`+strings.Repeat("x", 5000)+`"}`)
	assert.Equal(t, websocket.CloseMessageTooBig, closeCode(t, c))
}

func TestSlowConsumerIsDropped(t *testing.T) {
	f := newFixture(t, func(c *web.Config) {
		c.Sockets.MaxQueue = 8
		c.Sockets.ReadLimit = 1 << 20
		// The slow client reads its close only after the test is done
		// sending; the connection must not be cut before that, neither
		// by the write timeout nor by the wait for its reply to the close,
		// which starts once the close frame is in the kernel's buffer.
		c.Sockets.WriteTimeout = time.Minute
		c.Sockets.CloseWait = time.Minute
	})
	slow := f.join(t, "s", "slow")
	fast := f.join(t, "s", "fast")
	// The slow client reads nothing while 32 MiB are broadcast: the
	// kernel's buffers fill, its queue fills, and it is closed with 1008.
	// The sender keeps reading its own copies and is never slowed.
	big := `{"type":"broadcast","msg":"` + strings.Repeat("x", 512<<10) + `"}`
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 64 {
			if fast.WriteMessage(websocket.TextMessage, []byte(big)) != nil {
				return
			}
		}
	}()
	for range 64 {
		require.NoError(t, fast.SetReadDeadline(time.Now().Add(wait)))
		_, err := readFrame(t, fast)
		require.NoError(t, err)
	}
	<-done
	assert.Equal(t, websocket.ClosePolicyViolation, closeCode(t, slow))
}

func TestDrain(t *testing.T) {
	f := newFixture(t, nil)
	c := f.join(t, "s", "admin")
	f.srv.Drain()

	resp, err := http.Get(f.http.URL + "/health/")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 503, resp.StatusCode)
	status, _ := f.refused(t, "/ws/session/s/", nil)
	assert.Equal(t, 503, status)

	closed := make(chan error, 1)
	go func() { closed <- f.srv.CloseSessions(context.Background()) }()
	assert.Equal(t, websocket.CloseServiceRestart, closeCode(t, c))
	require.NoError(t, <-closed)
}

func TestHTTPEndpoints(t *testing.T) {
	f := newFixture(t, func(c *web.Config) {
		c.Ready = []web.Check{{Name: "redis", Check: func(context.Context) error { return fmt.Errorf("connection refused") }}}
		c.Components = map[string]string{"chat": "bedrock", "guardrail": "bedrock-judge", "escalation": "local"}
	})
	get := func(path, host string) (int, map[string]any) {
		req, err := http.NewRequest("GET", f.http.URL+path, nil)
		require.NoError(t, err)
		if host != "" {
			req.Host = host
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	status, body := get("/health/", "10.1.2.3:8000") // any Host: ALBs call by IP
	assert.Equal(t, 200, status)
	assert.Equal(t, map[string]any{"status": "ok", "instance_id": "test-1"}, body)

	status, body = get("/ready/", "")
	assert.Equal(t, 503, status)
	assert.Equal(t, map[string]any{"redis": "unavailable"}, body["failing"])
	assert.Equal(t, map[string]any{"chat": "bedrock", "guardrail": "bedrock-judge", "escalation": "local"}, body["model"])

	status, body = get("/nowhere", "")
	assert.Equal(t, 404, status)
	assert.Equal(t, "not_found", body["error"].(map[string]any)["code"])

	req, err := http.NewRequest("GET", f.http.URL+"/metrics", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Contains(t, string(raw), "wsserver_sockets_open{endpoint=\"session\"} 0")
}

func TestReadyNamesTheModel(t *testing.T) {
	for name, tc := range map[string]struct {
		components map[string]string
		want       map[string]any
	}{
		"no components: the shape of old": {nil, map[string]any{"status": "ok", "instance_id": "test-1"}},
		"components": {
			map[string]string{"chat": "local", "guardrail": "local", "escalation": "local"},
			map[string]any{"status": "ok", "instance_id": "test-1", "model": map[string]any{"chat": "local", "guardrail": "local", "escalation": "local"}},
		},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, func(c *web.Config) { c.Components = tc.components })
			resp, err := http.Get(f.http.URL + "/ready/")
			require.NoError(t, err)
			defer resp.Body.Close()
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			var body map[string]any
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
			assert.Equal(t, tc.want, body)
		})
	}
}

// /ready/ tells anyone only which check failed; the driver's text, which
// names users, databases and addresses, goes to the log at WARN, with any
// password masked.
func TestReadyHidesTheFailure(t *testing.T) {
	var logs bytes.Buffer
	f := newFixture(t, func(c *web.Config) {
		c.Log = slog.New(slog.NewJSONHandler(&logs, nil))
		c.Ready = []web.Check{
			{Name: "postgres", Check: func(context.Context) error {
				return errors.New("failed to connect to `user=bot database=state`: 10.0.0.5:5432: " +
					"postgres://bot:Pa55word@10.0.0.5:5432/state password=Pa55word: connection refused")
			}},
			{Name: "redis", Check: func(context.Context) error { return nil }},
		}
	})
	resp, err := http.Get(f.http.URL + "/ready/")
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	var body map[string]any
	require.NoError(t, json.Unmarshal(raw, &body))
	assert.Equal(t, map[string]any{"postgres": "unavailable"}, body["failing"])
	for _, leak := range []string{"bot", "state", "10.0.0.5", "5432", "refused"} {
		assert.NotContains(t, string(raw), leak)
	}

	out := logs.String()
	assert.Contains(t, out, `"level":"WARN"`)
	assert.Contains(t, out, `"check":"postgres"`)
	assert.Contains(t, out, "10.0.0.5:5432")
	assert.NotContains(t, out, "Pa55word", "a password reached the log")
}

// metric returns the value of one line of /metrics, or -1 when absent.
func metric(t *testing.T, f *fixture, line string) int {
	t.Helper()
	resp, err := http.Get(f.http.URL + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, line+" "); ok {
			var n int
			_, err := fmt.Sscan(v, &n)
			require.NoError(t, err)
			return n
		}
	}
	return -1
}

// One client address cannot take every socket of the instance: past
// MaxConnectionsPerIP it gets 429 too_many_connections, counted in
// /metrics, while other addresses (behind a trusted proxy here) still
// connect, and a socket that closes frees its place.
func TestMaxConnectionsPerIP(t *testing.T) {
	f := newFixture(t, func(c *web.Config) {
		c.MaxConnectionsPerIP = 2
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	a := f.join(t, "s", "a")
	f.join(t, "s", "b")
	status, code := f.refused(t, "/ws/session/s/", nil)
	assert.Equal(t, http.StatusTooManyRequests, status)
	assert.Equal(t, "too_many_connections", code)
	status, code = f.refused(t, "/ws/chat/", nil)
	assert.Equal(t, http.StatusTooManyRequests, status)
	assert.Equal(t, "too_many_connections", code)
	assert.Equal(t, 2, metric(t, f, `wsserver_upgrades_refused_total{reason="too_many_connections"}`))

	// Another client, as the trusted proxy reports it.
	other := http.Header{"X-Forwarded-For": {"203.0.113.9"}}
	_, err := f.dial(t, "/ws/chat/", other)
	require.NoError(t, err)
	// IPv6 clients count per /64.
	_, err = f.dial(t, "/ws/chat/", http.Header{"X-Forwarded-For": {"2001:db8:1:2::1"}})
	require.NoError(t, err)
	_, err = f.dial(t, "/ws/chat/", http.Header{"X-Forwarded-For": {"2001:db8:1:2::2"}})
	require.NoError(t, err)
	status, code = f.refused(t, "/ws/chat/", http.Header{"X-Forwarded-For": {"2001:db8:1:2:ffff::3"}})
	assert.Equal(t, http.StatusTooManyRequests, status)
	assert.Equal(t, "too_many_connections", code)

	// The first client leaves: its address may connect again.
	require.NoError(t, a.Close())
	require.Eventually(t, func() bool {
		c, err := f.dial(t, "/ws/session/s/", nil)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, wait, 20*time.Millisecond)
}

// The client address of the logs is the TCP peer unless that peer is a
// trusted proxy; then the rightmost X-Forwarded-For entry that is not a
// trusted proxy: a leftmost entry is whatever the client wrote. The
// authorization query parameter is never logged.
func TestClientAddress(t *testing.T) {
	tests := []struct {
		name    string
		trusted []string
		xff     []string
		want    string
	}{
		{"no proxy trusted: the peer", nil, []string{"198.51.100.1"}, "127.0.0.1"},
		{"no header", []string{"127.0.0.0/8"}, nil, "127.0.0.1"},
		{"the proxy's client", []string{"127.0.0.1/32"}, []string{"198.51.100.1"}, "198.51.100.1"},
		{"a forged leftmost entry", []string{"127.0.0.0/8"}, []string{"6.6.6.6, 198.51.100.1"}, "198.51.100.1"},
		{"two proxies", []string{"127.0.0.0/8", "10.0.0.0/8"}, []string{"6.6.6.6, 198.51.100.1, 10.1.2.3"}, "198.51.100.1"},
		{"two headers", []string{"127.0.0.0/8", "10.0.0.0/8"}, []string{"6.6.6.6", "198.51.100.1, 10.1.2.3"}, "198.51.100.1"},
		{"another proxy is not trusted", []string{"127.0.0.0/8"}, []string{"198.51.100.1, 10.1.2.3"}, "10.1.2.3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs syncBuffer
			f := newFixture(t, func(c *web.Config) {
				c.Log = slog.New(slog.NewJSONHandler(&logs, nil))
				c.APIKey = "Sup3rSecretKey"
				for _, p := range tt.trusted {
					c.TrustedProxies = append(c.TrustedProxies, netip.MustParsePrefix(p))
				}
			})
			h := http.Header{}
			for _, v := range tt.xff {
				h.Add("X-Forwarded-For", v)
			}
			c, err := f.dial(t, "/ws/chat/?authorization=Sup3rSecretKey", h)
			require.NoError(t, err)
			require.NoError(t, c.Close())
			var line map[string]any
			require.Eventually(t, func() bool {
				for _, l := range strings.Split(logs.String(), "\n") {
					if strings.Contains(l, `"msg":"request"`) {
						return json.Unmarshal([]byte(l), &line) == nil
					}
				}
				return false
			}, wait, 10*time.Millisecond)
			assert.Equal(t, tt.want, line["remote"])
			assert.Equal(t, "/ws/chat/", line["path"])
			assert.NotContains(t, logs.String(), "Sup3rSecretKey")
		})
	}
}

// syncBuffer is a bytes.Buffer for a logger and a test at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A limit is never silently replaced: zero means the documented default,
// and a negative or non-finite one is refused.
func TestNewRefusesBadLimits(t *testing.T) {
	for name, change := range map[string]func(*web.Config){
		"max connections":        func(c *web.Config) { c.MaxConnections = -1 },
		"max connections per ip": func(c *web.Config) { c.MaxConnectionsPerIP = -1 },
		"rate":                   func(c *web.Config) { c.RatePerSec = -1 },
		"NaN rate":               func(c *web.Config) { c.RatePerSec = math.NaN() },
		"infinite rate":          func(c *web.Config) { c.RatePerSec = math.Inf(1) },
		"burst":                  func(c *web.Config) { c.RateBurst = -1 },
		"message chars":          func(c *web.Config) { c.MaxMessageChars = -1 },
		"hello timeout":          func(c *web.Config) { c.HelloTimeout = -time.Second },
	} {
		t.Run(name, func(t *testing.T) {
			m := metrics.New()
			hub, err := session.NewHub(session.HubConfig{
				Broker: memory.NewBroker(), Presence: memory.NewPresence(), Encode: socket.Frame, Observer: m,
			})
			require.NoError(t, err)
			cfg := web.Config{
				InstanceID: "test-1", Chat: newChat(t, hub, 0), CSRFSecret: "test-csrf-secret-of-enough-length-0123456789",
				HostAllowed: func(string) bool { return true }, OriginAllowed: func(string) bool { return true },
				Hub: hub, Metrics: m,
			}
			change(&cfg)
			_, err = web.New(cfg)
			assert.ErrorContains(t, err, "web: ")
		})
	}
}

// Both endpoints' sockets are tracked together, but shutdown closes each
// kind its own way: CloseSessions closes the sessions at once and leaves
// the chats, which CloseChats closes once their answers are done.
func TestCloseSessionsLeavesTheChats(t *testing.T) {
	f := newFixture(t, nil)
	sess := f.join(t, "s", "admin")
	chat, err := f.dial(t, "/ws/chat/", nil)
	require.NoError(t, err)
	// A pong says the chat socket is tracked: one upgraded as drain began
	// would be closed at once (closeIfDraining), which is not this test.
	send(t, chat, `{"type":"ping"}`)
	require.Equal(t, "pong", recv(t, chat)["type"])
	f.srv.Drain()

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- f.srv.CloseSessions(ctx) }()
	assert.Equal(t, websocket.CloseServiceRestart, closeCode(t, sess))
	require.NoError(t, <-closed, "CloseSessions waits for sessions only")

	send(t, chat, `{"type":"ping"}`)
	assert.Equal(t, "pong", recv(t, chat)["type"], "the chat socket is still open")
	go func() { closed <- f.srv.CloseChats(ctx) }()
	assert.Equal(t, websocket.CloseServiceRestart, closeCode(t, chat))
	require.NoError(t, <-closed)
}
