package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/config"
)

const apiKey = "e2e-api-key-0123456789"

// answer is what a chat message brought back.
type answer struct {
	thread    string
	text      string
	messageID string
	escalated bool
	errCode   string
}

// chat sends one chat message and reads its answer to the end.
func chat(t *testing.T, c *client, message, thread string) answer {
	t.Helper()
	m := map[string]any{"type": "chat", "message": message, "channel": "web", "data": []any{}}
	if thread != "" {
		m["thread_id"] = thread
	}
	raw, err := json.Marshal(m)
	require.NoError(t, err)
	c.send(string(raw))
	var a answer
	for {
		ev := c.next()
		switch ev["type"] {
		case "session_started":
			a.thread = ev["thread_id"].(string)
			require.Equal(t, a.thread, ev["session_id"])
		case "token":
			a.text += ev["content"].(string)
		case "escalation":
			a.escalated = true
		case "end":
			a.messageID, _ = ev["message_id"].(string)
			return a
		case "error":
			a.errCode = ev["code"].(string)
			return a
		}
	}
}

// chatInstances starts two instances sharing Redis and a fresh
// PostgreSQL database, with an API key.
func chatInstances(t *testing.T, tokenDelay time.Duration) (*instance, *instance) {
	t.Helper()
	return chatInstancesPaced(t, tokenDelay, tokenDelay)
}

// chatInstancesPaced is chatInstances with a token delay for each.
func chatInstancesPaced(t *testing.T, delayA, delayB time.Duration) (*instance, *instance) {
	t.Helper()
	dsn := servers.Postgres.NewDatabase(context.Background(), t)
	mk := func(id string, tokenDelay time.Duration) config.Config {
		c := defaults(t)
		c.InstanceID = id
		useRedis(&c, redisURL())
		c.Store.DatabaseURL = dsn
		c.Auth.APIKey = apiKey
		c.Conversation.LocalTokenDelay = tokenDelay
		return c
	}
	return start(t, mk("a", delayA)), start(t, mk("b", delayB))
}

// holds is a token delay no test outlasts: an answer paced by it streams
// its first word and then holds its thread until it is stopped, however
// slow the machine, where an answer of a few seconds could end before the
// test's next step on a busy one.
const holds = time.Hour

func dialChat(t *testing.T, in *instance) *client {
	t.Helper()
	return dial(t, in, "/ws/chat/?authorization="+apiKey)
}

// api calls POST path on in with the key and CSRF token given.
func api(t *testing.T, in *instance, path, key, csrf, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+in.addr+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", key)
	}
	if csrf != "" {
		req.Header.Set("X-CSRFToken", csrf)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	checkHTTP(t, http.MethodPost, path, resp.StatusCode, raw)
	var m map[string]any
	require.NoError(t, json.Unmarshal(raw, &m), "%s", raw)
	return resp.StatusCode, m
}

func csrfToken(t *testing.T, in *instance) string {
	t.Helper()
	resp, err := http.Get("http://" + in.addr + "/api/csrf-token/")
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	checkHTTP(t, http.MethodGet, "/api/csrf-token/", resp.StatusCode, raw)
	var m map[string]string
	require.NoError(t, json.Unmarshal(raw, &m))
	require.NotEmpty(t, m["csrfToken"])
	var cookie bool
	for _, c := range resp.Cookies() {
		cookie = cookie || (c.Name == "csrftoken" && c.Value != "")
	}
	assert.True(t, cookie, "a csrftoken cookie is set")
	return m["csrfToken"]
}

func TestChatOnDefaults(t *testing.T) {
	in := start(t, defaults(t))
	c := dial(t, in, "/ws/chat/")
	a := chat(t, c, "Hello, how can you help?", "")
	assert.Empty(t, a.errCode)
	assert.NotEmpty(t, a.thread)
	assert.Contains(t, a.text, "Hello, how can you help?")

	token := csrfToken(t, in)
	status, body := api(t, in, "/api/thread/history", "", token, fmt.Sprintf(`{"thread_id":%q}`, a.thread))
	require.Equal(t, 200, status, "%v", body)
	msgs := body["messages"].([]any)
	require.Len(t, msgs, 2)
	assert.Equal(t, "Hello, how can you help?", msgs[0].(map[string]any)["content"])
	assert.Equal(t, a.text, msgs[1].(map[string]any)["content"])
}

func TestChatAcrossInstances(t *testing.T) {
	a, b := chatInstances(t, 0)
	onA, onB := dialChat(t, a), dialChat(t, b)

	// A session listener on b watches the thread that a answers.
	first := chat(t, onA, "My name is Ada. What can you do?", "")
	require.Empty(t, first.errCode)
	listener := join(t, b, first.thread, "agent")

	// The thread continues on the other instance, with its history.
	second := chat(t, onB, "Do you remember me?", first.thread)
	require.Empty(t, second.errCode)
	assert.Equal(t, first.thread, second.thread)
	assert.NotEqual(t, first.text, second.text, "the answer knows the thread grew")

	ev := listener.nextOf("chat_event")
	if onCluster != "" && assert.ObjectsAreEqual(map[string]any{"kind": "answer", "content": first.text}, ev["event"]) {
		// On a cluster the listener's instance may subscribe on a node
		// that the first answer's event reaches one bus hop after its
		// publication, so after the join (TECHNICAL.md, Redis Cluster): an
		// event from just before the join, never a lost one.
		ev = listener.nextOf("chat_event")
	}
	assert.Equal(t, map[string]any{"kind": "user_message", "content": "Do you remember me?"}, ev["event"])
	ev = listener.nextOf("chat_event")
	assert.Equal(t, map[string]any{"kind": "answer", "content": second.text}, ev["event"])

	// History, asked of either instance, is exactly what was sent and streamed.
	token := csrfToken(t, a)
	status, body := api(t, b, "/api/thread/history", apiKey, token, fmt.Sprintf(`{"thread_id":%q}`, first.thread))
	require.Equal(t, 200, status, "%v", body)
	var got []string
	for _, m := range body["messages"].([]any) {
		mm := m.(map[string]any)
		got = append(got, mm["role"].(string)+": "+mm["content"].(string))
	}
	assert.Equal(t, []string{
		"user: My name is Ada. What can you do?",
		"assistant: " + first.text,
		"user: Do you remember me?",
		"assistant: " + second.text,
	}, got)

	status, body = api(t, a, "/api/thread/summarize", "Bearer "+apiKey, token, fmt.Sprintf(`{"thread_id":%q}`, first.thread))
	require.Equal(t, 200, status, "%v", body)
	assert.NotEmpty(t, body["summary"])

	status, _ = api(t, a, "/api/thread/history", apiKey, token, `{"thread_id":"no-such-thread"}`)
	assert.Equal(t, 404, status)
}

func TestThreadBusyAcrossInstances(t *testing.T) {
	// a's answer holds the thread until the cancel; b answers at once.
	a, b := chatInstancesPaced(t, holds, 0)
	onA, onB := dialChat(t, a), dialChat(t, b)
	thread := fmt.Sprintf("busy-across-%d", time.Now().UnixNano())
	onA.send(`{"type":"chat","message":"Tell me everything","data":[],"thread_id":"` + thread + `"}`)
	require.Equal(t, "session_started", onA.next()["type"])
	got := chat(t, onB, "Me too", thread)
	assert.Equal(t, "thread_busy", got.errCode)
	onA.send(`{"type":"cancel"}`)
	end := onA.nextOf("end")
	assert.Equal(t, true, end["cancelled"])

	// Released: the other instance may answer now.
	again := chat(t, onB, "Now?", thread)
	assert.Empty(t, again.errCode)
	assert.NotEmpty(t, again.messageID, "answered and stored")
}

func TestAPIRefusals(t *testing.T) {
	a, b := chatInstances(t, 0)
	good := csrfToken(t, a)
	body := `{"thread_id":"whatever"}`
	tests := []struct {
		name, key, csrf string
		status          int
	}{
		{"no key", "", good, 401},
		{"wrong key", "not-the-key", good, 401},
		{"no CSRF token", apiKey, "", 403},
		{"tampered CSRF token", apiKey, tamper(good), 403},
		{"CSRF token of another secret", apiKey, otherSecretToken(t), 403},
		{"valid on another instance", apiKey, good, 404}, // passes the checks: unknown thread
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, m := api(t, b, "/api/thread/history", tt.key, tt.csrf, body)
			assert.Equal(t, tt.status, status, "%v", m)
			assert.NotEmpty(t, m["error"])
		})
	}
	status, _ := api(t, a, "/api/thread/history", apiKey, good, `{"thread_id":`)
	assert.Equal(t, 400, status)
	status, _ = api(t, a, "/api/thread/history", apiKey, good, `{"thread_id":""}`)
	assert.Equal(t, 400, status)
	status, _ = api(t, a, "/api/thread/history", apiKey, good, `{"thread_id":"`+strings.Repeat("x", 2<<20)+`"}`)
	assert.Equal(t, 413, status)
}

// tamper flips one character of a token.
func tamper(token string) string {
	b := []byte(token)
	i := len(b) / 2
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(bytes.Clone(b))
}

// otherSecretToken gets a token from an instance with another secret.
func otherSecretToken(t *testing.T) string {
	t.Helper()
	cfg := defaults(t)
	cfg.Auth.CSRFSecretKey = "a-completely-different-csrf-secret-0123456789"
	return csrfToken(t, start(t, cfg))
}
