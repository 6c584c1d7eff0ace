package porttest

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
)

// ThreadQueue runs the thread queue contract on the adapter that newQueues
// makes.
func ThreadQueue(t *testing.T, newQueues Instances[ports.ThreadQueue]) {
	ctx := context.Background()
	const long = time.Minute
	head := func(t *testing.T, q ports.ThreadQueue, id string) string {
		t.Helper()
		h, err := q.Head(ctx, id)
		require.NoError(t, err)
		return h
	}
	join := func(t *testing.T, q ports.ThreadQueue, id, ticket string, front bool, limit int) int {
		t.Helper()
		pos, err := q.Join(ctx, id, ticket, front, limit, long)
		require.NoError(t, err)
		return pos
	}

	t.Run("first come first served", func(t *testing.T) {
		q, _ := newQueues(t)
		id := session(t)
		assert.Empty(t, head(t, q, id), "nobody waits on a new thread")
		assert.Equal(t, 1, join(t, q, id, "a", false, 5))
		assert.Equal(t, 2, join(t, q, id, "b", false, 5))
		assert.Equal(t, 3, join(t, q, id, "c", false, 5))
		assert.Equal(t, "a", head(t, q, id))
		require.NoError(t, q.Leave(ctx, id, "b"), "leaving from the middle")
		require.NoError(t, q.Leave(ctx, id, "a"))
		assert.Equal(t, "c", head(t, q, id))
		require.NoError(t, q.Leave(ctx, id, "c"))
		assert.Empty(t, head(t, q, id))
		require.NoError(t, q.Leave(ctx, id, "c"), "leaving twice is fine")
		require.NoError(t, q.Leave(ctx, session(t), "x"), "and leaving a queue never joined")
	})

	t.Run("front tickets go ahead, in their order", func(t *testing.T) {
		q, _ := newQueues(t)
		id := session(t)
		join(t, q, id, "waits", false, 5)
		assert.Equal(t, 1, join(t, q, id, "i1", true, 5))
		assert.Equal(t, 2, join(t, q, id, "i2", true, 5))
		assert.Equal(t, 4, join(t, q, id, "later", false, 5), "behind the front ones and the one that waited")
		assert.Equal(t, "i1", head(t, q, id))
		require.NoError(t, q.Leave(ctx, id, "i1"))
		assert.Equal(t, "i2", head(t, q, id))
		require.NoError(t, q.Leave(ctx, id, "i2"))
		assert.Equal(t, "waits", head(t, q, id))
	})

	t.Run("the bound counts each kind", func(t *testing.T) {
		q, _ := newQueues(t)
		id := session(t)
		join(t, q, id, "a", false, 2)
		join(t, q, id, "b", false, 2)
		_, err := q.Join(ctx, id, "c", false, 2, long)
		require.ErrorIs(t, err, conversation.ErrQueueFull)
		_, err = q.Join(ctx, id, "d", false, 0, long)
		require.ErrorIs(t, err, conversation.ErrQueueFull, "a bound of 0 takes none")
		assert.Equal(t, 1, join(t, q, id, "i", true, 1), "front tickets have their own bound")
		_, err = q.Join(ctx, id, "j", true, 1, long)
		require.ErrorIs(t, err, conversation.ErrQueueFull)
		require.NoError(t, q.Leave(ctx, id, "a"))
		assert.Equal(t, 3, join(t, q, id, "c", false, 2), "a place is free again")
	})

	t.Run("a ticket not kept expires", func(t *testing.T) {
		q, _ := newQueues(t)
		id := session(t)
		_, err := q.Join(ctx, id, "gone", false, 5, 50*time.Millisecond)
		require.NoError(t, err)
		join(t, q, id, "stays", false, 5)
		deadline := time.Now().Add(wait)
		for head(t, q, id) != "stays" {
			require.True(t, time.Now().Before(deadline), "the expired ticket never left")
			time.Sleep(10 * time.Millisecond)
		}
		require.ErrorIs(t, q.Keep(ctx, id, "gone", long), conversation.ErrTicketLost)
		require.ErrorIs(t, q.Keep(ctx, session(t), "never", long), conversation.ErrTicketLost)
		pos := join(t, q, id, "gone", false, 5)
		assert.Equal(t, 2, pos, "the expired ticket left its place: it joins at the back again")
	})

	t.Run("keeping a ticket keeps its place", func(t *testing.T) {
		q, _ := newQueues(t)
		id := session(t)
		const ttl = time.Second
		_, err := q.Join(ctx, id, "kept", false, 5, ttl)
		require.NoError(t, err)
		// Kept far more often than its ttl, for longer than the ttl.
		for end := time.Now().Add(3 * ttl / 2); time.Now().Before(end); time.Sleep(ttl / 10) {
			require.NoError(t, q.Keep(ctx, id, "kept", ttl))
		}
		assert.Equal(t, "kept", head(t, q, id))
	})

	t.Run("a watcher hears a notification", func(t *testing.T) {
		q, _ := newQueues(t)
		id := session(t)
		changed, stop := q.Watch(id)
		defer stop()
		notifyUntilHeard(t, q, id, changed)
		other, stopOther := q.Watch(session(t))
		defer stopOther()
		require.NoError(t, q.Notify(ctx, id))
		select {
		case <-other:
			t.Fatal("a notification reached another thread's watcher")
		case <-time.After(20 * time.Millisecond):
		}
		stop()
		stop() // twice is fine
		require.NoError(t, q.Notify(ctx, id), "a thread without watchers")
	})

	t.Run("across instances", func(t *testing.T) {
		a, b := newQueues(t)
		if b == nil {
			t.Skip("an in-process queue has no other instance")
		}
		id := session(t)
		join(t, a, id, "on-a", false, 5)
		assert.Equal(t, 2, join(t, b, id, "on-b", false, 5), "one queue for every instance")
		assert.Equal(t, "on-a", head(t, b, id))
		_, err := b.Join(ctx, id, "third", false, 2, long)
		require.ErrorIs(t, err, conversation.ErrQueueFull, "the bound counts every instance's")
		changed, stop := b.Watch(id)
		defer stop()
		notifyUntilHeard(t, a, id, changed)
		require.NoError(t, a.Leave(ctx, id, "on-a"))
		assert.Equal(t, "on-b", head(t, b, id))
	})
}

// notifyUntilHeard notifies the thread on q until changed receives: a
// subscription across instances may take a moment to be in place.
func notifyUntilHeard(t *testing.T, q ports.ThreadQueue, id string, changed <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		require.NoError(t, q.Notify(context.Background(), id))
		select {
		case <-changed:
			return
		case <-time.After(50 * time.Millisecond):
		}
		require.True(t, time.Now().Before(deadline), "the watcher never heard a notification")
	}
}
