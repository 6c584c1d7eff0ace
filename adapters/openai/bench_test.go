package openai_test

import (
	"testing"

	"github.com/wsserver/wsserver/adapters/internal/modeltest"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/test/fakeopenai"
)

// BenchmarkStream is one 60-token answer streamed from the fake (no
// pacing): the adapter's cost per chat, with the fake's on the same
// machine. Divide by 60 for a token.
func BenchmarkStream(b *testing.B) {
	modeltest.BenchmarkStream(b, " word", func(b *testing.B, deltas []string) ports.ChatModel {
		b.Helper()
		m, _ := newModel(b, fakeopenai.Script{Deltas: deltas}, nil)
		return m
	})
}
