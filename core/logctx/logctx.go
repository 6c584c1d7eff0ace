// Package logctx carries request-scoped log attributes in a context
// (connection_id, thread_id, session...) and wraps a slog.Handler so that
// every record logged with that context carries them, whoever logs it:
// the edge that set them or the core it calls.
//
// Only ids belong here: whatever a context carries reaches every log line
// logged with it, so never a secret, a message or a user's text.
package logctx

import (
	"context"
	"log/slog"
)

type key struct{}

// With returns a copy of ctx that carries attrs after the attributes ctx
// already carries. An attribute whose key ctx already carries replaces it,
// so that each key appears once on a line however often it is set.
func With(ctx context.Context, attrs ...slog.Attr) context.Context {
	if len(attrs) == 0 {
		return ctx
	}
	old := Attrs(ctx)
	merged := make([]slog.Attr, 0, len(old)+len(attrs))
	for _, a := range old {
		if !hasKey(attrs, a.Key) {
			merged = append(merged, a)
		}
	}
	for i, a := range attrs {
		if !hasKey(attrs[i+1:], a.Key) { // the last of a key given twice wins
			merged = append(merged, a)
		}
	}
	return context.WithValue(ctx, key{}, merged)
}

func hasKey(attrs []slog.Attr, k string) bool {
	for _, a := range attrs {
		if a.Key == k {
			return true
		}
	}
	return false
}

// Attrs returns the attributes ctx carries, in the order they were set;
// the caller must not modify them.
func Attrs(ctx context.Context) []slog.Attr {
	if ctx == nil {
		return nil
	}
	attrs, _ := ctx.Value(key{}).([]slog.Attr)
	return attrs
}

// Handler adds the attributes of a record's context to the record, after
// its own, and hands it to the handler it wraps. Under a group (WithGroup)
// they go inside the group, as the record's own attributes do.
type Handler struct {
	inner slog.Handler
}

// NewHandler wraps inner.
func NewHandler(inner slog.Handler) *Handler {
	return &Handler{inner: inner}
}

// Enabled reports whether the wrapped handler takes records of level.
func (h *Handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.inner.Enabled(ctx, level)
}

// Handle adds ctx's attributes to r and passes it on; a record whose
// context carries none goes on unchanged.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if attrs := Attrs(ctx); len(attrs) > 0 {
		r = r.Clone() // r's attributes may be shared with the caller's copy
		r.AddAttrs(attrs...)
	}
	return h.inner.Handle(ctx, r)
}

// WithAttrs returns a Handler wrapping inner.WithAttrs(attrs).
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Handler{inner: h.inner.WithAttrs(attrs)}
}

// WithGroup returns a Handler wrapping inner.WithGroup(name).
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{inner: h.inner.WithGroup(name)}
}

var _ slog.Handler = (*Handler)(nil)
