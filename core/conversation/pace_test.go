package conversation_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
)

// The pacing tests run in testing/synctest bubbles: the model's pace, the
// pacer's timer and every time.Now are virtual, so the times the events
// are emitted at are exact and no test sleeps.

// localAnswer is the local model's answer to wsbench's chat message on a
// new thread, as it streams it: sentences of 7, 8, 12 and 10 words.
var localAnswer = []string{
	"You", " asked:", ` "Hello,`, " how", " can", " you", ` help?".`,
	" This", " is", " the", " first", " message", " of", " this", " thread.",
	" This", " answer", " streams", " one", " word", " at", " a", " time,", " like", " a", " real", " model's.",
	" Cancel", " it", " whenever", " you", " like;", " what", " you", " saw", " is", " kept.",
}

// sentences returns the pieces of sentences of n[i] words, a word a piece.
func sentences(n ...int) []string {
	var out []string
	for i, words := range n {
		for w := range words {
			p := fmt.Sprintf(" s%dw%d", i+1, w+1)
			if w == words-1 {
				p += "."
			}
			out = append(out, p)
		}
	}
	out[0] = strings.TrimPrefix(out[0], " ")
	return out
}

// slowFrom returns the stalls of a model with no delay that waits gap
// before each of the pieces from i to n.
func slowFrom(i, n int, gap time.Duration) map[int]time.Duration {
	stall := map[int]time.Duration{}
	for ; i < n; i++ {
		stall[i] = gap
	}
	return stall
}

// sent returns when the model of s sends each piece, from start.
func sent(start time.Time, s script) []time.Time {
	out := make([]time.Time, len(s.pieces))
	at := start
	for i := range s.pieces {
		if i > 0 {
			at = at.Add(s.gap + s.stall[i])
		}
		out[i] = at
	}
	return out
}

// arrivals returns when each piece of s arrives: when it was sent, or
// later when it was delivered late.
func arrivals(start time.Time, s script) []time.Time {
	out := sent(start, s)
	for i := range out {
		out[i] = out[i].Add(s.late[i])
	}
	return out
}

// timedTokens returns the tokens of s and when each was emitted.
func (s *sink) timedTokens() ([]string, []time.Time) {
	var texts []string
	var at []time.Time
	for i, ev := range s.events {
		if ev.Kind == conversation.EventToken {
			texts = append(texts, ev.Content)
			at = append(at, s.at[i])
		}
	}
	return texts, at
}

func paceRequest() conversation.Request {
	return conversation.Request{ThreadID: thread, Message: "hi", Data: json.RawMessage(`[]`)}
}

func TestPacing(t *testing.T) {
	const gap = 20 * time.Millisecond
	tests := []struct {
		name       string
		model      script
		whole      bool
		maxStretch time.Duration // zero: the default

		// Paced, no gap is shorter than the model's. smooth: every gap
		// is within the model's gap plus MaxStretch; otherwise a gap may
		// exceed that only when its token went out the moment its
		// sentence passed: the guardrail held it, not the pacer.
		smooth bool
		// unpaced: every token goes out the moment its sentence passes;
		// pacedFrom: every token before this one does.
		unpaced   bool
		pacedFrom int
	}{
		{name: "the local model's answer at 50 tokens/s", model: script{pieces: localAnswer, gap: gap}, smooth: true},
		{name: "a longer sentence after shorter ones", model: script{pieces: sentences(7, 6, 9, 12, 10), gap: gap}, smooth: true},
		{name: "sentences of one length", model: script{pieces: sentences(10, 10, 10, 10), gap: gap}, smooth: true},
		{name: "the longest sentence first", model: script{pieces: sentences(15, 8, 3), gap: gap}, smooth: true},
		{name: "one-word sentences", model: script{pieces: sentences(1, 1, 1, 1, 1, 1), gap: gap}, smooth: true},
		{
			name:   "the model stalls between sentences",
			model:  script{pieces: sentences(8, 8, 8), gap: gap, stall: map[int]time.Duration{8: 300 * time.Millisecond}},
			smooth: true,
		},
		{
			name:   "a piece delivered late inside a sentence plays at its place",
			model:  script{pieces: localAnswer, gap: gap, late: map[int]time.Duration{10: 8 * time.Millisecond}},
			smooth: true,
		},
		{
			name:   "a piece delivered late at a sentence's end",
			model:  script{pieces: localAnswer, gap: gap, late: map[int]time.Duration{6: 8 * time.Millisecond, 14: 5 * time.Millisecond}},
			smooth: true,
		},
		{
			name:   "a piece delivered late at a sentence's start",
			model:  script{pieces: localAnswer, gap: gap, late: map[int]time.Duration{7: 8 * time.Millisecond, 15: 12 * time.Millisecond}},
			smooth: true,
		},
		{
			name:   "pieces delivered late together, in a burst",
			model:  script{pieces: localAnswer, gap: gap, late: map[int]time.Duration{9: 40 * time.Millisecond, 10: 20 * time.Millisecond, 20: 19 * time.Millisecond, 21: 1 * time.Millisecond}},
			smooth: true,
		},
		{
			name:   "late pieces in every sentence",
			model:  script{pieces: localAnswer, gap: gap, late: map[int]time.Duration{3: 5 * time.Millisecond, 10: 9 * time.Millisecond, 20: 3 * time.Millisecond, 30: 15 * time.Millisecond}},
			smooth: true,
		},
		{
			// The stall holds the whole sentence back: the gap shows
			// before its first token.
			name:  "the model stalls inside a sentence",
			model: script{pieces: sentences(8, 8, 8), gap: gap, stall: map[int]time.Duration{12: 300 * time.Millisecond}},
		},
		{
			// The first token goes out when the first sentence passes,
			// 60 ms in; the fourth cannot go before the second passes,
			// 220 ms in: no pacer spreads 160 ms over three gaps of the
			// model's 20 ms plus MaxStretch. Nor the third sentence over
			// the second's.
			name:  "sentences of 3, 8 and 15 words",
			model: script{pieces: sentences(3, 8, 15), gap: gap},
		},
		{
			// The first sentence comes at once, the rest 20 ms a word.
			// (Not smooth: the 8 gaps before the 12-word sentence cannot
			// build a lag that long from the 8-word one's.)
			name:      "a model that slows down is paced from its first slow sentence",
			model:     script{pieces: localAnswer, stall: slowFrom(7, len(localAnswer), gap)},
			pacedFrom: 7,
		},
		{name: "no model delay", model: script{pieces: localAnswer}, unpaced: true},
		{name: "a fast model is not paced", model: script{pieces: localAnswer, gap: time.Millisecond}, unpaced: true},
		{
			name:    "a model with no delay that stalls once is not paced",
			model:   script{pieces: localAnswer, stall: map[int]time.Duration{10: 100 * time.Millisecond}},
			unpaced: true,
		},
		{name: "a whole-answer guardrail is not paced", model: script{pieces: localAnswer, gap: gap}, whole: true, unpaced: true},
		{name: "pacing turned off", model: script{pieces: localAnswer, gap: gap}, maxStretch: -1, unpaced: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h, err := newHarness([]script{tt.model}, tt.whole, 0, func(c *conversation.Config) { c.MaxStretch = tt.maxStretch })
				require.NoError(t, err)
				start := time.Now()
				var s sink
				_, err = h.conv.Run(context.Background(), paceRequest(), s.emit)
				require.NoError(t, err)

				assert.Equal(t, []conversation.EventKind{started, tokens, end}, s.kinds())
				texts, at := s.timedTokens()
				require.Equal(t, tt.model.pieces, texts, "every piece goes out, in order")
				th, err := h.store.Load(context.Background(), thread)
				require.NoError(t, err)
				require.Len(t, th.Messages, 2)
				assert.Equal(t, strings.Join(texts, ""), th.Messages[1].Content, "the stored answer is what was sent")
				assert.Equal(t, at[len(at)-1], s.at[len(s.at)-1], "end follows the last token at once")

				// A token is released by the guardrail check of the text
				// it ends up in; longest is the longest time a sentence
				// took, from its first piece to its check.
				arrived, sentAt := arrivals(start, tt.model), sent(start, tt.model)
				released := make([]time.Time, len(arrived))
				longest := time.Duration(0)
				k := 0
				for c, text := range h.guard.checked {
					first := k
					for n := 0; n < len(text); k++ {
						n += len(texts[k])
						released[k] = h.guard.at[c]
					}
					longest = max(longest, h.guard.at[c].Sub(arrived[first]))
				}
				require.Equal(t, len(texts), k, "every token was checked")

				assert.Equal(t, released[0], at[0], "the first token goes out the moment the first sentence passes")
				stretch := tt.maxStretch
				if stretch == 0 {
					stretch = conversation.DefaultMaxStretch
				}
				for k := range at {
					assert.False(t, at[k].Before(released[k]), "token %d went out before its sentence passed", k)
					if tt.unpaced || k < tt.pacedFrom {
						assert.Equal(t, released[k], at[k], "token %d is not paced", k)
					}
					if k == 0 {
						continue
					}
					assert.False(t, at[k].Before(at[k-1]), "token %d went out before the one before it", k)
					got, model := at[k].Sub(at[k-1]), sentAt[k].Sub(sentAt[k-1])
					paced := !tt.unpaced && k > tt.pacedFrom
					if paced {
						assert.GreaterOrEqual(t, got, model, "gap before token %d: a burst; the model's is %v", k, model)
					}
					if tt.smooth && paced || !at[k].Equal(released[k]) {
						assert.LessOrEqual(t, got, model+stretch, "gap before token %d: the model's is %v", k, model)
					}
					// The last check is the one after the model's end.
					if paced && released[k].Equal(h.guard.at[len(h.guard.at)-1]) && !at[k].Equal(released[k]) {
						assert.Equal(t, model, got, "gap before token %d: the model is done, nothing is stretched", k)
					}
				}
				lag := at[len(at)-1].Sub(arrived[len(arrived)-1])
				assert.LessOrEqual(t, lag, 2*longest, "the lag grows to twice the longest sentence at most")
				if tt.model.gap == 0 && tt.model.stall == nil {
					assert.Equal(t, start, s.at[len(s.at)-1], "with no model delay, nothing waits")
				}
			})
		})
	}
}

func TestPacingCancel(t *testing.T) {
	const gap = 20 * time.Millisecond
	generated := []string{"load", "escalation_check", "generate", "cancelled"}
	tests := []struct {
		name      string
		model     script
		cancelAt  int // the client cancels on seeing this many tokens
		wantNodes []string
	}{
		{"while the model streams", script{pieces: localAnswer, gap: gap}, 10, generated},
		{
			// Like a provider's stream that notices the cancel only with
			// its next chunk, half a second later: the pacer does not
			// wait for it.
			"while the model is slow to stop",
			script{pieces: localAnswer, gap: gap, deaf: true, stall: map[int]time.Duration{20: 500 * time.Millisecond}},
			10, generated,
		},
		{
			"while the answer plays out after the model is done",
			script{pieces: localAnswer, gap: gap}, 30,
			[]string{"load", "escalation_check", "generate", "guardrail", "respond", "cancelled"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h, err := newHarness([]script{tt.model}, false, 0)
				require.NoError(t, err)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				n := 0
				var cancelledAt time.Time
				s := sink{onTok: func(conversation.Event) {
					if n++; n == tt.cancelAt {
						cancelledAt = time.Now()
						cancel()
					}
				}}
				res, err := h.conv.Run(ctx, paceRequest(), s.emit)
				require.NoError(t, err)

				texts, _ := s.timedTokens()
				assert.Len(t, texts, tt.cancelAt, "no token goes out after the cancel")
				assert.Equal(t, []conversation.EventKind{started, tokens, end}, s.kinds())
				assert.True(t, s.last().Cancelled)
				assert.True(t, res.Cancelled)
				if !tt.model.deaf {
					assert.Equal(t, cancelledAt, s.at[len(s.at)-1], "the cancel stops the answer at once")
				}

				th, err := h.store.Load(context.Background(), thread)
				require.NoError(t, err)
				require.Len(t, th.Messages, 2)
				assert.Equal(t, strings.Join(texts, ""), th.Messages[1].Content, "the stored answer is exactly what was sent")
				assert.True(t, th.Messages[1].Cancelled)
				assert.Equal(t, tt.wantNodes, h.store.nodes(thread))

				// Tokens had passed and were waiting: they were dropped.
				cps, err := h.store.Checkpoints(context.Background(), thread)
				require.NoError(t, err)
				var last struct{ Released string }
				require.NoError(t, json.Unmarshal(cps[len(cps)-1].State, &last))
				assert.Greater(t, len(last.Released), len(th.Messages[1].Content))
				assert.Equal(t, []ports.ChatEventKind{ports.ChatUserMessage}, h.pub.kinds())
				assert.False(t, h.lock.isHeld(thread))
			})
		})
	}
}

// passedChunks returns the texts the guardrail checked before the first
// one it failed: what a paced answer may send of its first stream.
func passedChunks(g *wordGuardrail) string {
	var b strings.Builder
	for _, text := range g.checked {
		if strings.Contains(text, "BAD") {
			break
		}
		b.WriteString(text)
	}
	return b.String()
}

// In the paced tests below, where a later chunk ends depends on the
// playout (chunk.go): what passed, and so what the client got and the
// rewrite continues, is read from the guardrail's checks. It always
// holds the first sentence, checked alone, and never the failing one.
func TestPacingRewrite(t *testing.T) {
	const gap = 20 * time.Millisecond
	first := append(sentences(3, 8), " Eight", " is", " BAD.", " Nine")
	tests := []struct {
		name        string
		scripts     []script
		maxRewrites int
		wantAfter   string // what follows what passed of the first stream
		wantKinds   []conversation.EventKind
	}{
		{
			name:        "a later chunk fails while earlier ones play out",
			scripts:     []script{{pieces: first, gap: gap}, {pieces: []string{" Eight", " is", " better."}, gap: gap}},
			maxRewrites: 1,
			wantAfter:   " Eight is better.",
			wantKinds:   []conversation.EventKind{started, tokens, end},
		},
		{
			name:        "the rewrites are exhausted: the fallback follows what played out",
			scripts:     []script{{pieces: first, gap: gap}, {pieces: []string{" Still", " BAD."}, gap: gap}},
			maxRewrites: 1,
			wantAfter:   " Sorry, a person will help you.",
			wantKinds:   []conversation.EventKind{started, tokens, escalation, end},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h, err := newHarness(tt.scripts, false, tt.maxRewrites)
				require.NoError(t, err)
				var s sink
				_, err = h.conv.Run(context.Background(), paceRequest(), s.emit)
				require.NoError(t, err)

				assert.Equal(t, tt.wantKinds, s.kinds())
				texts, at := s.timedTokens()
				passed := passedChunks(h.guard)
				require.Equal(t, "s1w1 s1w2 s1w3.", h.guard.checked[0], "the first sentence is the first chunk")
				require.True(t, strings.HasPrefix(strings.Join(first, ""), passed))
				assert.NotContains(t, passed, "BAD")
				assert.Equal(t, passed+tt.wantAfter, strings.Join(texts, ""), "what passed is sent, never retracted, and nothing that failed")
				for k := 1; k < len(at); k++ {
					assert.False(t, at[k].Before(at[k-1]))
				}
				var said []string
				for _, req := range h.model.requests() {
					if req.Rewrite != nil {
						said = append(said, req.Rewrite.Said)
					}
				}
				assert.Equal(t, []string{passed}, said)

				// The failing chunk was checked while tokens that had
				// passed still waited: they went out all the same.
				var rejectedAt time.Time
				for i, text := range h.guard.checked {
					if strings.Contains(text, "BAD") {
						rejectedAt = h.guard.at[i]
						break
					}
				}
				require.False(t, rejectedAt.IsZero())
				n, last := 0, -1
				for k, text := range texts {
					if n += len(text); n == len(passed) {
						last = k
					}
				}
				require.GreaterOrEqual(t, last, 0, "what passed ends a token")
				assert.True(t, at[last].After(rejectedAt), "no token was waiting at the rejection")

				for i, ev := range s.events {
					if ev.Kind != conversation.EventToken && ev.Kind != conversation.EventStarted {
						assert.False(t, s.at[i].Before(at[len(at)-1]), "%v before the last token", ev.Kind)
					}
				}
				th, err := h.store.Load(context.Background(), thread)
				require.NoError(t, err)
				require.Len(t, th.Messages, 2)
				assert.Equal(t, strings.Join(texts, ""), th.Messages[1].Content)
			})
		})
	}
}

func TestPacingModelError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pieces := append(sentences(3, 8), " Partial")
		h, err := newHarness([]script{{pieces: pieces, gap: 20 * time.Millisecond, err: errors.New("bedrock: throttled")}}, false, 0)
		require.NoError(t, err)
		var s sink
		_, err = h.conv.Run(context.Background(), paceRequest(), s.emit)
		require.ErrorContains(t, err, "throttled")

		assert.Equal(t, []conversation.EventKind{started, tokens, errorEvent}, s.kinds())
		texts, at := s.timedTokens()
		passed := passedChunks(h.guard)
		assert.True(t, strings.HasPrefix(passed, "s1w1 s1w2 s1w3."), "the first sentence passed")
		assert.NotContains(t, passed, "Partial", "a text held at the error is not checked")
		assert.Equal(t, passed, strings.Join(texts, ""), "what passed goes out before the error")
		assert.Equal(t, at[len(at)-1], s.at[len(s.at)-1], "the error follows the last token at once")
		th, err := h.store.Load(context.Background(), thread)
		require.NoError(t, err)
		assert.Len(t, th.Messages, 1, "the partial answer is not stored as an answer")
		assert.False(t, h.lock.isHeld(thread))
	})
}

// TestPacingPanic: a panic in emit, on the pacer's goroutine, reaches
// Run's caller, as it would unpaced, instead of ending the process.
func TestPacingPanic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, err := newHarness([]script{{pieces: localAnswer, gap: 20 * time.Millisecond}}, false, 0)
		require.NoError(t, err)
		n := 0
		s := sink{onTok: func(conversation.Event) {
			if n++; n == 3 {
				panic("emit broke")
			}
		}}
		assert.PanicsWithValue(t, "emit broke", func() { _, _ = h.conv.Run(context.Background(), paceRequest(), s.emit) })
		assert.False(t, h.lock.isHeld(thread), "the lock is released")
	})
}
