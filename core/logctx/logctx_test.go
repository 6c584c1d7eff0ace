package logctx_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"testing/slogtest"
	"time"

	"github.com/wsserver/wsserver/core/logctx"
)

// noTime drops the time, so that two lines can be compared.
func noTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

func jsonHandler(buf *bytes.Buffer) slog.Handler {
	return slog.NewJSONHandler(buf, &slog.HandlerOptions{ReplaceAttr: noTime})
}

func TestHandler(t *testing.T) {
	bg := context.Background()
	conn := logctx.With(bg, slog.String("connection_id", "c1"))
	tests := []struct {
		name string
		ctx  context.Context
		log  func(l *slog.Logger, ctx context.Context)
		want string
	}{
		{"no attributes in the context: the record is unchanged", bg,
			func(l *slog.Logger, ctx context.Context) { l.InfoContext(ctx, "m", "k", 1) },
			`{"level":"INFO","msg":"m","k":1}`},
		{"the context's attributes come once, after the record's", conn,
			func(l *slog.Logger, ctx context.Context) { l.InfoContext(ctx, "m", "k", 1) },
			`{"level":"INFO","msg":"m","k":1,"connection_id":"c1"}`},
		{"nested With accumulates", logctx.With(conn, slog.String("thread_id", "t1"), slog.String("run_id", "r1")),
			func(l *slog.Logger, ctx context.Context) { l.WarnContext(ctx, "m") },
			`{"level":"WARN","msg":"m","connection_id":"c1","thread_id":"t1","run_id":"r1"}`},
		{"a key set again replaces its value", logctx.With(logctx.With(conn, slog.String("thread_id", "t1")), slog.String("thread_id", "t2")),
			func(l *slog.Logger, ctx context.Context) { l.InfoContext(ctx, "m") },
			`{"level":"INFO","msg":"m","connection_id":"c1","thread_id":"t2"}`},
		{"a key given twice in one With comes once", logctx.With(bg, slog.String("thread_id", "t1"), slog.String("thread_id", "t2")),
			func(l *slog.Logger, ctx context.Context) { l.InfoContext(ctx, "m") },
			`{"level":"INFO","msg":"m","thread_id":"t2"}`},
		{"WithAttrs keeps the handler", conn,
			func(l *slog.Logger, ctx context.Context) { l.With("endpoint", "chat").ErrorContext(ctx, "m") },
			`{"level":"ERROR","msg":"m","endpoint":"chat","connection_id":"c1"}`},
		{"WithGroup keeps the handler; the attributes go in the group", conn,
			func(l *slog.Logger, ctx context.Context) { l.WithGroup("g").InfoContext(ctx, "m", "k", 1) },
			`{"level":"INFO","msg":"m","g":{"k":1,"connection_id":"c1"}}`},
		{"a level the wrapped handler refuses is not logged", conn,
			func(l *slog.Logger, ctx context.Context) { l.DebugContext(ctx, "m") },
			``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			tt.log(slog.New(logctx.NewHandler(jsonHandler(&buf))), tt.ctx)
			if got := strings.TrimSpace(buf.String()); got != tt.want {
				t.Errorf("logged\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

// A record logged twice with contexts carrying different attributes gets
// each its own: Handle does not change the caller's record.
func TestHandlerLeavesTheRecordAlone(t *testing.T) {
	var buf bytes.Buffer
	h := logctx.NewHandler(jsonHandler(&buf))
	r := slog.NewRecord(time.Time{}, slog.LevelInfo, "m", 0)
	r.AddAttrs(slog.Int("k", 1))
	for _, id := range []string{"c1", "c2"} {
		if err := h.Handle(logctx.With(context.Background(), slog.String("connection_id", id)), r); err != nil {
			t.Fatal(err)
		}
	}
	want := `{"level":"INFO","msg":"m","k":1,"connection_id":"c1"}` + "\n" +
		`{"level":"INFO","msg":"m","k":1,"connection_id":"c2"}` + "\n"
	if got := buf.String(); got != want {
		t.Errorf("logged\n%s\nwant\n%s", got, want)
	}
	if r.NumAttrs() != 1 {
		t.Errorf("the caller's record has %d attributes, want 1", r.NumAttrs())
	}
}

// The handler keeps every rule a slog.Handler must follow.
func TestHandlerConforms(t *testing.T) {
	var buf bytes.Buffer
	h := logctx.NewHandler(slog.NewJSONHandler(&buf, nil))
	results := func() []map[string]any {
		var ms []map[string]any
		for line := range bytes.Lines(buf.Bytes()) {
			var m map[string]any
			if err := json.Unmarshal(line, &m); err != nil {
				t.Fatal(err)
			}
			ms = append(ms, m)
		}
		return ms
	}
	if err := slogtest.TestHandler(h, results); err != nil {
		t.Error(err)
	}
}
