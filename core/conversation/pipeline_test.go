package conversation_test

import (
	"context"
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

// Chunks checked while others are out (stream.go): once the answer is
// paced, the model's stream is read on while a chunk is checked, at most
// two chunks are out at once, and the verdicts are applied in order.

// TestChunksWithAVariableGuardrail runs the benchmark's answer at 50
// tokens/s against a guardrail whose calls take 130 to 190 ms, in orders
// where a later chunk's check returns before an earlier one's: every
// piece goes out in order, and no gap after the first token is longer
// than the model's plus MaxStretch. With one check at a time the stream
// was not read while a check ran, and a word waited for two checks. (A
// check longer than every one before it by more than chunkSlack still
// leaves a gap: a chunk is checked the longest check so far before its
// playout needs it.)
func TestChunksWithAVariableGuardrail(t *testing.T) {
	const gap = 20 * time.Millisecond
	for _, delays := range [][]time.Duration{
		{190, 130, 170, 150, 190, 130, 180},
		{180, 190, 130, 170, 150, 190, 130},
		{170, 150, 130, 190, 160, 140, 180},
		{150, 160, 130, 160, 140, 160, 130, 150},
	} {
		t.Run(fmt.Sprint(delays), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				pieces := wordPieces(benchAnswer)
				h, err := newHarness([]script{{pieces: pieces, gap: gap, clock: true}}, false, 0)
				require.NoError(t, err)
				h.guard.delayOf = func(call int, _ string) time.Duration {
					return delays[call%len(delays)] * time.Millisecond
				}
				var s sink
				_, err = h.conv.Run(context.Background(), paceRequest(), s.emit)
				require.NoError(t, err)

				texts, at := s.timedTokens()
				require.Equal(t, pieces, texts, "every piece goes out, in order")
				assert.Equal(t, benchAnswer, strings.Join(h.guard.checked, ""), "every chunk was checked once, in order")
				for k := 1; k < len(at); k++ {
					assert.LessOrEqual(t, at[k].Sub(at[k-1]), gap+conversation.DefaultMaxStretch, "gap before token %d: the playout waited for the guardrail", k)
				}
				t.Logf("%d calls: %q", len(h.guard.checked), h.guard.checked)
			})
		})
	}
}

// TestChunksOutOfOrderVerdicts: a chunk whose check returns before the
// check of the chunk before it is released after that one, never before.
func TestChunksOutOfOrderVerdicts(t *testing.T) {
	const gap = 20 * time.Millisecond
	synctest.Test(t, func(t *testing.T) {
		pieces := wordPieces(benchAnswer)
		h, err := newHarness([]script{{pieces: pieces, gap: gap, clock: true}}, false, 0)
		require.NoError(t, err)
		// The second chunk's check is slow: the third is asked while it
		// is out, and returns first.
		h.guard.delayOf = func(call int, _ string) time.Duration {
			if call == 1 {
				return 400 * time.Millisecond
			}
			return 20 * time.Millisecond
		}
		var s sink
		_, err = h.conv.Run(context.Background(), paceRequest(), s.emit)
		require.NoError(t, err)

		require.Greater(t, len(h.guard.checked), 2)
		require.True(t, h.guard.done[2].Before(h.guard.done[1]), "the third chunk's verdict came first (checked: %q)", h.guard.checked)
		texts, at := s.timedTokens()
		require.Equal(t, pieces, texts, "every piece goes out, in order")
		third := len(wordPieces(h.guard.checked[0] + h.guard.checked[1]))
		assert.False(t, at[third].Before(h.guard.done[1]), "the third chunk went out before the second passed")
	})
}

// TestChunkFailsWithTheNextOut: a chunk that fails while the next chunk's
// check is out stops the stream there: nothing of the next chunk reaches
// the client although it passed, and the rewrite is told of the failed
// chunk alone, after what was sent.
func TestChunkFailsWithTheNextOut(t *testing.T) {
	const gap = 20 * time.Millisecond
	synctest.Test(t, func(t *testing.T) {
		bad := strings.Replace(benchAnswer, "Open it from", "Open BAD from", 1)
		pieces := wordPieces(bad)
		rewrite := []string{" Open", " it", " anywhere."}
		h, err := newHarness([]script{{pieces: pieces, gap: gap, clock: true}, {pieces: rewrite, gap: gap, clock: true}}, false, 1)
		require.NoError(t, err)
		h.guard.delayOf = func(_ int, text string) time.Duration {
			if strings.Contains(text, "BAD") {
				return 400 * time.Millisecond
			}
			return 150 * time.Millisecond
		}
		var s sink
		_, err = h.conv.Run(context.Background(), paceRequest(), s.emit)
		require.NoError(t, err)
		assert.Equal(t, []conversation.EventKind{started, tokens, end}, s.kinds())

		failed := -1
		var passed string
		for i, c := range h.guard.checked {
			if strings.Contains(c, "BAD") {
				failed = i
				break
			}
			passed += c
		}
		require.GreaterOrEqual(t, failed, 0)
		require.Greater(t, len(h.guard.checked), failed+1, "a chunk after the failing one was checked")
		after := h.guard.checked[failed+1]
		require.True(t, h.guard.at[failed+1].Before(h.guard.done[failed]), "the next chunk was asked while the failing one was out")
		require.True(t, h.guard.done[failed+1].Before(h.guard.done[failed]), "and passed before the failing one's verdict")

		texts, _ := s.timedTokens()
		got := strings.Join(texts, "")
		assert.Equal(t, passed+strings.Join(rewrite, ""), got, "what passed before the failed chunk, then the rewrite")
		assert.NotContains(t, got, strings.TrimSpace(after), "nothing after the failed chunk")
		var rws []ports.Rewrite
		for _, req := range h.model.requests() {
			if req.Rewrite != nil {
				rws = append(rws, *req.Rewrite)
			}
		}
		assert.Equal(t, []ports.Rewrite{{Said: passed, Rejected: h.guard.checked[failed], Reason: "it says BAD"}}, rws)
	})
}

// TestChunksCancelledWhileOut: a cancel while two chunks are out to a
// guardrail that does not answer ends the run at once: both checks were
// told to stop and returned before Run did, and nothing of theirs went
// out.
func TestChunksCancelledWhileOut(t *testing.T) {
	const gap = 20 * time.Millisecond
	synctest.Test(t, func(t *testing.T) {
		pieces := wordPieces(benchAnswer)
		h, err := newHarness([]script{{pieces: pieces, gap: gap, clock: true}}, false, 0)
		require.NoError(t, err)
		h.guard.delayOf = func(call int, _ string) time.Duration {
			if call == 0 {
				return 150 * time.Millisecond
			}
			return -1 // until cancelled
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var s sink
		ran := make(chan struct{})
		var res conversation.Result
		go func() {
			defer close(ran)
			res, err = h.conv.Run(ctx, paceRequest(), s.emit)
		}()
		for deadline := time.Now().Add(wait); h.guard.inFlight() < 2; {
			require.True(t, time.Now().Before(deadline), "two checks were never out at once")
			select {
			case <-ran:
				t.Fatal("the run ended before two checks were out")
			case <-time.After(gap):
			}
		}
		cancel()
		<-ran
		require.NoError(t, err)
		assert.Zero(t, h.guard.inFlight(), "every check returned before Run did")
		assert.True(t, res.Cancelled)
		assert.Equal(t, conversation.EventEnd, s.last().Kind)
		texts, _ := s.timedTokens()
		assert.Equal(t, h.guard.checked[0], strings.Join(texts, ""), "only the chunk that passed went out")
	})
}
