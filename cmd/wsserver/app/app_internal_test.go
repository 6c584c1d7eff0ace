package app

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/wsserver/wsserver/core/logctx"
)

// Whatever logger Run is given, the lines logged with a request's context
// carry its ids, once.
func TestContextLoggerAddsTheIDsOnce(t *testing.T) {
	ctx := logctx.With(t.Context(), slog.String("connection_id", "c1"))
	tests := []struct {
		name string
		log  func(*bytes.Buffer) *slog.Logger
	}{
		{"a plain logger (a test's)", func(b *bytes.Buffer) *slog.Logger {
			return slog.New(slog.NewTextHandler(b, nil)).With("instance", "i1")
		}},
		{"a logger that adds them already (the process's)", func(b *bytes.Buffer) *slog.Logger {
			return slog.New(logctx.NewHandler(slog.NewTextHandler(b, nil)))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			contextLogger(tt.log(&buf)).InfoContext(ctx, "m")
			if n := strings.Count(buf.String(), "connection_id=c1"); n != 1 {
				t.Errorf("connection_id %d times in %q, want once", n, buf.String())
			}
		})
	}
}
