package conversation_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/core/logctx"
)

// lockedBuffer is a log sink that the run's goroutines may share.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// line returns the first line logged with msg, decoded, and its raw text.
func (b *lockedBuffer) line(t *testing.T, msg string) (map[string]any, string) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for raw := range bytes.Lines(b.buf.Bytes()) {
		var m map[string]any
		require.NoError(t, json.Unmarshal(raw, &m))
		if m["msg"] == msg {
			return m, string(raw)
		}
	}
	t.Fatalf("no line %q in\n%s", msg, b.buf.String())
	return nil, ""
}

// Every line a run logs names its thread and its run once, through the
// context, beside the ids the caller's context carries: nobody passes them
// by hand.
func TestRunLinesNameTheThreadAndTheRun(t *testing.T) {
	edge := logctx.With(context.Background(), slog.String("connection_id", "c1"), slog.String("thread_id", thread))
	tests := []struct {
		name  string
		ctx   context.Context
		setup func(h *harness)
		msg   string
	}{
		{"a turn not saved", context.Background(),
			func(h *harness) { h.store.failAppend = errors.New("database down") }, "turn not saved"},
		{"a failed chat", context.Background(),
			func(h *harness) { h.model.scripts = []script{{err: errors.New("model away")}} }, "chat failed"},
		{"a lock release that failed", context.Background(),
			func(h *harness) { h.lock.releaseFails = 1 }, "thread lock release failed; retrying in the background until it expires"},
		{"the edge named the thread and its connection already", edge,
			func(h *harness) { h.store.failAppend = errors.New("database down") }, "turn not saved"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs lockedBuffer
			h, err := newHarness([]script{{pieces: []string{"Fine."}}}, false, 0, func(c *conversation.Config) {
				c.Log = slog.New(logctx.NewHandler(slog.NewJSONHandler(&logs, nil)))
			})
			require.NoError(t, err)
			t.Cleanup(h.conv.Close)
			tt.setup(h)
			var s sink
			_, _ = h.conv.Run(tt.ctx, chat("hi"), s.emit)

			line, raw := logs.line(t, tt.msg)
			assert.Equal(t, thread, line["thread_id"])
			assert.Equal(t, "id-1", line["run_id"], "the run's id, as its checkpoints name it")
			assert.Equal(t, 1, strings.Count(raw, `"thread_id":`), raw)
			if tt.ctx == edge {
				assert.Equal(t, "c1", line["connection_id"])
			}
		})
	}
}
