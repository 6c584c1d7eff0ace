package conversation_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/core/protocol"
	"github.com/wsserver/wsserver/ports"
)

// fakeRuns is an in-process ports.RunControl.
type fakeRuns struct {
	mu   sync.Mutex
	runs map[string]func(ports.StopMode)
}

func (f *fakeRuns) Register(threadID string, stop func(ports.StopMode)) (<-chan struct{}, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.runs == nil {
		f.runs = make(map[string]func(ports.StopMode))
	}
	f.runs[threadID] = stop
	live := make(chan struct{})
	close(live)
	return live, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.runs, threadID)
	}
}

func (f *fakeRuns) Stop(_ context.Context, threadID string, mode ports.StopMode) (bool, error) {
	if !mode.Valid() {
		return false, ports.ErrInvalidStopMode
	}
	f.mu.Lock()
	stop := f.runs[threadID]
	f.mu.Unlock()
	if stop != nil {
		stop(mode)
	}
	return stop != nil, nil
}

func (f *fakeRuns) registered(threadID string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.runs[threadID] != nil
}

func TestStopFromElsewhereCancelsTheAnswer(t *testing.T) {
	for _, mode := range []ports.StopMode{ports.StopCancel, ports.StopInterrupt} {
		t.Run(string(mode), func(t *testing.T) {
			runs := &fakeRuns{}
			h, err := newHarness([]script{{pieces: []string{"First", " sentence.", " Second"}, block: true}}, false, 0,
				func(c *conversation.Config) { c.Runs = runs })
			require.NoError(t, err)
			var delivered bool
			var stopErr error
			// Another socket, maybe on another instance, stops the thread
			// once the first sentence is out; the run's own context lives on.
			s := sink{onTok: func(conversation.Event) {
				if !delivered && stopErr == nil {
					delivered, stopErr = h.conv.Stop(context.Background(), thread, mode)
				}
			}}
			res, err := h.conv.Run(context.Background(), conversation.Request{ThreadID: thread, Message: "hi", Data: json.RawMessage(`[]`)}, s.emit)
			require.NoError(t, err)
			require.NoError(t, stopErr)
			assert.True(t, delivered)

			assert.Equal(t, []conversation.EventKind{started, tokens, end}, s.kinds())
			assert.True(t, s.last().Cancelled)
			assert.True(t, res.Cancelled)
			th, err := h.store.Load(context.Background(), thread)
			require.NoError(t, err)
			require.Len(t, th.Messages, 2)
			assert.Equal(t, "First sentence.", th.Messages[1].Content, "what was sent is stored")
			assert.True(t, th.Messages[1].Cancelled)
			assert.False(t, runs.registered(thread), "the run unregisters when it ends")
			assert.False(t, h.lock.isHeld(thread))

			delivered, err = h.conv.Stop(context.Background(), thread, mode)
			require.NoError(t, err)
			assert.False(t, delivered, "nothing runs on the thread any more")
		})
	}
}

func TestStopRefusesWhatItCannotRoute(t *testing.T) {
	h, err := newHarness(nil, false, 0, func(c *conversation.Config) { c.Runs = &fakeRuns{} })
	require.NoError(t, err)
	_, err = h.conv.Stop(context.Background(), "bad id!", ports.StopCancel)
	var pe *protocol.Error
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, protocol.CodeInvalidMsg, pe.Code)
	_, err = h.conv.Stop(context.Background(), thread, "pause")
	require.ErrorIs(t, err, ports.ErrInvalidStopMode)

	plain, err := newHarness(nil, false, 0)
	require.NoError(t, err)
	delivered, err := plain.conv.Stop(context.Background(), thread, ports.StopCancel)
	require.NoError(t, err)
	assert.False(t, delivered, "without run control nothing is routed")
}
