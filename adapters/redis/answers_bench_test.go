package redis_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/redis"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/test/containers"
)

// BenchmarkAnswerLog measures the answer log on the package's Redis: one
// token's append (what a resumable answer adds per token, off its run's
// path), and a resume's catch-up of 60 missed tokens (Follow: subscribe,
// read, merge). It reports the catch-up's p50 and p99 besides ns/op.
func BenchmarkAnswerLog(b *testing.B) {
	c, err := redis.Open(b.Context(), server.URL(), 10*time.Second)
	require.NoError(b, err)
	b.Cleanup(c.Close)
	l, err := redis.NewAnswers(redis.AnswersConfig{Client: c, Prefix: containers.Prefix(b)})
	require.NoError(b, err)
	b.Cleanup(l.Close)
	ctx := b.Context()

	b.Run("append one token", func(b *testing.B) {
		key := ports.AnswerKey{ThreadID: "bench-append", MessageID: "m", Epoch: "e"}
		var seq int64
		for b.Loop() {
			seq++
			if err := l.Append(ctx, key, []ports.AnswerEntry{{Seq: seq, Text: "word "}}); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("catch up 60 tokens", func(b *testing.B) {
		var took []time.Duration
		n := 0
		for b.Loop() {
			n++
			key := ports.AnswerKey{ThreadID: fmt.Sprintf("bench-catchup-%d", n), MessageID: "m", Epoch: "e"}
			entries := make([]ports.AnswerEntry, 60)
			for i := range entries {
				entries[i] = ports.AnswerEntry{Seq: int64(i + 1), Text: "word "}
			}
			b.StopTimer()
			if err := l.Append(ctx, key, entries); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			start := time.Now()
			cu, stop, err := l.Follow(ctx, key.ThreadID, key.MessageID, 0, func(ports.AnswerEntry) {})
			took = append(took, time.Since(start))
			stop()
			if err != nil || len(cu.Entries) != 60 {
				b.Fatalf("catch-up: %v, %d entries", err, len(cu.Entries))
			}
		}
		slices.Sort(took)
		b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(took[len(took)*99/100].Microseconds()), "p99-µs")
	})
}
