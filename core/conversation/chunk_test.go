package conversation_test

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
)

// benchAnswer is test/fakebedrock's default answer, the one the Bedrock
// benchmarks stream: 60 words in sentences of 31, 7, 12 and 10 words.
const benchAnswer = "Answers here stream as the model writes them, one piece at a time, and each sentence is checked by the guardrail before it is sent to you at the model's pace." +
	" Your thread is kept with its history." +
	" Open it from another device or tab and it is all there." +
	" Only you and the people you invite can see it."

// wordPieces cuts text into a piece a word, each with the space before it.
func wordPieces(text string) []string {
	words := strings.Fields(text)
	for i := 1; i < len(words); i++ {
		words[i] = " " + words[i]
	}
	return words
}

// TestChunksWithASlowGuardrail runs the benchmark's answer at 50 tokens/s
// on the model's own clock against a guardrail that takes 150 ms a call:
// the first chunk is cut at a word boundary well before the 31-word first
// sentence ends, so the first token goes out 160 ms of text plus one
// check after the model's first; from then on no gap is longer than the
// model's plus MaxStretch (the playout never waits for the guardrail); and
// the answer costs a handful of calls, not a call a sentence.
func TestChunksWithASlowGuardrail(t *testing.T) {
	const gap = 20 * time.Millisecond
	const check = 150 * time.Millisecond
	synctest.Test(t, func(t *testing.T) {
		pieces := wordPieces(benchAnswer)
		require.Len(t, pieces, 60)
		h, err := newHarness([]script{{pieces: pieces, gap: gap, clock: true}}, false, 0)
		require.NoError(t, err)
		h.guard.delay = check
		start := time.Now()
		var s sink
		_, err = h.conv.Run(context.Background(), paceRequest(), s.emit)
		require.NoError(t, err)

		texts, at := s.timedTokens()
		require.Equal(t, pieces, texts, "every piece goes out, in order")
		assert.Equal(t, benchAnswer, strings.Join(h.guard.checked, ""), "every chunk was checked once")

		firstChunk := h.guard.checked[0]
		assert.Equal(t, "Answers here stream as the model writes them,", firstChunk,
			"the first chunk ends at the first word boundary past FirstChunkChars")
		words := len(strings.Fields(firstChunk))
		// Its end is seen when the next word comes, then it is checked.
		assert.Equal(t, time.Duration(words)*gap+check, at[0].Sub(start), "the first token goes out as the first chunk passes")

		for k := 1; k < len(at); k++ {
			assert.LessOrEqual(t, at[k].Sub(at[k-1]), gap+conversation.DefaultMaxStretch, "gap before token %d: the playout waited for the guardrail", k)
			assert.GreaterOrEqual(t, at[k].Sub(at[k-1]), gap, "gap before token %d: a burst", k)
		}
		// Each later chunk is as long as the playout before it allows:
		// 8, 9, 13, 17 and 13 words (the last one checked when the
		// model is done), where checks by sentence would take 4 calls
		// and hold the first token for the 31-word first sentence.
		t.Logf("%d calls: %q", len(h.guard.checked), h.guard.checked)
		assert.LessOrEqual(t, len(h.guard.checked), 5, "calls for a 60-word answer")
	})
}

// TestChunkRewrite: a later chunk that fails, with text before the failing
// sentence, is rejected whole: none of it reaches the client; the rewrite
// is told what was sent (the chunks that passed) and what failed (the
// whole chunk), and its answer follows what was sent.
func TestChunkRewrite(t *testing.T) {
	const gap = 20 * time.Millisecond
	synctest.Test(t, func(t *testing.T) {
		bad := strings.Replace(benchAnswer, "Open it from", "Open BAD from", 1)
		pieces := wordPieces(bad)
		rewrite := []string{" Open", " it", " anywhere."}
		h, err := newHarness([]script{{pieces: pieces, gap: gap, clock: true}, {pieces: rewrite, gap: gap, clock: true}}, false, 1)
		require.NoError(t, err)
		h.guard.delay = 150 * time.Millisecond
		var s sink
		_, err = h.conv.Run(context.Background(), paceRequest(), s.emit)
		require.NoError(t, err)
		assert.Equal(t, []conversation.EventKind{started, tokens, end}, s.kinds())

		var passed, rejected string
		for _, c := range h.guard.checked {
			if strings.Contains(c, "BAD") {
				rejected = c
				break
			}
			passed += c
		}
		require.NotEmpty(t, rejected)
		require.Greater(t, len(strings.Fields(rejected)), 1, "the failing chunk holds more than the failing word")
		require.True(t, strings.HasPrefix(bad, passed+rejected))

		texts, _ := s.timedTokens()
		assert.Equal(t, passed+strings.Join(rewrite, ""), strings.Join(texts, ""), "what passed, then the rewrite; nothing of the failed chunk")
		var rws []ports.Rewrite
		for _, req := range h.model.requests() {
			if req.Rewrite != nil {
				rws = append(rws, *req.Rewrite)
			}
		}
		assert.Equal(t, []ports.Rewrite{{Said: passed, Rejected: rejected, Reason: "it says BAD"}}, rws)
		assert.Equal(t, []string{"load", "escalation_check", "generate", "guardrail", "rewrite", "guardrail", "respond"}, h.store.nodes(thread))
	})
}

// TestChunkSizes: FirstChunkChars and ChunkChars shape the chunks, and
// are validated.
func TestChunkSizes(t *testing.T) {
	t.Run("first chunk", func(t *testing.T) {
		h, err := newHarness([]script{{pieces: wordPieces(benchAnswer)}}, false, 0,
			func(c *conversation.Config) { c.FirstChunkChars = 10 })
		require.NoError(t, err)
		var s sink
		_, err = h.conv.Run(context.Background(), paceRequest(), s.emit)
		require.NoError(t, err)
		assert.Equal(t, "Answers here", h.guard.checked[0])
	})
	t.Run("a text unit with no sentence end", func(t *testing.T) {
		long := strings.Repeat(" word", 100)[1:] // 499 bytes, no end mark
		h, err := newHarness([]script{{pieces: wordPieces(long)}}, false, 0,
			func(c *conversation.Config) { c.FirstChunkChars = 10; c.ChunkChars = 200 })
		require.NoError(t, err)
		var s sink
		_, err = h.conv.Run(context.Background(), paceRequest(), s.emit)
		require.NoError(t, err)
		for _, c := range h.guard.checked {
			assert.LessOrEqual(t, len(c), 200)
		}
		assert.Len(t, h.guard.checked, 5, "14 bytes (the first word boundary past 10), then 150 (past three quarters of 200) a chunk, then the rest")
	})
	for _, tt := range []struct {
		name         string
		first, chunk int
	}{
		{"negative first", -1, 0},
		{"negative chunk", 0, -1},
		{"first over chunk", 500, 100},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newHarness(nil, false, 0, func(c *conversation.Config) { c.FirstChunkChars, c.ChunkChars = tt.first, tt.chunk })
			require.ErrorContains(t, err, "chunk")
		})
	}
}
