package conversation_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
)

// completer is a model whose Complete answers text or fails with err; it
// keeps the requests.
type completer struct {
	text string
	err  error
	reqs []ports.ChatRequest
}

func (m *completer) Stream(context.Context, ports.ChatRequest, func(string) error) (ports.Reply, error) {
	return ports.Reply{}, errors.New("completer: no streams")
}

func (m *completer) Complete(_ context.Context, req ports.ChatRequest) (ports.Reply, error) {
	m.reqs = append(m.reqs, req)
	return ports.Reply{Text: m.text, Stop: ports.StopEndTurn}, m.err
}

func TestClassifier(t *testing.T) {
	long := "Well, it is hard to say. " + strings.Repeat("On the one hand the user seems calm, ", 10) + "TAIL-NOT-LOGGED"
	for name, tc := range map[string]struct {
		answer     string
		escalate   bool
		detail     string
		unreadable bool
	}{
		"continue":                     {answer: "CONTINUE"},
		"continue, any case and space": {answer: "  continue.\n"},
		"continue, later lines":        {answer: "Continue\nThe user only asks about shipping."},
		"escalate with a reason":       {answer: "ESCALATE the user asks for a manager", escalate: true, detail: "the classifier decided a human should take over: the user asks for a manager"},
		"escalate, colon, lower case":  {answer: "escalate: repeated frustration\n", escalate: true, detail: "the classifier decided a human should take over: repeated frustration"},
		"escalate alone":               {answer: "ESCALATE", escalate: true, detail: "the classifier decided a human should take over"},
		"empty":                        {answer: "", unreadable: true},
		"escalated is not escalate":    {answer: "ESCALATED: yes", unreadable: true},
		"continue with a comment":      {answer: "CONTINUE because all is well", unreadable: true},
		"chatter first":                {answer: "I would say ESCALATE", unreadable: true},
		"markdown":                     {answer: "**ESCALATE** angry", unreadable: true},
		"long prose":                   {answer: long, unreadable: true},
	} {
		t.Run(name, func(t *testing.T) {
			var logs bytes.Buffer
			model := &completer{text: tc.answer}
			c := conversation.Classifier{Model: model, Log: slog.New(slog.NewTextHandler(&logs, nil))}
			history := []ports.Message{
				{Role: ports.RoleUser, Content: "Where is my order?"},
				{Role: ports.RoleAssistant, Content: ""},
				{Role: ports.RoleAssistant, Content: "It ships today."},
			}
			e, err := c.Detect(t.Context(), "I want to talk to a manager", history)
			require.NoError(t, err)
			assert.Equal(t, tc.escalate, e.Escalate)
			if tc.escalate {
				assert.Equal(t, ports.ReasonClassifier, e.Reason)
				assert.Equal(t, tc.detail, e.Detail)
			} else {
				assert.Equal(t, ports.Escalation{}, e)
			}
			if tc.unreadable {
				assert.Contains(t, logs.String(), "unreadable answer")
				assert.NotContains(t, logs.String(), "TAIL-NOT-LOGGED", "the answer is logged cut short")
			} else {
				assert.Empty(t, logs.String())
			}

			require.Len(t, model.reqs, 1)
			req := model.reqs[0]
			assert.Equal(t, ports.PurposeClassify, req.Purpose)
			assert.Equal(t, conversation.DefaultClassifierPrompt, req.System)
			require.Len(t, req.Messages, 3, "empty messages are left out, the new one is last")
			assert.Equal(t, "I want to talk to a manager", req.Messages[2].Content)
		})
	}
}

func TestClassifierWithoutLogger(t *testing.T) {
	c := conversation.Classifier{Model: &completer{text: "no idea"}, Prompt: "custom"}
	e, err := c.Detect(t.Context(), "hi", nil)
	require.NoError(t, err)
	assert.False(t, e.Escalate)
}

func TestClassifierError(t *testing.T) {
	boom := errors.New("throttled")
	var logs bytes.Buffer
	c := conversation.Classifier{Model: &completer{err: boom}, Log: slog.New(slog.NewTextHandler(&logs, nil))}
	_, err := c.Detect(t.Context(), "hi", nil)
	require.ErrorIs(t, err, boom)
	assert.True(t, strings.HasPrefix(err.Error(), "classify: "))
	assert.Contains(t, logs.String(), "escalation classifier failed", "logged: Detectors would skip it silently")

	// In Detectors, a failing classifier leaves the decision to the others.
	e, err := conversation.Detectors{c, conversation.Classifier{Model: &completer{text: "ESCALATE angry"}}}.Detect(t.Context(), "hi", nil)
	require.NoError(t, err)
	assert.True(t, e.Escalate)
}
