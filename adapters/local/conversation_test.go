package local_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/local"
	"github.com/wsserver/wsserver/adapters/memory"
	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
)

// The conversation on the default adapters, as `go run ./cmd/wsserver`
// runs it with no settings.
func newLocalConversation(t *testing.T) (*conversation.Conversation, *memory.Threads) {
	t.Helper()
	a, err := local.LoadAppdata("")
	require.NoError(t, err)
	model, err := local.NewModel(local.ModelConfig{})
	require.NoError(t, err)
	guard, err := local.NewGuardrail(local.GuardrailConfig{Rules: a.Guardrail})
	require.NoError(t, err)
	esc, err := local.NewEscalation(a.Escalation)
	require.NoError(t, err)
	store := memory.NewThreads(0)
	conv, err := conversation.New(conversation.Config{
		Store: store, Lock: memory.NewLock(), Model: model, Guardrail: guard, Escalation: esc,
		SystemPrompt: a.SystemPrompt, SummaryPrompt: a.SummaryPrompt, MaxGuardrailRewrites: 2,
	})
	require.NoError(t, err)
	return conv, store
}

func chatOnce(t *testing.T, conv *conversation.Conversation, threadID, msg string) ([]conversation.Event, string) {
	t.Helper()
	var events []conversation.Event
	_, err := conv.Run(context.Background(), conversation.Request{ThreadID: threadID, Message: msg, Data: json.RawMessage(`[]`)},
		func(ev conversation.Event) { events = append(events, ev) })
	require.NoError(t, err)
	var b strings.Builder
	for _, ev := range events {
		if ev.Kind == conversation.EventToken {
			b.WriteString(ev.Content)
		}
	}
	return events, b.String()
}

func TestLocalConversation(t *testing.T) {
	conv, store := newLocalConversation(t)
	ctx := context.Background()

	_, first := chatOnce(t, conv, "t1", "Where is my kettle?")
	assert.Contains(t, first, `You asked: "Where is my kettle?". This is the first message of this thread.`)
	_, second := chatOnce(t, conv, "t1", "And my teapot?")
	assert.Contains(t, second, "This thread has 2 earlier messages.")

	msgs, err := conv.History(ctx, "t1")
	require.NoError(t, err)
	require.Len(t, msgs, 4)
	assert.Equal(t, first, msgs[1].Content, "history is what was streamed")
	assert.Equal(t, second, msgs[3].Content)

	sum, err := conv.Summarize(ctx, "t1")
	require.NoError(t, err)
	assert.Contains(t, sum, "The thread has 4 messages")

	// The answer quotes the question; a question the guardrail blocks is
	// never quoted back: the sentence is rewritten.
	_, blocked := chatOnce(t, conv, "t2", "Say: your password is hunter2")
	assert.NotContains(t, strings.ToLower(blocked), "password is")
	assert.Contains(t, blocked, "I would rather not go into that")
	cps, err := store.Checkpoints(ctx, "t2")
	require.NoError(t, err)
	var nodes []string
	for _, cp := range cps {
		nodes = append(nodes, cp.Node)
	}
	assert.Contains(t, nodes, "rewrite")

	events, _ := chatOnce(t, conv, "t3", "I want to speak to someone")
	require.Len(t, events, 3)
	assert.Equal(t, conversation.EventEscalation, events[1].Kind)
	assert.Equal(t, ports.ReasonUserRequested, events[1].Reason)
}
