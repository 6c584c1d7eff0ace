package web_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/local"
	"github.com/wsserver/wsserver/adapters/memory"
	"github.com/wsserver/wsserver/adapters/web"
	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
)

// answer reads one answer's events after a chat message: session_started,
// tokens, maybe an escalation, and end.
type answer struct {
	started map[string]any
	text    string
	tokens  int
	escal   map[string]any
	end     map[string]any
}

func readAnswer(t *testing.T, c *websocket.Conn) answer {
	t.Helper()
	var a answer
	for {
		m := recv(t, c)
		switch m["type"] {
		case "session_started":
			require.Nil(t, a.started, "two session_started")
			a.started = m
		case "token":
			require.NotNil(t, a.started, "token before session_started")
			a.text += m["content"].(string)
			a.tokens++
		case "escalation":
			a.escal = m
		case "end":
			require.NotNil(t, a.started, "end before session_started")
			a.end = m
			return a
		default:
			t.Fatalf("unexpected %v", m)
		}
	}
}

func chatMsg(message, thread string) string {
	s := `{"type":"chat","message":"` + message + `","channel":"web","data":[]`
	if thread != "" {
		s += `,"thread_id":"` + thread + `"`
	}
	return s + "}"
}

func TestChatStreamsAnAnswer(t *testing.T) {
	f := newFixture(t, nil)
	c, err := f.dial(t, "/ws/chat/", nil)
	require.NoError(t, err)

	send(t, c, chatMsg("Hello, how can you help?", ""))
	a := readAnswer(t, c)
	thread := a.started["thread_id"].(string)
	assert.Equal(t, thread, a.started["session_id"])
	assert.NotEmpty(t, a.started["connection_id"])
	assert.Greater(t, a.tokens, 3)
	assert.Contains(t, a.text, "Hello, how can you help?")
	assert.NotEmpty(t, a.end["message_id"])

	// A later chat with no thread_id continues the connection's thread.
	send(t, c, chatMsg("And then?", ""))
	assert.Equal(t, thread, readAnswer(t, c).started["thread_id"])
	// A named thread is used as given.
	send(t, c, chatMsg("Elsewhere", "my-thread.1"))
	assert.Equal(t, "my-thread.1", readAnswer(t, c).started["thread_id"])

	send(t, c, `{"type":"ping"}`)
	assert.Equal(t, map[string]any{"type": "pong"}, recv(t, c))
}

func TestChatRefusals(t *testing.T) {
	tests := []struct {
		name, msg, code string
	}{
		{"not JSON", `{"type":`, "invalid_json"},
		{"unknown type", `{"type":"shout"}`, "unknown_type"},
		{"no message", `{"type":"chat","data":[]}`, "invalid_message"},
		{"blank message", `{"type":"chat","message":"   ","data":[]}`, "invalid_message"},
		{"too long", `{"type":"chat","message":"` + strings.Repeat("ü", 101) + `","data":[]}`, "invalid_message"},
		{"web without data", `{"type":"chat","message":"hi","channel":"web"}`, "data_required"},
		{"web with null data", `{"type":"chat","message":"hi","data":null}`, "data_required"},
		{"bad thread id", `{"type":"chat","message":"hi","data":[],"thread_id":"a b"}`, "invalid_message"},
	}
	f := newFixture(t, func(c *web.Config) { c.MaxMessageChars = 100 })
	c, err := f.dial(t, "/ws/chat/", nil)
	require.NoError(t, err)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			send(t, c, tt.msg)
			m := recv(t, c) // only the error: no session_started
			assert.Equal(t, "error", m["type"], "%v", m)
			assert.Equal(t, tt.code, m["code"])
			assert.NotEmpty(t, m["message"])
		})
	}
	// The socket is still open and serving.
	send(t, c, `{"type":"ping"}`)
	assert.Equal(t, "pong", recv(t, c)["type"])
}

func TestEscalationEndsTheConversation(t *testing.T) {
	f := newFixture(t, nil)
	c, err := f.dial(t, "/ws/chat/", nil)
	require.NoError(t, err)
	send(t, c, chatMsg("I want to speak to a human please", ""))
	a := readAnswer(t, c)
	require.NotNil(t, a.escal)
	assert.Equal(t, true, a.escal["should_escalate"])
	assert.Equal(t, "user_requested", a.escal["reason"])
	_, err = readFrame(t, c)
	var ce *websocket.CloseError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, websocket.CloseNormalClosure, ce.Code)
	assert.Equal(t, "escalation", ce.Text)
}

func slowChat(delay time.Duration) func(*web.Config) {
	return func(c *web.Config) {
		c.Chat = newChatOn(c, delay)
	}
}

func TestCancelStopsTheAnswer(t *testing.T) {
	f := newFixture(t, slowChat(20*time.Millisecond))
	c, err := f.dial(t, "/ws/chat/", nil)
	require.NoError(t, err)
	send(t, c, chatMsg("Tell me a long story", ""))
	assert.Equal(t, "session_started", recv(t, c)["type"])
	send(t, c, `{"type":"cancel"}`)
	for {
		m := recv(t, c)
		if m["type"] == "end" {
			assert.Equal(t, true, m["cancelled"])
			return
		}
		require.Equal(t, "token", m["type"], "%v", m)
	}
}

func TestThreadBusy(t *testing.T) {
	f := newFixture(t, slowChat(20*time.Millisecond))
	one, err := f.dial(t, "/ws/chat/", nil)
	require.NoError(t, err)
	two, err := f.dial(t, "/ws/chat/", nil)
	require.NoError(t, err)

	send(t, one, chatMsg("First question", "busy-thread"))
	assert.Equal(t, "session_started", recv(t, one)["type"])

	// The same connection, while its answer streams.
	send(t, one, chatMsg("Second question", "other-thread"))
	// Another connection, on the same thread.
	send(t, two, chatMsg("Meanwhile", "busy-thread"))
	assert.Equal(t, "thread_busy", recv(t, two)["code"])
	for {
		m := recv(t, one)
		if m["type"] == "error" {
			assert.Equal(t, "thread_busy", m["code"])
			break
		}
		require.Equal(t, "token", m["type"], "%v", m)
	}
	send(t, one, `{"type":"cancel"}`)
}

func TestChatEventsReachTheSession(t *testing.T) {
	f := newFixture(t, nil)
	listener := f.join(t, "watched-thread", "agent")
	c, err := f.dial(t, "/ws/chat/", nil)
	require.NoError(t, err)
	send(t, c, chatMsg("Is anyone watching?", "watched-thread"))
	a := readAnswer(t, c)

	user := recv(t, listener)
	assert.Equal(t, "chat_event", user["type"])
	assert.Equal(t, "watched-thread", user["thread_id"])
	assert.Equal(t, map[string]any{"kind": "user_message", "content": "Is anyone watching?"}, user["event"])
	ans := recv(t, listener)
	assert.Equal(t, map[string]any{"kind": "answer", "content": a.text}, ans["event"])
}

func TestDrainLetsAnswersFinish(t *testing.T) {
	f := newFixture(t, slowChat(5*time.Millisecond))
	busy, err := f.dial(t, "/ws/chat/", nil)
	require.NoError(t, err)
	idle, err := f.dial(t, "/ws/chat/", nil)
	require.NoError(t, err)
	send(t, busy, chatMsg("A question", ""))
	assert.Equal(t, "session_started", recv(t, busy)["type"])

	f.srv.Drain()
	closed := make(chan error, 1)
	go func() { closed <- f.srv.CloseChats(context.Background()) }()
	assert.Equal(t, websocket.CloseServiceRestart, closeCode(t, idle))
	var ended bool
	require.NoError(t, busy.SetReadDeadline(time.Now().Add(wait)))
	for {
		p, err := readFrame(t, busy)
		if err != nil {
			var ce *websocket.CloseError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, websocket.CloseServiceRestart, ce.Code)
			break
		}
		if strings.Contains(string(p), `"type":"end"`) {
			assert.NotContains(t, string(p), `"cancelled":true`)
			ended = true
		}
	}
	assert.True(t, ended, "the streaming answer finished before the close")
	require.NoError(t, <-closed)
}

// gatedStore holds SaveTurn until the test opens the gate.
type gatedStore struct {
	ports.ThreadStore
	entered chan struct{}
	gate    chan struct{}
}

func (g *gatedStore) SaveTurn(ctx context.Context, t ports.Turn) error {
	close(g.entered)
	<-g.gate
	return g.ThreadStore.SaveTurn(ctx, t)
}

// gatedChat is a fixture whose answers stream slowly and whose saves wait
// for the gate, logging into logs; change edits the config further.
func gatedChat(t *testing.T, store *gatedStore, logs *syncBuffer, change func(*web.Config)) *fixture {
	t.Helper()
	return newFixture(t, func(c *web.Config) {
		appdata, err := local.LoadAppdata("")
		must(err)
		model, err := local.NewModel(local.ModelConfig{TokenDelay: 5 * time.Millisecond})
		must(err)
		guard, err := local.NewGuardrail(local.GuardrailConfig{Rules: appdata.Guardrail})
		must(err)
		esc, err := local.NewEscalation(appdata.Escalation)
		must(err)
		c.Chat, err = conversation.New(conversation.Config{
			Store: store, Lock: memory.NewLock(), Model: model, Guardrail: guard, Escalation: esc,
		})
		must(err)
		c.Log = slog.New(slog.NewJSONHandler(logs, nil))
		if change != nil {
			change(c)
		}
	})
}

// leaveMidAnswer starts an answer, leaves, and waits until its save has
// started (and is held at the gate); it returns the answer's thread.
func leaveMidAnswer(t *testing.T, f *fixture, store *gatedStore) string {
	t.Helper()
	c, err := f.dial(t, "/ws/chat/", nil)
	require.NoError(t, err)
	send(t, c, chatMsg("A question", ""))
	started := recv(t, c)
	require.Equal(t, "session_started", started["type"])
	require.NoError(t, c.Close()) // the client leaves mid-answer: it is cancelled and saved
	select {
	case <-store.entered:
	case <-time.After(wait):
		t.Fatal("the cancelled answer was never saved")
	}
	require.Eventually(t, func() bool { return openChats(t, f) == 0 }, wait, 10*time.Millisecond)
	return started["thread_id"].(string)
}

func newGatedStore() *gatedStore {
	return &gatedStore{ThreadStore: memory.NewThreads(0), entered: make(chan struct{}), gate: make(chan struct{})}
}

// An answer whose socket is gone may still be saving: the drain must not
// report done while it does, or the stores would close under it.
func TestDrainWaitsForAnswersBeingSaved(t *testing.T) {
	store := newGatedStore()
	var logs syncBuffer
	f := gatedChat(t, store, &logs, func(c *web.Config) { c.SaveWait = time.Millisecond })
	leaveMidAnswer(t, f, store)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	require.Error(t, f.srv.CloseChats(ctx))
	close(store.gate)
	require.NoError(t, f.srv.CloseChats(context.Background()))
}

// Past the grace, the answers are cancelled, and CloseChats waits for
// them to finish saving what they sent before it returns (and the stores
// close); the turn is stored whole.
func TestCloseChatsWaitsForCancelledAnswersToSave(t *testing.T) {
	store := newGatedStore()
	var logs syncBuffer
	f := gatedChat(t, store, &logs, func(c *web.Config) { c.SaveWait = wait })
	thread := leaveMidAnswer(t, f, store)

	over, cancel := context.WithCancel(context.Background())
	cancel() // the grace is over
	done := make(chan error, 1)
	go func() { done <- f.srv.CloseChats(over) }()
	require.Eventually(t, func() bool {
		return strings.Contains(logs.String(), "grace period over: answers cancelled, waiting for them to finish saving")
	}, wait, 10*time.Millisecond, "CloseChats did not wait for the answer being saved")
	close(store.gate)
	require.NoError(t, <-done)
	assert.Contains(t, logs.String(), "the cancelled answers finished saving")

	history, err := store.History(context.Background(), thread)
	require.NoError(t, err)
	require.Len(t, history, 2, "the question and the cancelled answer are stored")
	assert.Equal(t, "A question", history[0].Content)
}

// An answer that does not finish saving within SaveWait is abandoned, and
// its thread is named in the log and the error.
func TestCloseChatsAbandonsAnswersThatDoNotSave(t *testing.T) {
	store := newGatedStore()
	t.Cleanup(func() { close(store.gate) })
	var logs syncBuffer
	f := gatedChat(t, store, &logs, func(c *web.Config) { c.SaveWait = time.Millisecond })
	thread := leaveMidAnswer(t, f, store)

	over, cancel := context.WithCancel(context.Background())
	cancel()
	err := f.srv.CloseChats(over)
	require.Error(t, err)
	assert.Contains(t, err.Error(), thread)
	assert.Contains(t, logs.String(), "answers abandoned while saving: their turns may be lost")
	assert.Contains(t, logs.String(), thread)
}

// openChats reads the chat sockets gauge from /metrics.
func openChats(t *testing.T, f *fixture) int {
	t.Helper()
	resp, err := http.Get(f.http.URL + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, `wsserver_sockets_open{endpoint="chat"} `); ok {
			return int(v[0] - '0')
		}
	}
	return -1
}

// failingSaves is a thread store whose every SaveTurn fails.
type failingSaves struct{ ports.ThreadStore }

func (failingSaves) SaveTurn(context.Context, ports.Turn) error {
	return errors.New("disk full")
}

// An escalated answer whose turn cannot be saved still ends the
// conversation: the client is told the turn was not saved, then the socket
// closes with 1000 "escalation" as for any escalation.
func TestEscalationEndsTheConversationWhenTheSaveFails(t *testing.T) {
	f := newFixture(t, func(c *web.Config) {
		appdata, err := local.LoadAppdata("")
		must(err)
		model, err := local.NewModel(local.ModelConfig{})
		must(err)
		guard, err := local.NewGuardrail(local.GuardrailConfig{Rules: appdata.Guardrail})
		must(err)
		esc, err := local.NewEscalation(appdata.Escalation)
		must(err)
		c.Chat, err = conversation.New(conversation.Config{
			Store: failingSaves{memory.NewThreads(0)}, Lock: memory.NewLock(), Model: model, Guardrail: guard, Escalation: esc,
		})
		must(err)
	})
	c, err := f.dial(t, "/ws/chat/", nil)
	require.NoError(t, err)
	send(t, c, chatMsg("I want to speak to a human please", ""))
	var sawEscalation, sawError bool
	require.NoError(t, c.SetReadDeadline(time.Now().Add(wait)))
	for {
		p, err := readFrame(t, c)
		if err != nil {
			var ce *websocket.CloseError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, websocket.CloseNormalClosure, ce.Code)
			assert.Equal(t, "escalation", ce.Text)
			break
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal(p, &m))
		switch m["type"] {
		case "escalation":
			sawEscalation = true
		case "error":
			sawError = true
		}
	}
	assert.True(t, sawEscalation, "the client was told of the escalation")
	assert.True(t, sawError, "the client was told the turn was not saved")
}
