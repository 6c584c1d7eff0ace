package openai_test

import (
	"strings"
	"testing"

	"github.com/wsserver/wsserver/test/fakeopenai"
)

// BenchmarkStream is one 60-token answer streamed from the fake (no
// pacing): the adapter's cost per chat, with the fake's on the same
// machine. Divide by 60 for a token.
func BenchmarkStream(b *testing.B) {
	deltas := make([]string, 60)
	for i := range deltas {
		deltas[i] = " word"
	}
	m, _ := newModel(b, fakeopenai.Script{Deltas: deltas}, nil)
	req := chatRequest()
	b.ReportAllocs()
	for b.Loop() {
		var n int
		_, err := m.Stream(b.Context(), req, func(p string) error {
			n += len(p)
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		if n != len(strings.Join(deltas, "")) {
			b.Fatalf("got %d bytes", n)
		}
	}
}
