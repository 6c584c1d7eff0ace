package porttest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/ports"
)

// AnswerLogs makes two answer logs as two instances have them (second nil
// in process), keeping maxEvents entries per answer for ttl.
type AnswerLogs func(t *testing.T, maxEvents int, ttl time.Duration) (first, second ports.AnswerLog)

// follower collects what Follow delivers.
type follower struct {
	mu  sync.Mutex
	got []ports.AnswerEntry
	ch  chan struct{}
}

func newFollower() *follower { return &follower{ch: make(chan struct{}, 1)} }

func (f *follower) deliver(e ports.AnswerEntry) {
	f.mu.Lock()
	f.got = append(f.got, e)
	f.mu.Unlock()
	select {
	case f.ch <- struct{}{}:
	default:
	}
}

func (f *follower) all() []ports.AnswerEntry {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]ports.AnswerEntry(nil), f.got...)
}

// waitFinal waits for the final entry and returns everything delivered.
func (f *follower) waitFinal(t *testing.T) []ports.AnswerEntry {
	t.Helper()
	deadline := time.After(wait)
	for {
		got := f.all()
		if n := len(got); n > 0 && got[n-1].Final != nil {
			return got
		}
		select {
		case <-f.ch:
		case <-deadline:
			t.Fatalf("no final entry; got %d entries", len(got))
		}
	}
}

func tokens(from, to int64) []ports.AnswerEntry {
	var out []ports.AnswerEntry
	for s := from; s <= to; s++ {
		out = append(out, ports.AnswerEntry{Seq: s, Text: fmt.Sprintf("t%d ", s)})
	}
	return out
}

func final(top int64) ports.AnswerEntry {
	return ports.AnswerEntry{Seq: top, Final: []byte(`{"type":"end","seq":` + fmt.Sprint(top) + `}`)}
}

func textOf(entries []ports.AnswerEntry) string {
	var s string
	for _, e := range entries {
		s += e.Text
	}
	return s
}

// AnswerLog runs the answer log contract on the adapter newLogs makes.
func AnswerLog(t *testing.T, newLogs AnswerLogs) {
	ctx := context.Background()
	const ttl = time.Minute
	key := func(t *testing.T) ports.AnswerKey {
		t.Helper()
		return ports.AnswerKey{ThreadID: session(t), MessageID: session(t), Epoch: "e1"}
	}

	t.Run("knows nothing of an answer never logged", func(t *testing.T) {
		l, _ := newLogs(t, 100, ttl)
		c, stop, err := l.Follow(ctx, session(t), "", 0, newFollower().deliver)
		require.NoError(t, err)
		stop()
		assert.False(t, c.Found)
	})

	t.Run("knows an answer begun with no entry", func(t *testing.T) {
		l, _ := newLogs(t, 100, ttl)
		k := key(t)
		require.NoError(t, l.Append(ctx, k, nil))
		f := newFollower()
		c, stop, err := l.Follow(ctx, k.ThreadID, "", 0, f.deliver)
		require.NoError(t, err)
		defer stop()
		assert.True(t, c.Found)
		assert.True(t, c.Complete)
		assert.Equal(t, k.MessageID, c.MessageID)
		assert.Equal(t, int64(0), c.Top)
		assert.Empty(t, c.Entries)
		require.NoError(t, l.Append(ctx, k, append(tokens(1, 1), final(1))))
		assert.Equal(t, append(tokens(1, 1), final(1)), f.waitFinal(t))
	})

	t.Run("catches up then follows live, to the final entry", func(t *testing.T) {
		l, _ := newLogs(t, 100, ttl)
		k := key(t)
		require.NoError(t, l.Append(ctx, k, tokens(1, 3)))
		f := newFollower()
		c, stop, err := l.Follow(ctx, k.ThreadID, k.MessageID, 1, f.deliver)
		require.NoError(t, err)
		defer stop()
		assert.True(t, c.Found)
		assert.True(t, c.Complete)
		assert.Equal(t, k.MessageID, c.MessageID)
		assert.Equal(t, "e1", c.Epoch)
		assert.Equal(t, int64(3), c.Top)
		assert.False(t, c.Done)
		assert.Equal(t, "t1 t2 t3 ", c.Text)
		assert.Equal(t, tokens(2, 3), c.Entries)

		require.NoError(t, l.Append(ctx, k, tokens(4, 5)))
		require.NoError(t, l.Append(ctx, k, []ports.AnswerEntry{final(5)}))
		assert.Equal(t, append(tokens(4, 5), final(5)), f.waitFinal(t))
	})

	t.Run("finds the thread's latest answer", func(t *testing.T) {
		l, _ := newLogs(t, 100, ttl)
		k := key(t)
		require.NoError(t, l.Append(ctx, k, append(tokens(1, 1), final(1))))
		k2 := k
		k2.MessageID = session(t)
		require.NoError(t, l.Append(ctx, k2, tokens(1, 2)))
		c, stop, err := l.Follow(ctx, k.ThreadID, "", 0, newFollower().deliver)
		require.NoError(t, err)
		stop()
		assert.Equal(t, k2.MessageID, c.MessageID)
		assert.Equal(t, tokens(1, 2), c.Entries)
	})

	t.Run("a done answer gives its final entry", func(t *testing.T) {
		l, _ := newLogs(t, 100, ttl)
		k := key(t)
		require.NoError(t, l.Append(ctx, k, append(tokens(1, 2), final(2))))
		c, stop, err := l.Follow(ctx, k.ThreadID, k.MessageID, 2, newFollower().deliver)
		require.NoError(t, err)
		stop()
		assert.True(t, c.Done)
		assert.True(t, c.Complete)
		assert.Equal(t, []ports.AnswerEntry{final(2)}, c.Entries)
	})

	t.Run("skips what is logged already", func(t *testing.T) {
		l, _ := newLogs(t, 100, ttl)
		k := key(t)
		require.NoError(t, l.Append(ctx, k, tokens(1, 2)))
		require.NoError(t, l.Append(ctx, k, tokens(1, 3)))
		c, stop, err := l.Follow(ctx, k.ThreadID, k.MessageID, 0, newFollower().deliver)
		require.NoError(t, err)
		stop()
		assert.Equal(t, tokens(1, 3), c.Entries)
		assert.Equal(t, "t1 t2 t3 ", c.Text)
	})

	t.Run("says when entries are gone past the bound", func(t *testing.T) {
		l, _ := newLogs(t, 5, ttl)
		k := key(t)
		require.NoError(t, l.Append(ctx, k, tokens(1, 10)))
		c, stop, err := l.Follow(ctx, k.ThreadID, k.MessageID, 2, newFollower().deliver)
		require.NoError(t, err)
		stop()
		assert.True(t, c.Found)
		assert.False(t, c.Complete)
		assert.Empty(t, c.Entries)
		assert.Equal(t, textOf(tokens(1, 10)), c.Text, "the snapshot is whole")
		assert.Equal(t, int64(10), c.Top)

		c, stop, err = l.Follow(ctx, k.ThreadID, k.MessageID, 6, newFollower().deliver)
		require.NoError(t, err)
		stop()
		assert.True(t, c.Complete, "the last five are kept")
		assert.Equal(t, tokens(7, 10), c.Entries)

		c, stop, err = l.Follow(ctx, k.ThreadID, k.MessageID, 11, newFollower().deliver)
		require.NoError(t, err)
		stop()
		assert.False(t, c.Complete, "a seq beyond the top is not continuity")
	})

	t.Run("forgets an answer after its ttl", func(t *testing.T) {
		l, _ := newLogs(t, 100, 300*time.Millisecond)
		k := key(t)
		require.NoError(t, l.Append(ctx, k, tokens(1, 2)))
		require.Eventually(t, func() bool {
			c, stop, err := l.Follow(ctx, k.ThreadID, k.MessageID, 0, newFollower().deliver)
			stop()
			return err == nil && !c.Found
		}, wait, 50*time.Millisecond)
	})

	t.Run("no gap and no repeat while the writer writes", func(t *testing.T) {
		a, b := newLogs(t, 1000, ttl)
		if b == nil {
			b = a
		}
		k := key(t)
		const n = 300
		written := make(chan int64, n)
		joined := make(chan struct{})
		go func() {
			for s := int64(1); s <= n; s++ {
				if err := a.Append(ctx, k, tokens(s, s)); err != nil {
					t.Error(err)
					return
				}
				written <- s
				if s == n/2 {
					<-joined // the rest is written after the follower joined
				}
			}
			_ = a.Append(ctx, k, []ports.AnswerEntry{final(n)})
		}()
		for range n / 3 { // join a third of the way in
			<-written
		}
		f := newFollower()
		c, stop, err := b.Follow(ctx, k.ThreadID, k.MessageID, 0, f.deliver)
		close(joined)
		require.NoError(t, err)
		defer stop()
		require.True(t, c.Found)
		require.True(t, c.Complete)
		got := c.Entries
		if !c.Done {
			got = append(got, f.waitFinal(t)...)
		}
		assert.Equal(t, append(tokens(1, n), final(n)), got)
	})

	t.Run("follows an answer written on another instance", func(t *testing.T) {
		a, b := newLogs(t, 100, ttl)
		if b == nil {
			return
		}
		k := key(t)
		require.NoError(t, a.Append(ctx, k, tokens(1, 2)))
		f := newFollower()
		c, stop, err := b.Follow(ctx, k.ThreadID, "", 0, f.deliver)
		require.NoError(t, err)
		defer stop()
		assert.Equal(t, tokens(1, 2), c.Entries)
		require.NoError(t, a.Append(ctx, k, append(tokens(3, 3), final(3))))
		assert.Equal(t, append(tokens(3, 3), final(3)), f.waitFinal(t))
	})
}
