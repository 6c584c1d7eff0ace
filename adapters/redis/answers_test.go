package redis_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/redis"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/test/containers"
)

// collected gathers what a follower is delivered.
type collected struct {
	mu  sync.Mutex
	got []ports.AnswerEntry
}

func (c *collected) deliver(e ports.AnswerEntry) {
	c.mu.Lock()
	c.got = append(c.got, e)
	c.mu.Unlock()
}

func (c *collected) all() []ports.AnswerEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]ports.AnswerEntry(nil), c.got...)
}

func answerTokens(from, to int64) []ports.AnswerEntry {
	var out []ports.AnswerEntry
	for s := from; s <= to; s++ {
		out = append(out, ports.AnswerEntry{Seq: s, Text: "w "})
	}
	return out
}

// A resume's catch-up is one read: Follow returns it without waiting for
// the answer's channel to be subscribed, and what is appended before the
// subscription is live still reaches the follower, once, in order.
func TestFollowCatchesUpBeforeItsSubscriptionIsLive(t *testing.T) {
	ctx := context.Background()
	l, release, err := redis.NewAnswersHeld(redis.AnswersConfig{Client: client(t), Prefix: containers.Prefix(t)})
	require.NoError(t, err)
	released := false
	t.Cleanup(func() {
		if !released {
			release()
		}
		l.Close()
	})
	key := ports.AnswerKey{ThreadID: "t-held", MessageID: "m", Epoch: "e"}
	require.NoError(t, l.Append(ctx, key, answerTokens(1, 3)))

	var c collected
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	cu, stop, err := l.Follow(fctx, key.ThreadID, key.MessageID, 1, c.deliver)
	cancel()
	require.NoError(t, err, "the catch-up waits for no subscription")
	defer stop()
	assert.True(t, cu.Complete)
	assert.Equal(t, answerTokens(2, 3), cu.Entries)

	// Published while nothing is subscribed: lost on the channel, found
	// by the read that follows the subscription.
	require.NoError(t, l.Append(ctx, key, answerTokens(4, 5)))
	assert.Empty(t, c.all())
	released = true
	release()
	end := ports.AnswerEntry{Seq: 6, Final: []byte(`{"type":"end","seq":6}`)}
	require.NoError(t, l.Append(ctx, key, append(answerTokens(6, 6), end)))
	want := append(answerTokens(4, 6), end)
	require.Eventually(t, func() bool { return len(c.all()) >= len(want) }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, want, c.all())
}

// A follower that was delivered the final entry holds no subscription,
// though its stop was never called (the edge drops it with the end).
func TestFollowEndsItsSubscriptionWithTheFinalEntry(t *testing.T) {
	ctx := context.Background()
	l, err := redis.NewAnswers(redis.AnswersConfig{Client: client(t), Prefix: containers.Prefix(t)})
	require.NoError(t, err)
	t.Cleanup(l.Close)
	key := ports.AnswerKey{ThreadID: "t-ends", MessageID: "m", Epoch: "e"}
	require.NoError(t, l.Append(ctx, key, answerTokens(1, 2)))
	var c collected
	_, _, err = l.Follow(ctx, key.ThreadID, key.MessageID, 2, c.deliver)
	require.NoError(t, err)
	require.Equal(t, 1, l.Subscriptions())
	end := ports.AnswerEntry{Seq: 3, Final: []byte(`{"type":"end","seq":3}`)}
	require.NoError(t, l.Append(ctx, key, append(answerTokens(3, 3), end)))
	require.Eventually(t, func() bool { return len(c.all()) == 2 }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, append(answerTokens(3, 3), end), c.all())
	assert.Equal(t, 0, l.Subscriptions())
}
