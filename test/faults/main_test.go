// Package faults breaks the links between wsserver and its servers on
// purpose, and checks what clients see and what is stored.
//
// Whole instances (cmd/wsserver/app) run in the test process on loopback,
// as in test/e2e, sharing one Redis and one PostgreSQL started by
// test/containers (or named by TEST_REDIS_URL and TEST_DATABASE_URL). A
// toxiproxy proxy, run in-process as a library, sits between an instance
// and Redis or PostgreSQL: the tests add latency, hang it, reset it, or cut
// it for a while, then take the fault away. The rules every test checks:
// every client sees its whole answer or a clear error; a turn is stored
// whole or not at all, and the client is told which; the server recovers
// by itself; and no goroutine outlives its test.
package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/wsserver/wsserver/adapters/config"
	"github.com/wsserver/wsserver/cmd/wsserver/app"
	"github.com/wsserver/wsserver/test/containers"
	"github.com/wsserver/wsserver/test/wstest"
)

// wait bounds every wait of these tests, only against hangs: a passing run
// never comes close.
const wait = 30 * time.Second

// apiKey is the instances' API key.
const apiKey = "faults-api-key-0123456789"

var (
	// servers are the package's Redis and PostgreSQL, started by TestMain.
	servers containers.Both
	toxi    = containers.NewToxiproxy()
)

func TestMain(m *testing.M) { containers.RunWithBoth(m, "faults", &servers) }

// setup checks, once the test and its cleanups are done, that it left no
// goroutine behind: every instance, proxy, connection and answer it
// started must have ended.
func setup(t *testing.T) {
	t.Helper()
	before := goleak.IgnoreCurrent()
	// Registered first, so it runs after every other cleanup of the test.
	t.Cleanup(func() { verifyNoLeaks(t, before, toxiproxyLeak) })
}

// toxiproxyLeak is toxiproxy's own leak, not the server's: in v2.5.0 (the
// newest the module proxy serves) a link's writer that fails to write to a
// closed connection returns without draining its channel, and the pass-
// through toxic before it stays blocked in an unguarded send
// (toxics/noop.go: `stub.Output <- c`) forever. It shows under load when a
// proxy is removed with data in flight (TestPostgresHung, now and then).
var toxiproxyLeak = goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/toxics.(*NoopToxic).Pipe")

// verifyNoLeaks fails t if goroutines other than those of ignore are still
// running once teardown has had a while to end them (closed connections
// end their goroutines a little after Close returns).
func verifyNoLeaks(t *testing.T, ignore ...goleak.Option) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := goleak.Find(ignore...)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("goroutines left behind:\n%v", err)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// instance is one running server.
type instance struct {
	id     string
	addr   string
	stop   context.CancelFunc
	result chan error
	logs   *logBuffer
}

// instanceConfig returns an instance's configuration: a production one
// (DJANGO_DEBUG off, an API key and a secret key), Redis at redisURL and,
// when dsn is set, PostgreSQL at dsn.
func instanceConfig(t *testing.T, id, redisURL, dsn string) config.Config {
	t.Helper()
	t.Setenv("DJANGO_DEBUG", "0")
	t.Setenv("AUTH_API_KEY", apiKey)
	t.Setenv("DJANGO_SECRET_KEY", "faults-secret-key-0123456789-0123456789")
	cfg, err := config.Load("")
	require.NoError(t, err)
	cfg.InstanceID = id
	cfg.Store.RedisURL = redisURL
	cfg.Store.DatabaseURL = dsn
	cfg.Auth.APIKey = apiKey
	cfg.Auth.Disabled = false
	// Short enough that a test waiting on a stuck shutdown still ends
	// within its bound, long enough for any answer of these tests.
	cfg.HTTP.ShutdownGrace = 10 * time.Second
	return cfg
}

// start runs an instance with cfg until the test ends. Its warnings and
// errors are kept and shown when the test fails.
func start(t *testing.T, cfg config.Config) *instance {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	logs := &logBuffer{}
	in := &instance{id: cfg.InstanceID, addr: ln.Addr().String(), stop: cancel, result: make(chan error, 1), logs: logs}
	var out io.Writer = logs
	if testing.Verbose() {
		out = io.MultiWriter(logs, os.Stderr)
	}
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelWarn})).With("instance", cfg.InstanceID)
	go func() { in.result <- app.Run(ctx, cfg, log, ln) }()
	t.Cleanup(func() {
		in.shutdown(t)
		if t.Failed() && !testing.Verbose() {
			t.Logf("instance %s logged:\n%s", in.id, logs.String())
		}
	})
	waitReady(t, in)
	return in
}

// waitReady returns once the instance answers /health/.
func waitReady(t *testing.T, in *instance) {
	t.Helper()
	eventually(t, "instance "+in.id+" serves", func() bool {
		select {
		case err := <-in.result:
			t.Fatalf("instance %s stopped: %v", in.id, err)
		default:
		}
		status, _ := get(in, "/health/")
		return status == http.StatusOK
	})
}

// shutdown stops the instance as SIGTERM does.
func (in *instance) shutdown(t *testing.T) {
	t.Helper()
	in.stop()
	select {
	case err := <-in.result:
		if err != nil {
			t.Errorf("instance %s: %v", in.id, err)
		}
	case <-time.After(wait):
		t.Errorf("instance %s did not stop", in.id)
	}
}

// logBuffer keeps an instance's log lines.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// httpClient keeps no idle connection, so none outlives its test.
var httpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: wait}

func get(in *instance, path string) (int, error) {
	resp, err := httpClient.Get("http://" + in.addr + path)
	if err != nil {
		return 0, err
	}
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// eventually retries try until it reports true, failing the test after
// wait.
func eventually(t *testing.T, what string, try func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !try() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// uniqueID names a session or thread after the test.
func uniqueID(t *testing.T) string {
	t.Helper()
	name := strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())
	return fmt.Sprintf("%s-%d", strings.ToLower(name), time.Now().UnixNano())
}

// client is a wstest.Client bound to the test that opened it.
type client struct {
	*wstest.Client
	t *testing.T
}

func dial(t *testing.T, in *instance, path string) *client {
	t.Helper()
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return &client{Client: wstest.Dial(t, "ws://"+in.addr+path+sep+"authorization="+apiKey, nil, wait), t: t}
}

func (c *client) send(v string) {
	c.t.Helper()
	c.Send(c.t, v)
}

// join opens a session socket on in and says hello.
func join(t *testing.T, in *instance, session, userType string) *client {
	t.Helper()
	c := dial(t, in, "/ws/session/"+session+"/")
	c.send(fmt.Sprintf(`{"type":"hello","user_type":%q,"client_type":"web"}`, userType))
	ok := c.Next(t)
	require.Equal(t, "hello_ok", ok["type"], "%v", ok)
	return c
}

// answer is what one chat message brought back.
type answer struct {
	thread  string
	started bool
	text    string
	tokens  int
	end     map[string]any // nil when the answer ended with an error
	err     map[string]any // the error event, nil when it ended with end
}

// sendChat sends one chat message on c.
func sendChat(t *testing.T, c *client, thread, message string) {
	t.Helper()
	raw, err := json.Marshal(map[string]any{"type": "chat", "message": message, "channel": "web", "data": []any{}, "thread_id": thread})
	require.NoError(t, err)
	c.send(string(raw))
}

// readAnswer reads c's events up to end or error. Every event must come
// within wait of the previous one: an answer that goes silent fails the
// test.
func readAnswer(t *testing.T, c *client) answer {
	t.Helper()
	var a answer
	for !a.add(c.Next(t)) {
	}
	return a
}

// add takes one chat event into a, and reports whether it ended the
// answer (end or error).
func (a *answer) add(ev map[string]any) (ended bool) {
	switch ev["type"] {
	case "session_started":
		a.started = true
		a.thread, _ = ev["thread_id"].(string)
	case "token":
		a.text += ev["content"].(string)
		a.tokens++
	case "end":
		a.end = ev
		return true
	case "error":
		a.err = ev
		return true
	}
	return false
}

// chat sends one chat message and reads its answer.
func chat(t *testing.T, c *client, thread, message string) answer {
	t.Helper()
	sendChat(t, c, thread, message)
	return readAnswer(t, c)
}

// history returns a thread's messages as "role: content", read through
// /api/thread/history; nil for a thread never stored.
func history(t *testing.T, in *instance, thread string) []string {
	t.Helper()
	token := csrfToken(t, in)
	body := strings.NewReader(fmt.Sprintf(`{"thread_id":%q}`, thread))
	req, err := http.NewRequest(http.MethodPost, "http://"+in.addr+"/api/thread/history", body)
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", apiKey)
	req.Header.Set("X-CSRFToken", token)
	resp, err := httpClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil
	}
	var m struct {
		Messages []struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"messages"`
	}
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "history of %s: %s", thread, raw)
	require.NoError(t, json.Unmarshal(raw, &m), "%s", raw)
	out := []string{}
	for _, msg := range m.Messages {
		out = append(out, msg.Role+": "+msg.Content)
	}
	return out
}

func csrfToken(t *testing.T, in *instance) string {
	t.Helper()
	resp, err := httpClient.Get("http://" + in.addr + "/api/csrf-token/")
	require.NoError(t, err)
	defer resp.Body.Close()
	var m map[string]string
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&m))
	require.NotEmpty(t, m["csrfToken"])
	return m["csrfToken"]
}

// redisVia returns a toxic proxy to the test's Redis and the URL that
// reaches Redis through it.
func redisVia(t *testing.T) (*containers.ToxicProxy, string) {
	t.Helper()
	addr, err := containers.RedisAddr(servers.Redis.URL())
	require.NoError(t, err)
	p := toxi.NewToxicProxy(t, addr)
	u, err := containers.RedisURLVia(servers.Redis.URL(), p.Addr())
	require.NoError(t, err)
	return p, u
}

// postgresVia returns a new database, a toxic proxy to its server and the
// DSN that reaches the database through the proxy.
func postgresVia(t *testing.T) (*containers.ToxicProxy, string) {
	t.Helper()
	dsn := servers.Postgres.NewDatabase(context.Background(), t)
	addr, err := containers.PostgresAddr(dsn)
	require.NoError(t, err)
	p := toxi.NewToxicProxy(t, addr)
	via, err := containers.PostgresDSNVia(dsn, p.Addr())
	require.NoError(t, err)
	return p, via
}
