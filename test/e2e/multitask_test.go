package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/config"
)

// A second message on a busy thread (PROTOCOL.md §3.8), on every adapter
// pair: one instance on its in-process adapters, and two instances on
// Redis + PostgreSQL with the two messages sent to different instances.

// pair is where the first and the second message of a test go.
type pair struct {
	name        string
	first, next *instance
}

// multitaskSetups returns the instance pairs each test runs on; mod
// changes every instance's configuration.
func multitaskSetups(t *testing.T, mod func(*config.Config)) []pair {
	t.Helper()
	cfg := defaults(t)
	cfg.Auth.APIKey = apiKey
	cfg.Conversation.LocalTokenDelay = 20 * time.Millisecond
	mod(&cfg)
	mem := start(t, cfg)

	dsn := servers.Postgres.NewDatabase(t.Context(), t)
	shared := func(id string) config.Config {
		c := cfg
		c.InstanceID = id
		c.Store.RedisURL = servers.Redis.URL()
		c.Store.DatabaseURL = dsn
		return c
	}
	a, b := start(t, shared("a")), start(t, shared("b"))
	return []pair{
		{"memory", mem, mem},
		{"redis+postgres, one instance", a, a},
		{"redis+postgres, two instances", a, b},
	}
}

// long is a message whose answer (the local model quotes it) streams for
// a few seconds at 20 ms a word: time to send a second one.
var long = "Please tell me " + strings.Repeat("more and more about it, ", 25)

// sendChat sends a chat on thread with the multitask strategy m ("" for
// none).
func sendMultitask(c *client, message, thread, m string) {
	c.t.Helper()
	msg := map[string]any{"type": "chat", "message": message, "thread_id": thread, "data": []any{}}
	if m != "" {
		msg["multitask"] = m
	}
	raw, err := json.Marshal(msg)
	require.NoError(c.t, err)
	c.send(string(raw))
}

// streaming sends a long chat on thread and returns once its first token
// came, with that token's text.
func streaming(t *testing.T, in *instance, thread string) (*client, string) {
	t.Helper()
	c := dialChat(t, in)
	sendMultitask(c, long, thread, "")
	require.Equal(t, "session_started", c.next()["type"])
	tok := c.next()
	require.Equal(t, "token", tok["type"], "%v", tok)
	return c, tok["content"].(string)
}

// rest reads the answer under way to its end: its text and its end (or
// error) message.
func rest(c *client) (string, map[string]any) {
	c.t.Helper()
	var text string
	for {
		m := c.next()
		switch m["type"] {
		case "token":
			text += m["content"].(string)
		case "end", "error":
			return text, m
		}
	}
}

// history returns the thread's messages as "role: content", cancelled
// answers marked.
func history(t *testing.T, in *instance, thread string) []string {
	t.Helper()
	status, body := api(t, in, "/api/thread/history", apiKey, csrfToken(t, in), fmt.Sprintf(`{"thread_id":%q}`, thread))
	if status == 404 {
		return nil
	}
	require.Equal(t, 200, status, "%v", body)
	var got []string
	for _, m := range body["messages"].([]any) {
		mm := m.(map[string]any)
		line := mm["role"].(string) + ": " + mm["content"].(string)
		if mm["cancelled"] == true {
			line += " (cancelled)"
		}
		got = append(got, line)
	}
	return got
}

// openChats returns how many chat sockets in has open, as its metrics say
// (wsserver_sockets_open).
func openChats(t *testing.T, in *instance) float64 {
	t.Helper()
	resp, err := http.Get("http://" + in.addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), `wsserver_sockets_open{endpoint="chat"} `); ok {
			n, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err, "in %q", line)
			return n
		}
	}
	require.Fail(t, "no wsserver_sockets_open of the chat endpoint in /metrics", "%s", body)
	return 0
}

func threadName(t *testing.T, p pair) string {
	t.Helper()
	return strings.NewReplacer(" ", "-", ",", "", "+", "-", "/", "-").Replace(t.Name() + "-" + p.name)
}

func TestMultitaskEnqueue(t *testing.T) {
	for _, p := range multitaskSetups(t, func(*config.Config) {}) {
		t.Run(p.name, func(t *testing.T) {
			thread := threadName(t, p)
			first, firstText := streaming(t, p.first, thread)
			second, third := dialChat(t, p.next), dialChat(t, p.first)
			sendMultitask(second, "Second?", thread, "enqueue")
			assert.Equal(t, map[string]any{"type": "queued", "thread_id": thread, "position": 1.0}, second.next())
			sendMultitask(third, "Third?", thread, "enqueue")
			assert.Equal(t, map[string]any{"type": "queued", "thread_id": thread, "position": 2.0}, third.next())

			more, end := rest(first)
			firstText += more
			assert.Equal(t, false, end["cancelled"], "the running answer is not disturbed")
			require.Equal(t, "session_started", second.next()["type"])
			secondText, end := rest(second)
			require.Equal(t, "end", end["type"], "%v", end)
			require.Equal(t, "session_started", third.next()["type"])
			thirdText, end := rest(third)
			require.Equal(t, "end", end["type"], "%v", end)
			assert.Equal(t, []string{
				"user: " + long, "assistant: " + firstText,
				"user: Second?", "assistant: " + secondText,
				"user: Third?", "assistant: " + thirdText,
			}, history(t, p.next, thread), "one after the other, in the order they came")
		})
	}
}

// The connection's own answer streams; a chat for the same thread with
// enqueue waits behind it on the same socket, and another thread is busy.
func TestMultitaskEnqueueOnTheSameSocket(t *testing.T) {
	for _, p := range multitaskSetups(t, func(*config.Config) {})[:2] {
		t.Run(p.name, func(t *testing.T) {
			thread := threadName(t, p)
			c, _ := streaming(t, p.first, thread)
			sendMultitask(c, "Another thread?", thread+"-other", "enqueue")
			assert.Equal(t, "thread_busy", c.nextOf("error")["code"], "one answer at a time per connection")
			sendMultitask(c, "And then?", thread, "enqueue")
			queued := c.nextOf("queued")
			assert.InDelta(t, 1, queued["position"], 0)
			_, end := rest(c)
			assert.Equal(t, false, end["cancelled"])
			require.Equal(t, "session_started", c.next()["type"])
			_, end = rest(c)
			require.Equal(t, "end", end["type"])
			assert.Len(t, history(t, p.first, thread), 4)
		})
	}
}

func TestMultitaskQueueBound(t *testing.T) {
	for _, p := range multitaskSetups(t, func(c *config.Config) { c.Conversation.MaxQueuedPerThread = 1 }) {
		t.Run(p.name, func(t *testing.T) {
			thread := threadName(t, p)
			first, _ := streaming(t, p.first, thread)
			second, third := dialChat(t, p.next), dialChat(t, p.first)
			sendMultitask(second, "Second?", thread, "enqueue")
			assert.Equal(t, "queued", second.next()["type"])
			sendMultitask(third, "Third?", thread, "enqueue")
			busy := third.next()
			assert.Equal(t, "error", busy["type"])
			assert.Equal(t, "thread_busy", busy["code"], "MAX_QUEUED_PER_THREAD=1 across instances")
			sendMultitask(third, "Now?", thread, "")
			assert.Equal(t, "thread_busy", third.next()["code"], "reject does not overtake the queue")
			rest(first)
			require.Equal(t, "session_started", second.next()["type"])
			rest(second)
		})
	}
}

// A queued chat whose socket closes leaves the queue: it is never
// answered nor stored, and the chat behind it moves up.
func TestMultitaskQueuedSocketCloses(t *testing.T) {
	for _, p := range multitaskSetups(t, func(*config.Config) {}) {
		t.Run(p.name, func(t *testing.T) {
			thread := threadName(t, p)
			first, _ := streaming(t, p.first, thread)
			leaving, staying := dialChat(t, p.next), dialChat(t, p.first)
			sendMultitask(leaving, "Forget me", thread, "enqueue")
			assert.InDelta(t, 1, leaving.next()["position"], 0)
			sendMultitask(staying, "Keep me", thread, "enqueue")
			assert.InDelta(t, 2, staying.next()["position"], 0)
			open := openChats(t, p.next)
			require.NoError(t, leaving.Conn.Close())
			// Until its instance has seen the socket go, the chat that
			// left heads the queue, and the thread is rightly its once
			// free. The instance counts one chat socket less after it has
			// cancelled the socket's chats (web.Server.end): from then on
			// the chat cannot take the thread.
			for deadline := time.Now().Add(wait); openChats(t, p.next) >= open; {
				require.False(t, time.Now().After(deadline), "the instance never saw the socket close")
				time.Sleep(5 * time.Millisecond)
			}

			first.send(`{"type":"cancel"}`)
			rest(first)
			require.Equal(t, "session_started", staying.next()["type"])
			keptText, end := rest(staying)
			require.Equal(t, "end", end["type"])
			got := history(t, p.first, thread)
			require.Len(t, got, 4)
			assert.Equal(t, []string{"user: Keep me", "assistant: " + keptText}, got[2:], "the chat that left was never run")
		})
	}
}

func TestMultitaskInterrupt(t *testing.T) {
	for _, p := range multitaskSetups(t, func(c *config.Config) { c.Conversation.MaxQueuedPerThread = 0 }) {
		t.Run(p.name, func(t *testing.T) {
			thread := threadName(t, p)
			first, sent := streaming(t, p.first, thread)
			second := dialChat(t, p.next)
			sendMultitask(second, "Stop, I meant something else.", thread, "interrupt")
			more, end := rest(first)
			sent += more
			require.Equal(t, "end", end["type"], "%v", end)
			assert.Equal(t, true, end["cancelled"])
			assert.Nil(t, end["rolled_back"])
			require.NotEmpty(t, end["message_id"], "the interrupted answer is stored")
			require.Equal(t, "session_started", second.next()["type"])
			newText, end := rest(second)
			require.Equal(t, "end", end["type"], "%v", end)
			assert.Equal(t, []string{
				"user: " + long, "assistant: " + sent + " (cancelled)",
				"user: Stop, I meant something else.", "assistant: " + newText,
			}, history(t, p.first, thread), "only what was sent, which passed the guardrail, is stored, and the new chat follows it")
		})
	}
}

func TestMultitaskRollback(t *testing.T) {
	for _, p := range multitaskSetups(t, func(*config.Config) {}) {
		t.Run(p.name, func(t *testing.T) {
			thread := threadName(t, p)
			// What the second message is answered on a thread without the
			// turn: the local model is deterministic, and its answer says
			// how long the thread is.
			control := dialChat(t, p.next)
			sendMultitask(control, "Earlier: hello.", thread+"-control", "")
			rest(control)
			sendMultitask(control, "Stop, I meant something else.", thread+"-control", "")
			want, _ := rest(control)

			first := dialChat(t, p.first)
			sendMultitask(first, "Earlier: hello.", thread, "")
			rest(first)
			sendMultitask(first, long, thread, "")
			require.Equal(t, "session_started", first.next()["type"])
			first.nextOf("token")
			second := dialChat(t, p.next)
			sendMultitask(second, "Stop, I meant something else.", thread, "rollback")
			_, end := rest(first)
			require.Equal(t, "end", end["type"], "%v", end)
			assert.Equal(t, true, end["cancelled"])
			assert.Equal(t, true, end["rolled_back"])
			assert.Nil(t, end["message_id"], "nothing of the turn is stored")
			require.Equal(t, "session_started", second.next()["type"])
			got, end := rest(second)
			require.Equal(t, "end", end["type"], "%v", end)
			assert.Equal(t, want, got, "the answer is the one of a thread where the turn never happened")
			h := history(t, p.first, thread)
			require.Len(t, h, 4)
			assert.Equal(t, []string{"user: Stop, I meant something else.", "assistant: " + got}, h[2:])
			assert.Equal(t, "user: Earlier: hello.", h[0])
		})
	}
}

// A connection interrupts its own answer: the end of the old one, then
// the new one, on the same socket.
func TestMultitaskInterruptOnTheSameSocket(t *testing.T) {
	for _, p := range multitaskSetups(t, func(*config.Config) {})[:2] {
		t.Run(p.name, func(t *testing.T) {
			thread := threadName(t, p)
			c, _ := streaming(t, p.first, thread)
			sendMultitask(c, "No, wait.", thread, "rollback")
			_, end := rest(c)
			require.Equal(t, "end", end["type"], "%v", end)
			assert.Equal(t, true, end["rolled_back"])
			require.Equal(t, "session_started", c.next()["type"])
			text, end := rest(c)
			require.Equal(t, "end", end["type"], "%v", end)
			assert.Equal(t, []string{"user: No, wait.", "assistant: " + text}, history(t, p.first, thread))
		})
	}
}
