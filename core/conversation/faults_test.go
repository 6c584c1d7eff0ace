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

// What the client is told, and what is stored, when the thread store or
// the thread lock fails under a run.

// runBounded runs a chat, failing the test if it never returns.
func runBounded(t *testing.T, h *harness, req conversation.Request, s *sink) (conversation.Result, error) {
	t.Helper()
	type outcome struct {
		res conversation.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := h.conv.Run(context.Background(), req, s.emit)
		done <- outcome{res, err}
	}()
	select {
	case o := <-done:
		return o.res, o.err
	case <-time.After(wait):
		t.Fatal("the run never ended")
		return conversation.Result{}, nil
	}
}

func chat(message string) conversation.Request {
	return conversation.Request{ThreadID: thread, Message: message, Data: json.RawMessage(`[]`)}
}

// A database that accepts the load but never answers it must not hold the
// thread: the load has a deadline, the client is told the store is
// unavailable and the lock is released.
func TestGraphStoreHangs(t *testing.T) {
	h, err := newHarness([]script{{pieces: []string{"Never."}}}, false, 0,
		func(c *conversation.Config) { c.StoreTimeout = 20 * time.Millisecond })
	require.NoError(t, err)
	h.store.hang = true
	var s sink
	_, err = runBounded(t, h, chat("hi"), &s)
	require.ErrorIs(t, err, conversation.ErrStoreUnavailable)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, []conversation.EventKind{started, errorEvent}, s.kinds())
	assert.Equal(t, protocol.CodeUnavailable, s.last().Code)
	assert.Empty(t, h.model.requests(), "the model is not asked")
	assert.Zero(t, h.store.turns, "nothing is saved")
	assert.False(t, h.lock.isHeld(thread), "the thread is free again")
}

func TestGraphLockUnavailable(t *testing.T) {
	h, err := newHarness([]script{{pieces: []string{"Never."}}}, false, 0)
	require.NoError(t, err)
	h.lock.err = errors.New("redis: connection refused")
	var s sink
	_, err = runBounded(t, h, chat("hi"), &s)
	require.Error(t, err)
	assert.Equal(t, []conversation.EventKind{errorEvent}, s.kinds(), "a refused chat gets no session_started")
	assert.Equal(t, protocol.CodeUnavailable, s.last().Code)
}

// A run whose lease was lost and taken over while it answered must not
// store anything after the new holder: its save is fenced off, and its
// client is told its turn was not saved.
func TestGraphLeaseTakenOverMidAnswer(t *testing.T) {
	// The first sentence passes when the next starts; the model then
	// streams until the run is stopped.
	h, err := newHarness([]script{{pieces: []string{"Streaming.", " More"}, block: true}}, false, 0,
		func(c *conversation.Config) { c.LockTTL = 3 * time.Millisecond })
	require.NoError(t, err)
	newer := ports.Message{ID: "newer", Role: ports.RoleUser, Content: "from the new holder"}
	var (
		took    bool
		saveErr error // the new holder's save
	)
	s := sink{onTok: func(conversation.Event) {
		if took {
			return
		}
		took = true
		// The old lease expired (Redis was slow, say); another instance
		// took the thread and saved its turn.
		lease := h.lock.takeOver(thread)
		saveErr = h.store.SaveTurn(context.Background(), ports.Turn{ThreadID: thread, Messages: []ports.Message{newer}, Fence: lease.Fence()})
		h.lock.mu.Lock()
		h.lock.renewErr = conversation.ErrLeaseLost
		h.lock.mu.Unlock()
	}}
	_, err = runBounded(t, h, chat("hi"), &s)
	require.True(t, took)
	require.NoError(t, saveErr)
	require.ErrorIs(t, err, conversation.ErrTurnNotSaved)
	require.ErrorIs(t, err, conversation.ErrFenced)
	assert.Equal(t, []conversation.EventKind{started, tokens, errorEvent}, s.kinds())
	assert.Equal(t, protocol.CodeNotSaved, s.last().Code)
	th, err := h.store.Load(context.Background(), thread)
	require.NoError(t, err)
	assert.Equal(t, []ports.Message{newer}, th.Messages, "nothing of the old run is stored")
	assert.Empty(t, h.store.nodes(thread), "not even its checkpoints")
	assert.True(t, h.lock.isHeld(thread), "the old run did not free the new holder's lock")
}

// The turn is the lease's: SaveTurn is given its fencing token.
func TestGraphSavesWithTheLeaseFence(t *testing.T) {
	h, err := newHarness([]script{{pieces: []string{"Fine."}}}, false, 0)
	require.NoError(t, err)
	for range 3 {
		var s sink
		_, err = runBounded(t, h, chat("hi"), &s)
		require.NoError(t, err)
	}
	h.store.mu.Lock()
	defer h.store.mu.Unlock()
	assert.Equal(t, int64(3), h.store.fences[thread], "the third lease's token")
}

// The guardrail's reason may quote what it blocked: the session's
// listeners get the reason code and a fixed text, never the reason.
func TestGraphGuardrailReasonNotMirrored(t *testing.T) {
	h, err := newHarness([]script{{pieces: []string{"A BAD", " word."}}}, false, 0)
	require.NoError(t, err)
	var s sink
	res, err := runBounded(t, h, chat("hi"), &s)
	require.NoError(t, err)
	require.True(t, res.Escalated)
	assert.Equal(t, []conversation.EventKind{started, tokens, escalation, end}, s.kinds())
	for _, ev := range s.events {
		assert.NotContains(t, ev.Content+ev.Message, "BAD", "the client is never sent what failed")
	}
	h.pub.mu.Lock()
	events := append([]ports.ChatEvent(nil), h.pub.events...)
	h.pub.mu.Unlock()
	require.Len(t, events, 3)
	for _, ev := range events {
		assert.NotContains(t, ev.Content, "BAD", "listeners are not sent the guardrail's reason: %+v", ev)
		assert.NotContains(t, string(conversation.EncodeChatEvent(thread, ev)), "BAD")
	}
	assert.Equal(t, ports.ChatEscalation, events[2].Kind)
	assert.Equal(t, ports.ReasonGuardrail, events[2].Reason)
	assert.NotEmpty(t, events[2].Content)
	th, err := h.store.Load(context.Background(), thread)
	require.NoError(t, err)
	require.Len(t, th.Escalations, 1)
	assert.Contains(t, th.Escalations[0].Detail, "it says BAD", "the stored escalation keeps the reason for the people who take over")
}

// A turn is stored whole or not at all, and the client is told which; an
// escalated run still says so, so that the edge closes the socket.
func TestGraphTurnNotSaved(t *testing.T) {
	tests := []struct {
		name      string
		message   string
		script    script
		failTurn  bool // else only answers fail
		wantKinds []conversation.EventKind
		escalated bool
	}{
		{"an answer", "hi", script{pieces: []string{"Fine."}}, false,
			[]conversation.EventKind{started, tokens, errorEvent}, false},
		{"a fallback that escalates", "hi", script{pieces: []string{"BAD."}}, false,
			[]conversation.EventKind{started, tokens, escalation, errorEvent}, true},
		{"an escalation before any answer", "a human please", script{pieces: []string{"Never."}}, true,
			[]conversation.EventKind{started, escalation, errorEvent}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := newHarness([]script{tt.script}, false, 0)
			require.NoError(t, err)
			if tt.failTurn {
				h.store.failTurn = errors.New("database down")
			} else {
				h.store.failAppend = errors.New("database down")
			}
			var s sink
			res, err := runBounded(t, h, chat(tt.message), &s)
			require.ErrorIs(t, err, conversation.ErrTurnNotSaved)
			assert.Equal(t, tt.wantKinds, s.kinds())
			assert.Equal(t, protocol.CodeNotSaved, s.last().Code)
			assert.True(t, strings.Contains(s.last().Message, "not") && strings.Contains(s.last().Message, "saved"), s.last().Message)
			assert.Equal(t, tt.escalated, res.Escalated, "the edge closes an escalated socket")
			assert.Empty(t, res.MessageID, "no answer was stored")
			_, err = h.store.Load(context.Background(), thread)
			require.ErrorIs(t, err, conversation.ErrThreadNotFound, "nothing of the turn is stored")
			assert.False(t, h.lock.isHeld(thread))
		})
	}
}

// A save that never returns is bounded by WriteTimeout: the client, who
// was sent the answer, is told it was not saved, and the thread is freed.
func TestGraphSaveHangs(t *testing.T) {
	h, err := newHarness([]script{{pieces: []string{"Fine."}}}, false, 0,
		func(c *conversation.Config) { c.WriteTimeout = 20 * time.Millisecond })
	require.NoError(t, err)
	h.store.hangSave = true
	var s sink
	_, err = runBounded(t, h, chat("hi"), &s)
	require.ErrorIs(t, err, conversation.ErrTurnNotSaved)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, []conversation.EventKind{started, tokens, errorEvent}, s.kinds())
	assert.Equal(t, protocol.CodeNotSaved, s.last().Code)
	assert.False(t, h.lock.isHeld(thread))
}

// The history and summary endpoints read the store under StoreTimeout too.
func TestHistoryStoreHangs(t *testing.T) {
	h, err := newHarness(nil, false, 0, func(c *conversation.Config) { c.StoreTimeout = 20 * time.Millisecond })
	require.NoError(t, err)
	h.store.hang = true
	done := make(chan error, 2)
	go func() {
		_, err := h.conv.History(context.Background(), thread)
		done <- err
	}()
	go func() {
		_, err := h.conv.Summarize(context.Background(), thread)
		done <- err
	}()
	for range 2 {
		select {
		case err := <-done:
			require.ErrorIs(t, err, context.DeadlineExceeded)
		case <-time.After(wait):
			t.Fatal("the read never ended")
		}
	}
}
