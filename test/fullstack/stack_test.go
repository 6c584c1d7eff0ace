package fullstack

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/moby/moby/api/types/container"
	dockernet "github.com/moby/moby/api/types/network"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/wsserver/wsserver/test/containers"
	"github.com/wsserver/wsserver/test/wstest"
)

// patience bounds every wait for a message or a state. A passing run never
// comes close.
const patience = 30 * time.Second

// maxImageBytes is the image size issue 5 promises.
const maxImageBytes = 30 << 20

const apiKey = "fullstack-api-key-0123456789"

var httpPort = dockernet.MustParsePort("8000/tcp")

// server is one wsserver container.
type server struct {
	id   string // INSTANCE_ID, also its name on the network
	ctr  *testcontainers.DockerContainer
	addr string // host:port on 127.0.0.1
}

// TestStack runs the image as issue 5 ships it: two instances behind no
// balancer at all, sharing Redis and PostgreSQL over a Docker network, then
// stops one with SIGTERM in the middle of an answer (PROTOCOL.md §11).
func TestStack(t *testing.T) {
	needImage(t)
	// The app containers reach Redis and PostgreSQL by their names on the
	// test's network, so the servers are containers here, never ready ones.
	t.Setenv("TEST_REDIS_URL", "")
	t.Setenv("TEST_DATABASE_URL", "")
	// As in test/containers: no reaper unless asked for, since its image
	// cannot always be pulled; every container and the network are removed
	// by this test's cleanups.
	if _, ok := os.LookupEnv("TESTCONTAINERS_RYUK_DISABLED"); !ok {
		t.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
	}
	ctx := t.Context()

	t.Run("image", func(t *testing.T) {
		out, err := exec.CommandContext(ctx, "docker", "image", "inspect", "--format", "{{.Size}} {{.Config.User}}", image).Output()
		require.NoError(t, err)
		size, user, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
		n, err := strconv.ParseInt(size, 10, 64)
		require.NoError(t, err)
		t.Logf("%s: %.1f MB, user %s", image, float64(n)/1e6, user)
		assert.Less(t, n, int64(maxImageBytes), "image size")
		assert.Equal(t, "65532:65532", user, "runs as non-root")
	})

	nw, err := network.New(ctx)
	testcontainers.CleanupNetwork(t, nw)
	require.NoError(t, err)
	rds, err := containers.StartRedis(ctx, network.WithNetwork([]string{"redis"}, nw))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, rds.Terminate(context.Background())) })
	pg, err := containers.StartPostgres(ctx, network.WithNetwork([]string{"postgres"}, nw))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, pg.Terminate(context.Background())) })
	dsn, err := url.Parse(pg.NewDatabase(ctx, t))
	require.NoError(t, err)
	dsn.Host = "postgres:5432"

	env := map[string]string{
		"DJANGO_DEBUG":         "0",
		"DJANGO_SECRET_KEY":    rand.Text() + rand.Text(),
		"AUTH_API_KEY":         apiKey,
		"DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
		"REDIS_URL":            "redis://redis:6379/0",
		"DATABASE_URL":         dsn.String(),
	}
	// a answers slowly enough (about 100 ms a word) that SIGTERM lands in
	// the middle of an answer.
	a := startServer(t, nw, "a", env, map[string]string{"LOCAL_MODEL_TOKEN_DELAY": "100ms"})
	b := startServer(t, nw, "b", env, nil)

	t.Run("health", func(t *testing.T) {
		for _, s := range []*server{a, b} {
			code, body := health(t, s)
			assert.Equal(t, http.StatusOK, code)
			assert.Equal(t, s.id, body["instance_id"])
		}
	})

	t.Run("chat", func(t *testing.T) {
		c := dial(t, a, "/ws/chat/")
		ans := chat(t, c, "Hello, how can you help?")
		assert.Positive(t, ans.tokens)
		assert.Contains(t, ans.text, "Hello, how can you help?")
		assert.False(t, ans.cancelled)
	})

	session := "fullstack-" + strings.ToLower(rand.Text()[:8])
	onA := join(t, a, session, "admin")
	onB := join(t, b, session, "agent")

	t.Run("session across instances", func(t *testing.T) {
		onA.Send(t, `{"type":"broadcast","msg":"hello from a","data":{"n":1}}`)
		got := onB.NextOf(t, "session_message")
		assert.Equal(t, "hello from a", got["msg"])
		assert.Equal(t, "admin", got["user_type"])
		assert.Equal(t, map[string]any{"n": float64(1)}, got["data"])
		eventually(t, "presence counts both instances' sockets", func() bool { return presenceCount(t, onB) == 2 })
	})

	t.Run("SIGTERM mid-answer", func(t *testing.T) {
		c := dial(t, a, "/ws/chat/")
		c.Send(t, chatMessage("Please tell me, at some length and in your own words, what this server does "+
			"with a chat message from the moment it arrives until the answer is stored."))
		require.Equal(t, "session_started", c.Next(t)["type"])
		first := c.NextOf(t, "token")
		text := first["content"].(string)

		out, err := exec.CommandContext(ctx, "docker", "kill", "--signal", "SIGTERM", a.ctr.GetContainerID()).CombinedOutput()
		require.NoError(t, err, "%s", out)

		// /health/ turns 503 while the answer still streams.
		eventually(t, "a's /health/ answers 503", func() bool {
			code, _, err := get(a, "/health/")
			return err == nil && code == http.StatusServiceUnavailable
		})
		// The answer finishes, whole.
		for done := false; !done; {
			m := c.Next(t)
			switch m["type"] {
			case "token":
				text += m["content"].(string)
			case "end":
				assert.NotEqual(t, true, m["cancelled"], "the answer was cut short: %v", m)
				done = true
			default:
				t.Fatalf("while a drains, the chat got %v", m)
			}
		}
		assert.Contains(t, text, "what this server does")
		t.Logf("a's chat socket closed with %d after its answer", c.Closed(t))

		// Session sockets are told to reconnect elsewhere.
		assert.Equal(t, websocket.CloseServiceRestart, onA.Closed(t), "a's session socket")

		// The process exits 0.
		var state *container.State
		eventually(t, "a's container exits", func() bool {
			s, err := a.ctr.State(ctx)
			require.NoError(t, err)
			state = s
			return !s.Running
		})
		assert.Equal(t, 0, state.ExitCode, "a's exit code")

		// b keeps serving: health, presence without a's socket, a new chat.
		code, _ := health(t, b)
		assert.Equal(t, http.StatusOK, code)
		eventually(t, "a's socket left presence", func() bool { return presenceCount(t, onB) == 1 })
		ans := chat(t, dial(t, b, "/ws/chat/"), "Still there?")
		assert.Contains(t, ans.text, "Still there?")
	})
}

// startServer starts a wsserver container from the image with env and
// extra, named id on nw, publishes its port on 127.0.0.1, and returns once
// the image's own HEALTHCHECK (wsserver healthcheck) reports it healthy.
// The container is removed when the test ends, after its log is shown if
// the test failed.
func startServer(t *testing.T, nw *testcontainers.DockerNetwork, id string, env, extra map[string]string) *server {
	t.Helper()
	ctx := t.Context()
	all := map[string]string{"INSTANCE_ID": id}
	for k, v := range env {
		all[k] = v
	}
	for k, v := range extra {
		all[k] = v
	}
	ctr, err := testcontainers.Run(ctx, image,
		network.WithNetwork([]string{id}, nw),
		testcontainers.WithEnv(all),
		testcontainers.WithExposedPorts(httpPort.String()),
		testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.PortBindings = dockernet.PortMap{httpPort: {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: "0"}}}
		}),
		// The image's own HEALTHCHECK runs `wsserver healthcheck` in the
		// container; its first check comes one interval (5 s) after the start.
		testcontainers.WithWaitStrategyAndDeadline(time.Minute, wait.ForHealthCheck()),
	)
	testcontainers.CleanupContainer(t, ctr)
	if ctr != nil {
		t.Cleanup(func() { showLog(t, id, ctr) })
	}
	require.NoError(t, err, "start %s", id)
	port, err := ctr.MappedPort(ctx, httpPort.String())
	require.NoError(t, err)
	return &server{id: id, ctr: ctr, addr: "127.0.0.1:" + port.Port()}
}

// showLog logs the container's output when the test failed.
func showLog(t *testing.T, id string, ctr *testcontainers.DockerContainer) {
	t.Helper()
	if !t.Failed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := ctr.Logs(ctx)
	if err != nil {
		t.Logf("log of %s: %v", id, err)
		return
	}
	defer rc.Close()
	out, _ := io.ReadAll(rc)
	t.Logf("log of %s:\n%s", id, out)
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// get GETs path on s and returns the status and the body.
func get(s *server, path string) (int, []byte, error) {
	resp, err := httpClient.Get("http://" + s.addr + path)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

func health(t *testing.T, s *server) (int, map[string]any) {
	t.Helper()
	code, raw, err := get(s, "/health/")
	require.NoError(t, err)
	var body map[string]any
	require.NoError(t, json.Unmarshal(raw, &body), "%s", raw)
	return code, body
}

// eventually retries try until it reports true, at most patience long.
func eventually(t *testing.T, what string, try func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !try() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dial opens a WebSocket on s with the API key in the Authorization header.
func dial(t *testing.T, s *server, path string) *wstest.Client {
	t.Helper()
	return wstest.Dial(t, "ws://"+s.addr+path, http.Header{"Authorization": {"Bearer " + apiKey}}, patience)
}

func chatMessage(text string) string {
	raw, _ := json.Marshal(map[string]any{"type": "chat", "message": text, "channel": "web", "data": []any{}})
	return string(raw)
}

// answer is what one chat message brought back.
type answer struct {
	text      string
	tokens    int
	cancelled bool
}

// chat sends one chat message on a new thread and reads its answer to the
// end.
func chat(t *testing.T, c *wstest.Client, text string) answer {
	t.Helper()
	c.Send(t, chatMessage(text))
	require.Equal(t, "session_started", c.Next(t)["type"])
	var a answer
	for {
		m := c.Next(t)
		switch m["type"] {
		case "token":
			a.text += m["content"].(string)
			a.tokens++
		case "end":
			a.cancelled, _ = m["cancelled"].(bool)
			return a
		default:
			t.Fatalf("during an answer: %v", m)
		}
	}
}

// join opens a session socket on s and says hello.
func join(t *testing.T, s *server, session, userType string) *wstest.Client {
	t.Helper()
	c := dial(t, s, "/ws/session/"+session+"/")
	c.Send(t, fmt.Sprintf(`{"type":"hello","user_type":%q,"client_type":"web"}`, userType))
	ok := c.Next(t)
	require.Equal(t, "hello_ok", ok["type"], "%v", ok)
	return c
}

// presenceCount asks for the session's presence on c.
func presenceCount(t *testing.T, c *wstest.Client) int {
	t.Helper()
	c.Send(t, `{"type":"presence"}`)
	n, _ := c.NextOf(t, "presence")["count"].(float64)
	return int(n)
}
