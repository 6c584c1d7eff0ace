package web_test

import (
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/local"
	"github.com/wsserver/wsserver/adapters/memory"
	"github.com/wsserver/wsserver/adapters/web"
	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/core/logctx"
)

// ctxLogger logs into logs as cmd/wsserver does: JSON, through the
// handler that adds the context's ids.
func ctxLogger(logs *syncBuffer) *slog.Logger {
	return slog.New(logctx.NewHandler(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
}

// logLine waits for the line logged with msg and returns it, decoded, with
// its raw text.
func logLine(t *testing.T, logs *syncBuffer, msg string) (map[string]any, string) {
	t.Helper()
	var line map[string]any
	var raw string
	require.Eventually(t, func() bool {
		for _, l := range strings.Split(logs.String(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
				line, raw = m, l
				return true
			}
		}
		return false
	}, wait, 10*time.Millisecond, "no line %q", msg)
	return line, raw
}

// A chat's lines, the conversation's as the edge's, carry the endpoint,
// the connection and the thread, each once, through the context: neither
// passes them by hand.
func TestChatLogLinesCarryTheConnectionAndTheThread(t *testing.T) {
	var logs syncBuffer
	f := newFixture(t, func(c *web.Config) {
		appdata, err := local.LoadAppdata("")
		must(err)
		model, err := local.NewModel(local.ModelConfig{})
		must(err)
		guard, err := local.NewGuardrail(local.GuardrailConfig{Rules: appdata.Guardrail})
		must(err)
		esc, err := local.NewEscalation(appdata.Escalation)
		must(err)
		c.Log = ctxLogger(&logs)
		c.Chat, err = conversation.New(conversation.Config{
			Store: failingSaves{memory.NewThreads(0)}, Lock: memory.NewLock(), Model: model, Guardrail: guard, Escalation: esc,
			Log: c.Log,
		})
		must(err)
	})
	c, err := f.dial(t, "/ws/chat/", nil)
	require.NoError(t, err)
	send(t, c, chatMsg("Hello", "log-thread"))
	started := recv(t, c)
	require.Equal(t, "session_started", started["type"])
	require.NotEmpty(t, started["connection_id"])
	for recv(t, c)["type"] != "error" { // the answer's tokens, then: not saved
	}

	for _, msg := range []string{
		"turn not saved",         // logged by the conversation
		"chat refused or failed", // logged by the edge
	} {
		line, raw := logLine(t, &logs, msg)
		assert.Equal(t, "chat", line["endpoint"], raw)
		assert.Equal(t, started["connection_id"], line["connection_id"], raw)
		assert.Equal(t, "log-thread", line["thread_id"], raw)
		for _, k := range []string{"endpoint", "connection_id", "thread_id"} {
			assert.Equal(t, 1, strings.Count(raw, `"`+k+`":`), raw)
		}
	}
	line, raw := logLine(t, &logs, "turn not saved")
	assert.NotEmpty(t, line["run_id"], raw)
	assert.NotContains(t, logs.String(), "Hello", "a user's text is not an id")
}

// A session socket's lines carry the endpoint, the session and the
// connection.
func TestSessionLogLinesCarryTheSessionAndTheConnection(t *testing.T) {
	var logs syncBuffer
	f := newFixture(t, func(c *web.Config) { c.Log = ctxLogger(&logs) })
	c, err := f.dial(t, "/ws/session/log-session/", nil)
	require.NoError(t, err)
	send(t, c, `{"type":"hello","user_type":"admin","client_type":"web"}`)
	ok := recv(t, c)
	require.Equal(t, "hello_ok", ok["type"])
	require.NotEmpty(t, ok["connection_id"])
	require.NoError(t, c.Close())

	line, raw := logLine(t, &logs, "socket closed")
	assert.Equal(t, "session", line["endpoint"], raw)
	assert.Equal(t, "log-session", line["session_id"], raw)
	assert.Equal(t, ok["connection_id"], line["connection_id"], raw)
}
