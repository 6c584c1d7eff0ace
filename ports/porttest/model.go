package porttest

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/ports"
)

// Pieces is the answer the models made for ChatModel stream, when they
// can be told what to answer (a fake's script).
var Pieces = []string{"Your", " parcel", " ships", " today", "."}

// Models makes the models ChatModel runs its cases on: each function
// returns a fresh model of one adapter (against its fake server, for
// those that call one). The functions after Answering make a model fail
// or stop in a way only a model on a wire can; they are nil for those
// that cannot (the local model), and their cases are skipped.
type Models struct {
	// Answering returns a model whose chat answers come in at least three
	// pieces, each pace after the one before (0: as fast as it can).
	// Its Complete answers a chat with the same text as Stream.
	Answering func(t *testing.T, pace time.Duration) ports.ChatModel
	// Stopping returns a model whose chat answer stops for stop after at
	// least one piece, in its wire's words: "max_tokens", "length",
	// "guardrail_intervened", "content_filter"...
	Stopping func(t *testing.T, stop ports.StopReason) ports.ChatModel
	// Cut returns a model whose chat stream fails after two pieces: the
	// connection lost, or an error in the stream.
	Cut func(t *testing.T) ports.ChatModel
	// Throttled returns a model whose first call is refused as too many
	// (HTTP 429) before its answer starts, and whose next ones answer as
	// Answering's.
	Throttled func(t *testing.T) ports.ChatModel
}

// chatRequest is the request of every case.
func chatRequest() ports.ChatRequest {
	return ports.ChatRequest{
		Purpose: ports.PurposeChat,
		System:  "You are a helpful assistant.",
		Messages: []ports.Message{
			{Role: ports.RoleUser, Content: "Where is my parcel?"},
		},
	}
}

// recorder is a token callback that keeps the pieces and notes calls that
// overlap, which the port forbids.
type recorder struct {
	mu       sync.Mutex
	pieces   []string
	inflight atomic.Int32
	overlap  atomic.Bool
	// then, when set, runs after a piece is kept, with the count so far.
	then func(n int) error
}

func (r *recorder) token(p string) error {
	if r.inflight.Add(1) > 1 {
		r.overlap.Store(true)
	}
	defer r.inflight.Add(-1)
	r.mu.Lock()
	r.pieces = append(r.pieces, p)
	n := len(r.pieces)
	r.mu.Unlock()
	if r.then != nil {
		return r.then(n)
	}
	return nil
}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.pieces...)
}

// streamWithin runs Stream and fails the test when it has not returned
// after wait: a model that does not stop on its context.
func streamWithin(t *testing.T, ctx context.Context, m ports.ChatModel, r *recorder) (ports.Reply, error) {
	t.Helper()
	type result struct {
		reply ports.Reply
		err   error
	}
	done := make(chan result, 1)
	go func() {
		reply, err := m.Stream(ctx, chatRequest(), r.token)
		done <- result{reply, err}
	}()
	select {
	case res := <-done:
		return res.reply, res.err
	case <-time.After(wait):
		t.Fatalf("Stream did not return within %s", wait)
		return ports.Reply{}, nil
	}
}

// ChatModel runs the contract of ports.ChatModel on the models of ms.
func ChatModel(t *testing.T, ms Models) {
	t.Run("the pieces of a stream are the answer", func(t *testing.T) {
		m := ms.Answering(t, 0)
		r := &recorder{}
		reply, err := streamWithin(t, t.Context(), m, r)
		require.NoError(t, err)
		pieces := r.got()
		assert.GreaterOrEqual(t, len(pieces), 3)
		for i, p := range pieces {
			assert.NotEmpty(t, p, "piece %d", i)
		}
		assert.False(t, r.overlap.Load(), "token is called one call at a time")
		assert.Empty(t, reply.Text, "Stream's pieces are the answer: Text stays empty")
		assert.Equal(t, ports.StopEndTurn, reply.Stop)
		assert.Positive(t, reply.Usage.OutputTokens)
	})

	t.Run("Complete answers what Stream streams", func(t *testing.T) {
		m := ms.Answering(t, 0)
		r := &recorder{}
		_, err := streamWithin(t, t.Context(), m, r)
		require.NoError(t, err)
		reply, err := m.Complete(t.Context(), chatRequest())
		require.NoError(t, err)
		assert.Equal(t, strings.Join(r.got(), ""), reply.Text)
		assert.Equal(t, ports.StopEndTurn, reply.Stop)
		assert.Positive(t, reply.Usage.OutputTokens)
	})

	t.Run("Complete answers summaries and classifications", func(t *testing.T) {
		m := ms.Answering(t, 0)
		for _, p := range []ports.Purpose{ports.PurposeSummary, ports.PurposeClassify} {
			req := chatRequest()
			req.Purpose = p
			req.Messages = append(req.Messages, ports.Message{Role: ports.RoleAssistant, Content: "It ships today."})
			reply, err := m.Complete(t.Context(), req)
			require.NoError(t, err, p)
			assert.NotEmpty(t, strings.TrimSpace(reply.Text), p)
			assert.Equal(t, ports.StopEndTurn, reply.Stop, p)
		}
	})

	t.Run("a token error stops the stream", func(t *testing.T) {
		m := ms.Answering(t, 0)
		stop := errors.New("the client went away")
		r := &recorder{then: func(n int) error {
			if n == 2 {
				return stop
			}
			return nil
		}}
		_, err := streamWithin(t, t.Context(), m, r)
		require.ErrorIs(t, err, stop)
		assert.Len(t, r.got(), 2, "no piece after the error")
	})

	t.Run("a cancel stops the stream", func(t *testing.T) {
		// At this pace the answer would take minutes: only the cancel
		// ends the call within the wait.
		m := ms.Answering(t, time.Minute)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		r := &recorder{then: func(int) error { cancel(); return nil }}
		_, err := streamWithin(t, ctx, m, r)
		require.ErrorIs(t, err, context.Canceled)
		assert.Len(t, r.got(), 1, "no piece after the cancel")
	})

	t.Run("the context's deadline stops the stream", func(t *testing.T) {
		m := ms.Answering(t, time.Minute)
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		r := &recorder{}
		_, err := streamWithin(t, ctx, m, r)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.NotErrorIs(t, err, context.Canceled)
	})

	t.Run("an ended context makes no call", func(t *testing.T) {
		m := ms.Answering(t, 0)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		r := &recorder{}
		_, err := streamWithin(t, ctx, m, r)
		require.ErrorIs(t, err, context.Canceled)
		assert.Empty(t, r.got())
		_, err = m.Complete(ctx, chatRequest())
		require.ErrorIs(t, err, context.Canceled)
	})

	t.Run("stop reasons", func(t *testing.T) {
		if ms.Stopping == nil {
			t.Skip("this model always ends its turn")
		}
		for _, stop := range []ports.StopReason{ports.StopMaxTokens, ports.StopGuardrailIntervened} {
			t.Run(string(stop), func(t *testing.T) {
				r := &recorder{}
				reply, err := streamWithin(t, t.Context(), ms.Stopping(t, stop), r)
				require.NoError(t, err)
				assert.Equal(t, stop, reply.Stop)
				assert.NotEmpty(t, r.got())
			})
		}
	})

	t.Run("a stream cut after its first token is an error", func(t *testing.T) {
		if ms.Cut == nil {
			t.Skip("this model's stream cannot be cut")
		}
		r := &recorder{}
		reply, err := streamWithin(t, t.Context(), ms.Cut(t), r)
		require.Error(t, err, "a cut answer must not pass for a whole one")
		require.NotErrorIs(t, err, context.Canceled)
		assert.Len(t, r.got(), 2, "the pieces before the cut were given, none twice")
		assert.Empty(t, reply.Stop, "no stop reason: the answer did not end")
	})

	t.Run("a call refused before its answer is retried", func(t *testing.T) {
		if ms.Throttled == nil {
			t.Skip("this model is never throttled")
		}
		r := &recorder{}
		reply, err := streamWithin(t, t.Context(), ms.Throttled(t), r)
		require.NoError(t, err)
		assert.Equal(t, Pieces, r.got(), "each piece once, in order")
		assert.Equal(t, ports.StopEndTurn, reply.Stop)
	})
}
