package conversation_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/core/protocol"
	"github.com/wsserver/wsserver/ports"
)

const thread = "thread-1"

var (
	started    = conversation.EventStarted
	tokens     = conversation.EventToken
	escalation = conversation.EventEscalation
	end        = conversation.EventEnd
	errorEvent = conversation.EventError
)

func TestGraph(t *testing.T) {
	tests := []struct {
		name        string
		message     string
		scripts     []script
		whole       bool
		maxRewrites int

		wantTokens   []string
		wantKinds    []conversation.EventKind
		wantReason   ports.EscalationReason // escalation decided, if any
		wantNodes    []string
		wantRewrites []ports.Rewrite // what the model was told on each rewrite
		wantChecked  []string        // texts the guardrail saw
	}{
		{
			name:        "passes the first time",
			message:     "hello",
			scripts:     []script{{pieces: []string{"Hello", " there.", " How", " can I", " help?"}, usage: ports.Usage{InputTokens: 7, OutputTokens: 5}}},
			wantTokens:  []string{"Hello", " there.", " How", " can I", " help?"},
			wantKinds:   []conversation.EventKind{started, tokens, end},
			wantNodes:   []string{"load", "escalation_check", "generate", "guardrail", "respond"},
			wantChecked: []string{"Hello there.", " How can I help?"},
		},
		{
			name:    "fails, then passes after a rewrite",
			message: "tell me",
			scripts: []script{
				{pieces: []string{"BAD", " start."}},
				{pieces: []string{"A", " good", " start."}},
			},
			maxRewrites:  2,
			wantTokens:   []string{"A", " good", " start."},
			wantKinds:    []conversation.EventKind{started, tokens, end},
			wantNodes:    []string{"load", "escalation_check", "generate", "guardrail", "rewrite", "guardrail", "respond"},
			wantRewrites: []ports.Rewrite{{Said: "", Rejected: "BAD start.", Reason: "it says BAD"}},
		},
		{
			name:    "a later sentence fails after earlier ones were sent",
			message: "tell me more",
			scripts: []script{
				{pieces: []string{"One.", " Two", " is", " fine.", " Three", " is BAD.", " Four", " never", " comes."}},
				{pieces: []string{" Three", " is", " better."}},
			},
			maxRewrites: 1,
			wantTokens:  []string{"One.", " Two", " is", " fine.", " Three", " is", " better."},
			wantKinds:   []conversation.EventKind{started, tokens, end},
			wantNodes:   []string{"load", "escalation_check", "generate", "guardrail", "rewrite", "guardrail", "respond"},
			wantRewrites: []ports.Rewrite{
				{Said: "One. Two is fine.", Rejected: " Three is BAD.", Reason: "it says BAD"},
			},
			wantChecked: []string{"One.", " Two is fine.", " Three is BAD.", " Three is better."},
		},
		{
			name:    "fails until the rewrites are exhausted",
			message: "tell me something",
			scripts: []script{
				{pieces: []string{"Fine", " start.", " Then BAD."}},
				{pieces: []string{" Still", " BAD."}},
				{pieces: []string{" BAD", " again."}},
			},
			maxRewrites: 2,
			wantTokens:  []string{"Fine", " start.", " Sorry, a person will help you."},
			wantKinds:   []conversation.EventKind{started, tokens, escalation, end},
			wantReason:  ports.ReasonGuardrail,
			wantNodes: []string{"load", "escalation_check", "generate", "guardrail", "rewrite", "guardrail",
				"rewrite", "guardrail", "fallback", "respond", "escalate"},
			wantRewrites: []ports.Rewrite{
				{Said: "Fine start.", Rejected: " Then BAD.", Reason: "it says BAD"},
				{Said: "Fine start.", Rejected: " Still BAD.", Reason: "it says BAD"},
			},
		},
		{
			name:        "no rewrites allowed",
			message:     "tell me",
			scripts:     []script{{pieces: []string{"BAD."}}},
			wantTokens:  []string{"Sorry, a person will help you."},
			wantKinds:   []conversation.EventKind{started, tokens, escalation, end},
			wantReason:  ports.ReasonGuardrail,
			wantNodes:   []string{"load", "escalation_check", "generate", "guardrail", "fallback", "respond", "escalate"},
			wantChecked: []string{"BAD."},
		},
		{
			name:       "escalates before generating",
			message:    "let me talk to a human",
			scripts:    []script{{pieces: []string{"never", " said."}}},
			wantKinds:  []conversation.EventKind{started, escalation, end},
			wantReason: ports.ReasonUserRequested,
			wantNodes:  []string{"load", "escalation_check", "escalate"},
		},
		{
			name:        "a whole-answer guardrail sees the whole answer before anything is sent",
			message:     "hello",
			whole:       true,
			maxRewrites: 1,
			scripts: []script{
				{pieces: []string{"Good.", " Then", " BAD."}},
				{pieces: []string{"All", " good.", " Really."}},
			},
			wantTokens:   []string{"All", " good.", " Really."},
			wantKinds:    []conversation.EventKind{started, tokens, end},
			wantNodes:    []string{"load", "escalation_check", "generate", "guardrail", "rewrite", "guardrail", "respond"},
			wantRewrites: []ports.Rewrite{{Said: "", Rejected: "Good. Then BAD.", Reason: "it says BAD"}},
			wantChecked:  []string{"Good. Then BAD.", "All good. Really."},
		},
		{
			name:        "the provider's own guardrail intervened",
			message:     "hello",
			maxRewrites: 1,
			scripts: []script{
				{pieces: []string{"Fine.", " Sorry,", " the model cannot answer."}, stop: ports.StopGuardrailIntervened},
				{pieces: []string{" Fine", " again."}},
			},
			wantTokens: []string{"Fine.", " Fine", " again."},
			wantKinds:  []conversation.EventKind{started, tokens, end},
			wantNodes:  []string{"load", "escalation_check", "generate", "guardrail", "rewrite", "guardrail", "respond"},
			wantRewrites: []ports.Rewrite{{Said: "Fine.", Rejected: " Sorry, the model cannot answer.",
				Reason: "the model provider stopped the answer (guardrail_intervened)"}},
		},
		{
			name:    "max_tokens ends the answer where it stopped",
			message: "hello",
			scripts: []script{
				{pieces: []string{"Cut", " short"}, stop: ports.StopMaxTokens},
			},
			wantTokens: []string{"Cut", " short"},
			wantKinds:  []conversation.EventKind{started, tokens, end},
			wantNodes:  []string{"load", "escalation_check", "generate", "guardrail", "respond"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := newHarness(tt.scripts, tt.whole, tt.maxRewrites)
			require.NoError(t, err)
			var s sink
			res, err := h.conv.Run(context.Background(), conversation.Request{ThreadID: thread, Message: tt.message, Data: json.RawMessage(`[]`)}, s.emit)
			require.NoError(t, err)

			assert.Equal(t, tt.wantKinds, s.kinds())
			assert.Equal(t, tt.wantTokens, s.tokens())
			for _, tok := range s.tokens() {
				assert.NotContains(t, tok, "BAD", "text that failed the guardrail reached the client")
			}
			assert.Equal(t, tt.wantNodes, h.store.nodes(thread))
			if tt.wantChecked != nil {
				assert.Equal(t, tt.wantChecked, h.guard.checked)
			}

			var rewrites []ports.Rewrite
			for _, req := range h.model.requests() {
				assert.Equal(t, "be nice", req.System)
				assert.Equal(t, tt.message, req.Messages[len(req.Messages)-1].Content)
				assert.JSONEq(t, `[]`, string(req.Data))
				if req.Rewrite != nil {
					rewrites = append(rewrites, *req.Rewrite)
				}
			}
			assert.Equal(t, tt.wantRewrites, rewrites)

			th, err := h.store.Load(context.Background(), thread)
			require.NoError(t, err)
			require.NotEmpty(t, th.Messages)
			assert.Equal(t, ports.Message{ID: th.Messages[0].ID, Role: ports.RoleUser, Content: tt.message, CreatedAt: th.Messages[0].CreatedAt}, th.Messages[0])
			answer := strings.Join(s.tokens(), "")
			if tt.wantTokens != nil {
				require.Len(t, th.Messages, 2)
				assert.Equal(t, ports.RoleAssistant, th.Messages[1].Role)
				assert.Equal(t, answer, th.Messages[1].Content, "the stored answer is what was sent")
				assert.False(t, th.Messages[1].Cancelled)
				assert.Equal(t, th.Messages[1].ID, s.last().MessageID)
				assert.Equal(t, th.Messages[1].ID, res.MessageID)
			} else {
				assert.Len(t, th.Messages, 1, "no answer is stored")
			}

			assert.Equal(t, tt.wantReason != "", res.Escalated)
			assert.Equal(t, tt.wantReason, res.Reason)
			wantPublished := []ports.ChatEventKind{ports.ChatUserMessage}
			if tt.wantTokens != nil {
				wantPublished = append(wantPublished, ports.ChatAnswer)
			}
			if tt.wantReason != "" {
				require.Len(t, th.Escalations, 1)
				assert.Equal(t, tt.wantReason, th.Escalations[0].Reason)
				assert.NotEmpty(t, th.Escalations[0].Detail)
				for _, ev := range s.events {
					if ev.Kind == conversation.EventEscalation {
						assert.Equal(t, tt.wantReason, ev.Reason)
					}
				}
				wantPublished = append(wantPublished, ports.ChatEscalation)
			} else {
				assert.Empty(t, th.Escalations)
			}
			assert.Equal(t, wantPublished, h.pub.kinds())
			if tt.wantReason == ports.ReasonUserRequested {
				assert.Empty(t, h.model.requests(), "escalation before generation skips the model")
			}
			assert.False(t, h.lock.isHeld(thread), "the lock is released")
			assert.Equal(t, started, s.events[0].Kind)
			assert.Equal(t, thread, s.events[0].ThreadID)
		})
	}
}

func TestGraphPublishesWholeAnswer(t *testing.T) {
	h, err := newHarness([]script{{pieces: []string{"One.", " Two."}}}, false, 0)
	require.NoError(t, err)
	var s sink
	_, err = h.conv.Run(context.Background(), conversation.Request{ThreadID: thread, Message: "hi", Data: json.RawMessage(`{}`)}, s.emit)
	require.NoError(t, err)
	assert.Equal(t, []ports.ChatEvent{
		{Kind: ports.ChatUserMessage, Content: "hi"},
		{Kind: ports.ChatAnswer, Content: "One. Two."},
	}, h.pub.events)
}

func TestGraphContinuesAThread(t *testing.T) {
	h, err := newHarness([]script{{pieces: []string{"Answer."}}}, false, 0)
	require.NoError(t, err)
	for i, msg := range []string{"first", "second"} {
		var s sink
		_, err := h.conv.Run(context.Background(), conversation.Request{ThreadID: thread, Message: msg, Data: json.RawMessage(`[]`)}, s.emit)
		require.NoError(t, err)
		reqs := h.model.requests()
		assert.Len(t, reqs[i].Messages, 1+2*i, "the model sees the thread so far")
	}
	th, err := h.store.Load(context.Background(), thread)
	require.NoError(t, err)
	assert.Len(t, th.Messages, 4)
	assert.Equal(t, "web", th.Channel)
}

func TestGraphCancel(t *testing.T) {
	h, err := newHarness([]script{{pieces: []string{"First", " sentence.", " Second"}, block: true}}, false, 0)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The client cancels as soon as it sees the first sentence.
	s := sink{onTok: func(conversation.Event) { cancel() }}
	res, err := h.conv.Run(ctx, conversation.Request{ThreadID: thread, Message: "hi", Data: json.RawMessage(`[]`)}, s.emit)
	require.NoError(t, err)

	assert.Equal(t, []conversation.EventKind{started, tokens, end}, s.kinds())
	assert.Equal(t, []string{"First", " sentence."}, s.tokens(), "held text is not sent after a cancel")
	assert.True(t, s.last().Cancelled)
	assert.True(t, res.Cancelled)
	require.Len(t, h.model.ended, 1)
	require.ErrorIs(t, h.model.ended[0], context.Canceled, "the model call was stopped")

	th, err := h.store.Load(context.Background(), thread)
	require.NoError(t, err)
	require.Len(t, th.Messages, 2)
	assert.Equal(t, "First sentence.", th.Messages[1].Content, "only what was sent is stored")
	assert.True(t, th.Messages[1].Cancelled)
	assert.Equal(t, th.Messages[1].ID, s.last().MessageID)
	assert.Equal(t, []string{"load", "escalation_check", "generate", "cancelled"}, h.store.nodes(thread))
	assert.Equal(t, []ports.ChatEventKind{ports.ChatUserMessage}, h.pub.kinds(), "a cancelled answer is not published as an answer")
	assert.False(t, h.lock.isHeld(thread))
}

func TestGraphModelError(t *testing.T) {
	h, err := newHarness([]script{{pieces: []string{"Good.", " Partial"}, err: errors.New("bedrock: throttled")}}, false, 0)
	require.NoError(t, err)
	var s sink
	_, err = h.conv.Run(context.Background(), conversation.Request{ThreadID: thread, Message: "hi", Data: json.RawMessage(`[]`)}, s.emit)
	require.Error(t, err)
	require.ErrorContains(t, err, "throttled")

	assert.Equal(t, []conversation.EventKind{started, tokens, errorEvent}, s.kinds())
	assert.Equal(t, []string{"Good."}, s.tokens())
	assert.Equal(t, protocol.CodeInternal, s.last().Code)
	th, err := h.store.Load(context.Background(), thread)
	require.NoError(t, err)
	require.Len(t, th.Messages, 1, "the partial answer is not stored as an answer")
	assert.Equal(t, ports.RoleUser, th.Messages[0].Role)
	assert.Equal(t, []string{"load", "escalation_check", "generate", "failed"}, h.store.nodes(thread))
	assert.False(t, h.lock.isHeld(thread), "the lock is released")
	assert.Equal(t, 1, h.lock.released)
}

func TestGraphGuardrailError(t *testing.T) {
	h, err := newHarness([]script{{pieces: []string{"Unchecked.", " Text"}}}, false, 3)
	require.NoError(t, err)
	h.guard.err = errors.New("guardrail down")
	var s sink
	_, err = h.conv.Run(context.Background(), conversation.Request{ThreadID: thread, Message: "hi", Data: json.RawMessage(`[]`)}, s.emit)
	require.Error(t, err)
	assert.Equal(t, []conversation.EventKind{started, errorEvent}, s.kinds(), "text that could not be checked is not sent")
	assert.False(t, h.lock.isHeld(thread))
}

func TestGraphAnswerNotStored(t *testing.T) {
	h, err := newHarness([]script{{pieces: []string{"Fine."}}}, false, 0)
	require.NoError(t, err)
	h.store.failAppend = errors.New("database down")
	var s sink
	_, err = h.conv.Run(context.Background(), conversation.Request{ThreadID: thread, Message: "hi", Data: json.RawMessage(`[]`)}, s.emit)
	require.Error(t, err)
	assert.Equal(t, []conversation.EventKind{started, tokens, errorEvent}, s.kinds())
	assert.False(t, h.lock.isHeld(thread))
}

func TestGraphThreadBusy(t *testing.T) {
	h, err := newHarness([]script{{pieces: []string{"Never."}}}, false, 0)
	require.NoError(t, err)
	lease, err := h.lock.Acquire(context.Background(), thread, "another", time.Minute)
	require.NoError(t, err)

	var s sink
	_, err = h.conv.Run(context.Background(), conversation.Request{ThreadID: thread, Message: "hi", Data: json.RawMessage(`[]`)}, s.emit)
	require.ErrorIs(t, err, conversation.ErrThreadBusy)
	assert.Equal(t, []conversation.EventKind{errorEvent}, s.kinds(), "a refused chat gets no session_started")
	assert.Equal(t, protocol.CodeThreadBusy, s.last().Code)
	assert.Empty(t, h.model.requests())
	_, err = h.store.Load(context.Background(), thread)
	require.ErrorIs(t, err, conversation.ErrThreadNotFound, "nothing is stored")
	assert.True(t, h.lock.isHeld(thread), "the other lease is untouched")
	require.NoError(t, lease.Release(context.Background()))
}

func TestGraphOneAnswerPerThread(t *testing.T) {
	// A chat on the same thread while one streams is busy; another thread
	// is not.
	h, err := newHarness([]script{{pieces: []string{"Streaming."}, block: true}}, false, 0)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = h.conv.Run(ctx, conversation.Request{ThreadID: thread, Message: "hi", Data: json.RawMessage(`[]`)}, func(ev conversation.Event) {
			if ev.Kind == conversation.EventStarted {
				close(first)
			}
		})
	}()
	select {
	case <-first:
	case <-time.After(wait):
		t.Fatal("the first chat never started")
	}
	var s sink
	_, err = h.conv.Run(context.Background(), conversation.Request{ThreadID: thread, Message: "again", Data: json.RawMessage(`[]`)}, s.emit)
	require.ErrorIs(t, err, conversation.ErrThreadBusy)
	assert.Equal(t, []conversation.EventKind{errorEvent}, s.kinds())

	// Another thread is not busy; it is cancelled once started.
	otherCtx, cancelOther := context.WithCancel(context.Background())
	defer cancelOther()
	res, err := h.conv.Run(otherCtx, conversation.Request{ThreadID: "thread-2", Message: "hi", Data: json.RawMessage(`[]`)}, func(ev conversation.Event) {
		if ev.Kind == conversation.EventStarted {
			cancelOther()
		}
	})
	require.NoError(t, err, "another thread is not busy")
	assert.True(t, res.Cancelled)
	cancel()
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("the first chat never ended")
	}
	assert.False(t, h.lock.isHeld(thread))
}

func TestGraphLeaseLost(t *testing.T) {
	h, err := newHarness([]script{{pieces: []string{"Streaming", " on."}, block: true}}, false, 0,
		func(c *conversation.Config) { c.LockTTL = 3 * time.Millisecond })
	require.NoError(t, err)
	h.lock.renewErr = conversation.ErrLeaseLost
	var s sink
	_, err = h.conv.Run(context.Background(), conversation.Request{ThreadID: thread, Message: "hi", Data: json.RawMessage(`[]`)}, s.emit)
	require.ErrorIs(t, err, conversation.ErrLeaseLost)
	assert.Equal(t, []conversation.EventKind{started, errorEvent}, s.kinds(), "a run that lost its lock stops")
	require.Len(t, h.model.ended, 1)
	require.Error(t, h.model.ended[0], "the model call was stopped")
	th, err := h.store.Load(context.Background(), thread)
	require.NoError(t, err)
	assert.Len(t, th.Messages, 1)
	assert.False(t, h.lock.isHeld(thread))
}

func TestGraphRenewsWhileStreaming(t *testing.T) {
	// The model streams until the lock was renewed a few times.
	h, err := newHarness(nil, false, 0, func(c *conversation.Config) { c.LockTTL = 3 * time.Millisecond })
	require.NoError(t, err)
	h.model.scripts = []script{{pieces: []string{"Waiting."}, block: true}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		deadline := time.Now().Add(wait)
		for time.Now().Before(deadline) {
			h.lock.mu.Lock()
			n := h.lock.renewed
			h.lock.mu.Unlock()
			if n >= 3 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	var s sink
	res, err := h.conv.Run(ctx, conversation.Request{ThreadID: thread, Message: "hi", Data: json.RawMessage(`[]`)}, s.emit)
	require.NoError(t, err)
	assert.True(t, res.Cancelled)
	h.lock.mu.Lock()
	defer h.lock.mu.Unlock()
	assert.GreaterOrEqual(t, h.lock.renewed, 3)
	assert.False(t, h.lock.held[thread])
}

func TestGraphCheckpoints(t *testing.T) {
	h, err := newHarness([]script{
		{pieces: []string{"Ok.", " BAD."}, usage: ports.Usage{InputTokens: 10, OutputTokens: 2}},
		{pieces: []string{" Fine."}, usage: ports.Usage{InputTokens: 12, OutputTokens: 1}},
	}, false, 1)
	require.NoError(t, err)
	var s sink
	_, err = h.conv.Run(context.Background(), conversation.Request{ThreadID: thread, Message: "hi", Channel: "web", Data: json.RawMessage(`{"page":"faq"}`)}, s.emit)
	require.NoError(t, err)
	assert.Equal(t, ports.Usage{InputTokens: 22, OutputTokens: 3}, s.last().Usage)

	cps, err := h.store.Checkpoints(context.Background(), thread)
	require.NoError(t, err)
	require.Len(t, cps, 7)
	runID := cps[0].RunID
	for i, cp := range cps {
		assert.Equal(t, i, cp.Step)
		assert.Equal(t, runID, cp.RunID, "one run")
		var st map[string]any
		require.NoError(t, json.Unmarshal(cp.State, &st), "state is JSON")
		assert.Equal(t, cp.Node, st["node"])
		assert.Equal(t, thread, st["thread_id"])
	}
	var load, rewrite, respond struct {
		Data       json.RawMessage `json:"data"`
		Next       string          `json:"next"`
		Released   string          `json:"released"`
		Rewrites   int             `json:"rewrites"`
		Rejections []struct{ Text, Reason string }
		AnswerID   string `json:"answer_id"`
		Usage      struct {
			InputTokens int `json:"input_tokens"`
		} `json:"usage"`
	}
	require.NoError(t, json.Unmarshal(cps[0].State, &load))
	assert.JSONEq(t, `{"page":"faq"}`, string(load.Data))
	assert.Equal(t, "escalation_check", load.Next)
	require.NoError(t, json.Unmarshal(cps[4].State, &rewrite))
	assert.Equal(t, 1, rewrite.Rewrites)
	assert.Equal(t, "Ok. Fine.", rewrite.Released)
	require.Len(t, rewrite.Rejections, 1)
	assert.Equal(t, " BAD.", rewrite.Rejections[0].Text)
	require.NoError(t, json.Unmarshal(cps[6].State, &respond))
	assert.Equal(t, "done", respond.Next)
	assert.Equal(t, s.last().MessageID, respond.AnswerID)
	assert.Equal(t, 22, respond.Usage.InputTokens)
	assert.Empty(t, respond.Data, "data is stored once per run")
}

func TestGraphRefusesInvalidRequests(t *testing.T) {
	h, err := newHarness([]script{{pieces: []string{"x"}}}, false, 0)
	require.NoError(t, err)
	for _, req := range []conversation.Request{
		{ThreadID: "", Message: "hi"},
		{ThreadID: "a b", Message: "hi"},
		{ThreadID: thread, Message: "  "},
	} {
		var s sink
		_, err := h.conv.Run(context.Background(), req, s.emit)
		var ce *protocol.Error
		require.ErrorAs(t, err, &ce)
		assert.Equal(t, protocol.CodeInvalidMsg, ce.Code)
		assert.Equal(t, []conversation.EventKind{errorEvent}, s.kinds())
	}
}

func TestNewValidates(t *testing.T) {
	_, err := conversation.New(conversation.Config{})
	require.Error(t, err)
	_, err = newHarness(nil, false, -1)
	require.Error(t, err)
}

func TestHistoryAndSummarize(t *testing.T) {
	h, err := newHarness([]script{{pieces: []string{"Answer."}}}, false, 0)
	require.NoError(t, err)
	h.model.complete = "  A short summary.  "
	ctx := context.Background()
	_, err = h.conv.History(ctx, "unknown")
	require.ErrorIs(t, err, conversation.ErrThreadNotFound)
	_, err = h.conv.Summarize(ctx, "unknown")
	require.ErrorIs(t, err, conversation.ErrThreadNotFound)

	var s sink
	_, err = h.conv.Run(ctx, conversation.Request{ThreadID: thread, Message: "hi", Data: json.RawMessage(`[]`)}, s.emit)
	require.NoError(t, err)
	msgs, err := h.conv.History(ctx, thread)
	require.NoError(t, err)
	require.Len(t, msgs, 2)
	sum, err := h.conv.Summarize(ctx, thread)
	require.NoError(t, err)
	assert.Equal(t, "A short summary.", sum)
	reqs := h.model.requests()
	last := reqs[len(reqs)-1]
	assert.Equal(t, ports.PurposeSummary, last.Purpose)
	assert.Len(t, last.Messages, 2)
}

// TestGraphFreesTheThreadBeforeEnd: a client that sends its next message
// the moment it sees end (or an error) must not find its thread busy.
func TestGraphFreesTheThreadBeforeEnd(t *testing.T) {
	for _, sc := range []script{
		{pieces: []string{"Answer."}},
		{pieces: []string{"Good.", " Partial"}, err: errors.New("model failed")},
	} {
		h, err := newHarness([]script{sc}, false, 0)
		require.NoError(t, err)
		var heldAtEnd, sawEnd bool
		emit := func(ev conversation.Event) {
			if ev.Kind == conversation.EventEnd || ev.Kind == conversation.EventError {
				sawEnd, heldAtEnd = true, h.lock.isHeld(thread)
			}
		}
		_, _ = h.conv.Run(context.Background(), conversation.Request{ThreadID: thread, Message: "hi", Data: json.RawMessage(`[]`)}, emit)
		assert.True(t, sawEnd)
		assert.False(t, heldAtEnd, "the thread lock was still held when the last event went out")
	}
}

// TestGraphSavesTheTurnOnce: the store is read once and written once per
// turn, whatever the number of nodes.
func TestGraphSavesTheTurnOnce(t *testing.T) {
	h, err := newHarness([]script{{pieces: []string{"One.", " Two."}}}, false, 0)
	require.NoError(t, err)
	var s sink
	_, err = h.conv.Run(context.Background(), conversation.Request{ThreadID: thread, Message: "hi", Data: json.RawMessage(`[]`)}, s.emit)
	require.NoError(t, err)
	th, err := h.store.Load(context.Background(), thread)
	require.NoError(t, err)
	require.Len(t, th.Messages, 2)
	assert.Equal(t, "One. Two.", th.Messages[1].Content)
	assert.Equal(t, []string{"load", "escalation_check", "generate", "guardrail", "respond"}, h.store.nodes(thread))
	assert.Equal(t, 1, h.store.turns, "one SaveTurn per turn")
}
