package conversation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/memory"
	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
)

// resumer collects what a Resume emits.
type resumer struct {
	mu     sync.Mutex
	events []conversation.Event
	done   chan struct{}
}

func newResumer() *resumer { return &resumer{done: make(chan struct{})} }

func (r *resumer) emit(ev conversation.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	if ev.Kind == conversation.EventRaw && strings.Contains(string(ev.Raw), `"type":"end"`) {
		close(r.done)
	}
}

func (r *resumer) wait(t *testing.T) []conversation.Event {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the resume never ended")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]conversation.Event(nil), r.events...)
}

func resumableHarness(t *testing.T, log ports.AnswerLog) *harness {
	t.Helper()
	h, err := newHarness([]script{{pieces: []string{"One.", " Two.", " Three.", " Four.", " Five."}}}, false, 0,
		func(c *conversation.Config) { c.Answers = log })
	require.NoError(t, err)
	return h
}

func newAnswers(t *testing.T, cfg memory.AnswersConfig) *memory.Answers {
	t.Helper()
	l, err := memory.NewAnswers(cfg)
	require.NoError(t, err)
	return l
}

// A resume after k tokens gets exactly the rest of the answer, then its
// end: with the k tokens the client had, the answer that history stores.
func TestResumeMidAnswerGetsTheRest(t *testing.T) {
	for _, k := range []int{0, 1, 3, 5} {
		t.Run(fmt.Sprintf("k=%d", k), func(t *testing.T) {
			h := resumableHarness(t, newAnswers(t, memory.AnswersConfig{}))
			var s sink
			var started conversation.Event
			res := newResumer()
			s.onTok = func(ev conversation.Event) {
				if ev.Seq == int64(max(k, 1)) {
					_, err := h.conv.Resume(context.Background(), conversation.ResumeRequest{
						ThreadID: thread, MessageID: started.MessageID, Seq: int64(k), Epoch: started.Epoch,
					}, res.emit)
					require.NoError(t, err)
				}
			}
			emit := func(ev conversation.Event) {
				if ev.Kind == conversation.EventStarted {
					started = ev
				}
				s.emit(ev)
			}
			_, err := h.conv.Run(context.Background(), conversation.Request{ThreadID: thread, Message: "hi", Data: json.RawMessage(`[]`), Resumable: true}, emit)
			require.NoError(t, err)
			got := res.wait(t)

			require.Equal(t, conversation.EventResumed, got[0].Kind)
			assert.True(t, got[0].Recovered)
			assert.Equal(t, conversation.ResumeStreaming, got[0].State)
			assert.Equal(t, started.MessageID, got[0].MessageID)
			text := strings.Join(s.tokens()[:k], "")
			var seqs []int64
			for _, ev := range got[1 : len(got)-1] {
				require.Equal(t, conversation.EventToken, ev.Kind)
				text += ev.Content
				seqs = append(seqs, ev.Seq)
			}
			for i, seq := range seqs {
				assert.Equal(t, int64(k+i+1), seq, "contiguous from the client's seq")
			}
			th, err := h.store.Load(context.Background(), thread)
			require.NoError(t, err)
			assert.Equal(t, th.Messages[1].Content, text)
			assert.Equal(t, started.MessageID, th.Messages[1].ID, "session_started named the stored answer")
			end := got[len(got)-1]
			assert.JSONEq(t, `{"type":"end","message_id":"`+started.MessageID+`","usage":{"input_tokens":0,"output_tokens":0},"cancelled":false,"seq":5}`, string(end.Raw))
		})
	}
}

func TestResumeAfterTheEnd(t *testing.T) {
	h := resumableHarness(t, newAnswers(t, memory.AnswersConfig{}))
	var s sink
	_, err := h.conv.Run(context.Background(), conversation.Request{ThreadID: thread, Message: "hi", Data: json.RawMessage(`[]`), Resumable: true}, s.emit)
	require.NoError(t, err)
	started := s.events[0]

	t.Run("the end, when nothing was missed", func(t *testing.T) {
		res := newResumer()
		_, err := h.conv.Resume(context.Background(), conversation.ResumeRequest{ThreadID: thread, Seq: 5, Epoch: started.Epoch}, res.emit)
		require.NoError(t, err)
		got := res.wait(t)
		require.Len(t, got, 2)
		assert.Equal(t, conversation.Event{Kind: conversation.EventResumed, ThreadID: thread, MessageID: started.MessageID, Recovered: true, State: conversation.ResumeDone}, got[0])
	})
	t.Run("a snapshot when the epoch changed", func(t *testing.T) {
		res := newResumer()
		_, err := h.conv.Resume(context.Background(), conversation.ResumeRequest{ThreadID: thread, Seq: 2, Epoch: "another"}, res.emit)
		require.NoError(t, err)
		got := res.wait(t)
		require.Len(t, got, 3)
		assert.False(t, got[0].Recovered)
		assert.Equal(t, conversation.Event{Kind: conversation.EventSnapshot, MessageID: started.MessageID, Content: "One. Two. Three. Four. Five.", Seq: 5}, got[1])
		assert.Contains(t, string(got[2].Raw), `"type":"end"`)
	})
	t.Run("a snapshot when too much was missed", func(t *testing.T) {
		small := resumableHarness(t, newAnswers(t, memory.AnswersConfig{MaxEvents: 3}))
		var s sink
		_, err := small.conv.Run(context.Background(), conversation.Request{ThreadID: thread, Message: "hi", Data: json.RawMessage(`[]`), Resumable: true}, s.emit)
		require.NoError(t, err)
		res := newResumer()
		_, err = small.conv.Resume(context.Background(), conversation.ResumeRequest{ThreadID: thread, Seq: 1, Epoch: s.events[0].Epoch}, res.emit)
		require.NoError(t, err)
		got := res.wait(t)
		require.Len(t, got, 3)
		assert.False(t, got[0].Recovered)
		assert.Equal(t, "One. Two. Three. Four. Five.", got[1].Content)
	})
}

// The log holds an answer's end before its client is sent end: a resume
// the client sends on seeing end finds the answer done (PROTOCOL.md §3.9).
func TestResumeOnSeeingTheEndFindsTheAnswerDone(t *testing.T) {
	h := resumableHarness(t, newAnswers(t, memory.AnswersConfig{}))
	var started conversation.Event
	var seq int64
	res := newResumer()
	emit := func(ev conversation.Event) {
		switch ev.Kind {
		case conversation.EventStarted:
			started = ev
		case conversation.EventToken:
			seq = ev.Seq
		case conversation.EventEnd:
			_, err := h.conv.Resume(context.Background(), conversation.ResumeRequest{
				ThreadID: thread, MessageID: started.MessageID, Seq: seq, Epoch: started.Epoch,
			}, res.emit)
			assert.NoError(t, err)
		}
	}
	_, err := h.conv.Run(context.Background(), conversation.Request{ThreadID: thread, Message: "hi", Data: json.RawMessage(`[]`), Resumable: true}, emit)
	require.NoError(t, err)
	got := res.wait(t)
	require.Len(t, got, 2)
	assert.Equal(t, conversation.ResumeDone, got[0].State)
	assert.True(t, got[0].Recovered)
	assert.Contains(t, string(got[1].Raw), `"seq":5`)
}

func TestResumeOfAnAnswerTheLogDoesNotHave(t *testing.T) {
	for name, log := range map[string]ports.AnswerLog{"no log": nil, "a log": newAnswers(t, memory.AnswersConfig{})} {
		t.Run(name, func(t *testing.T) {
			h := resumableHarness(t, log)
			var s sink
			// Not resumable: nothing is logged.
			_, err := h.conv.Run(context.Background(), conversation.Request{ThreadID: thread, Message: "hi", Data: json.RawMessage(`[]`)}, s.emit)
			require.NoError(t, err)
			var got []conversation.Event
			stop, err := h.conv.Resume(context.Background(), conversation.ResumeRequest{ThreadID: thread}, func(ev conversation.Event) { got = append(got, ev) })
			require.NoError(t, err)
			stop()
			th, err := h.store.Load(context.Background(), thread)
			require.NoError(t, err)
			stored := th.Messages[1]
			assert.Equal(t, []conversation.Event{
				{Kind: conversation.EventResumed, ThreadID: thread, MessageID: stored.ID, State: conversation.ResumeDone},
				{Kind: conversation.EventSnapshot, MessageID: stored.ID, Content: stored.Content},
			}, got, "the stored answer is the snapshot")

			got = nil
			stop, err = h.conv.Resume(context.Background(), conversation.ResumeRequest{ThreadID: "never-answered"}, func(ev conversation.Event) { got = append(got, ev) })
			require.NoError(t, err)
			stop()
			assert.Equal(t, []conversation.Event{{Kind: conversation.EventResumed, ThreadID: "never-answered", State: conversation.ResumeUnknown}}, got)
			got = nil
			stop, err = h.conv.Resume(context.Background(), conversation.ResumeRequest{ThreadID: thread, MessageID: "no-such-answer"}, func(ev conversation.Event) { got = append(got, ev) })
			require.NoError(t, err)
			stop()
			assert.Equal(t, []conversation.Event{{Kind: conversation.EventResumed, ThreadID: thread, MessageID: "no-such-answer", State: conversation.ResumeUnknown}}, got)
			assert.Len(t, h.model.calls, 1, "a resume never starts a generation")
		})
	}
}

// countingLog counts the appends that carry entries.
type countingLog struct {
	ports.AnswerLog
	mu      sync.Mutex
	batches []int
}

func (l *countingLog) Append(ctx context.Context, key ports.AnswerKey, entries []ports.AnswerEntry) error {
	if len(entries) > 0 {
		l.mu.Lock()
		l.batches = append(l.batches, len(entries))
		l.mu.Unlock()
	}
	return l.AnswerLog.Append(ctx, key, entries)
}

// AnswerLogInterval: a streaming answer's log is written once an
// interval, the tokens sent meanwhile in one append, and the end at once;
// a resume after the end still gets every token. In virtual time: ten
// tokens 20 ms apart, an interval of 1 s, so one append for the first
// token and one at the end for the rest; without an interval, one append
// a token.
func TestAnswerLogIntervalBatchesTheTokens(t *testing.T) {
	pieces := []string{"One", " two", " three", " four", " five", " six", " seven", " eight", " nine", " ten."}
	tests := []struct {
		name     string
		interval time.Duration
		check    func(t *testing.T, batches []int)
	}{
		{"1s: the first token, then the rest with the end", time.Second, func(t *testing.T, batches []int) {
			t.Helper()
			assert.Equal(t, []int{1, len(pieces)}, batches, "the second append holds nine tokens and the final entry")
		}},
		{"none: a token an append", 0, func(t *testing.T, batches []int) {
			t.Helper()
			assert.GreaterOrEqual(t, len(batches), len(pieces), "%v", batches)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				log := &countingLog{AnswerLog: newAnswers(t, memory.AnswersConfig{})}
				h, err := newHarness([]script{{pieces: pieces, gap: 20 * time.Millisecond}}, false, 0, func(c *conversation.Config) {
					c.Answers, c.AnswerLogInterval = log, tt.interval
				})
				require.NoError(t, err)
				var started conversation.Event
				var s sink
				emit := func(ev conversation.Event) {
					if ev.Kind == conversation.EventStarted {
						started = ev
					}
					s.emit(ev)
				}
				_, err = h.conv.Run(context.Background(), conversation.Request{ThreadID: thread, Message: "hi", Data: json.RawMessage(`[]`), Resumable: true}, emit)
				require.NoError(t, err)
				texts, _ := s.timedTokens()
				require.Equal(t, pieces, texts)
				log.mu.Lock()
				batches := append([]int(nil), log.batches...)
				log.mu.Unlock()
				tt.check(t, batches)

				res := newResumer()
				_, err = h.conv.Resume(context.Background(), conversation.ResumeRequest{ThreadID: thread, MessageID: started.MessageID, Seq: 0, Epoch: started.Epoch}, res.emit)
				require.NoError(t, err)
				got := res.wait(t)
				var resumed []string
				for _, ev := range got {
					if ev.Kind == conversation.EventToken {
						resumed = append(resumed, ev.Content)
					}
				}
				assert.Equal(t, pieces, resumed, "a resume from the start gets every token")
			})
		})
	}
}
