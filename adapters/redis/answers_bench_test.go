package redis_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/redis"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/test/containers"
)

// BenchmarkAnswerLog measures the answer log on the package's Redis: one
// token's append (what a resumable answer adds per token, off its run's
// path), and a resume's catch-up of 60 missed tokens (Follow: the read,
// beside the channel's subscription), on an idle log and beside answers
// that stream at 50 tokens/s, each followed from its 20th token as
// resumes do. It reports the catch-up's p50 and p99 besides ns/op.
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

	for _, streaming := range []int{0, 100} {
		b.Run(fmt.Sprintf("catch up 60 tokens beside %d streaming answers", streaming), func(b *testing.B) {
			defer streamAnswers(b, l, streaming)()
			var took []time.Duration
			n := 0
			for b.Loop() {
				n++
				key := ports.AnswerKey{ThreadID: fmt.Sprintf("bench-catchup-%d-%d", streaming, n), MessageID: "m", Epoch: "e"}
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
}

// streamAnswers streams n answers on l until the returned func is called:
// each appends a token every 20 ms, 120 tokens then its final entry, then
// the next answer starts, and each is followed on l from its 20th token.
func streamAnswers(b *testing.B, l *redis.Answers, n int) (stop func()) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for answer := 0; ; answer++ {
				key := ports.AnswerKey{ThreadID: fmt.Sprintf("bench-stream-%d", i), MessageID: fmt.Sprint(answer), Epoch: "e"}
				unfollow := func() {}
				for seq := int64(1); seq <= 121; seq++ {
					select {
					case <-ctx.Done():
						unfollow()
						return
					case <-tick.C:
					}
					e := ports.AnswerEntry{Seq: seq, Text: "word "}
					if seq == 121 {
						e = ports.AnswerEntry{Seq: 120, Final: []byte(`{"type":"end"}`)}
					}
					if err := l.Append(ctx, key, []ports.AnswerEntry{e}); err != nil && ctx.Err() == nil {
						b.Error(err)
					}
					if seq == 20 {
						_, stop, err := l.Follow(ctx, key.ThreadID, key.MessageID, 20, func(ports.AnswerEntry) {})
						if err != nil && ctx.Err() == nil {
							b.Error(err)
						}
						unfollow = stop
					}
				}
				unfollow()
			}
		})
	}
	return func() {
		cancel()
		wg.Wait()
	}
}
