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

// Gated is one instance's thread gate with the thread lock and the thread
// queue it looks at.
type Gated struct {
	Gate  ports.ThreadGate
	Lock  ports.ThreadLock
	Queue ports.ThreadQueue
}

// ThreadGate runs the thread gate contract on the adapters that newGates
// makes: the gate takes the lock that Lock takes, by the queue's rule.
func ThreadGate(t *testing.T, newGates Instances[Gated]) {
	ctx := context.Background()
	const long = time.Minute
	take := func(t *testing.T, g Gated, id, ticket string) ports.Lease {
		t.Helper()
		lease, err := g.Gate.TakeTurn(ctx, id, "owner", ticket, long)
		require.NoError(t, err)
		return lease
	}
	refused := func(t *testing.T, g Gated, id, ticket string, want error) {
		t.Helper()
		lease, err := g.Gate.TakeTurn(ctx, id, "owner", ticket, long)
		require.ErrorIs(t, err, want)
		assert.Nil(t, lease)
	}
	join := func(t *testing.T, q ports.ThreadQueue, id, ticket string, front bool) {
		t.Helper()
		_, err := q.Join(ctx, id, ticket, front, 5, long)
		require.NoError(t, err)
	}

	t.Run("a free thread nobody waits for is taken, once", func(t *testing.T) {
		a, b := newGates(t)
		id := session(t)
		first := take(t, a, id, "")
		assert.Positive(t, first.Fence())
		refused(t, b, id, "", conversation.ErrThreadBusy)
		_, err := b.Lock.Acquire(ctx, id, "other", long)
		require.ErrorIs(t, err, conversation.ErrThreadBusy, "the gate's lease is the lock's")
		require.NoError(t, first.Renew(ctx))
		require.NoError(t, first.Release(ctx))
		second := take(t, b, id, "")
		assert.Greater(t, second.Fence(), first.Fence(), "fences rise as the lock's do")
		require.NoError(t, second.Release(ctx))
		lease, err := a.Lock.Acquire(ctx, id, "other", long)
		require.NoError(t, err, "released: the lock is free")
		require.NoError(t, lease.Release(ctx))
	})

	t.Run("the chats that wait have the thread first", func(t *testing.T) {
		a, b := newGates(t)
		id := session(t)
		join(t, b.Queue, id, "waits", false)
		refused(t, a, id, "", conversation.ErrWaitersAhead)
		refused(t, a, id, "stranger", conversation.ErrWaitersAhead)
		lease := take(t, b, id, "waits")
		refused(t, a, id, "waits", conversation.ErrThreadBusy)
		require.NoError(t, lease.Release(ctx))
		require.NoError(t, b.Queue.Leave(ctx, id, "waits"))
		require.NoError(t, take(t, a, id, "").Release(ctx))
	})

	t.Run("front tickets head the queue", func(t *testing.T) {
		a, b := newGates(t)
		id := session(t)
		join(t, a.Queue, id, "back", false)
		join(t, b.Queue, id, "front", true)
		refused(t, a, id, "back", conversation.ErrWaitersAhead)
		require.NoError(t, take(t, b, id, "front").Release(ctx))
	})

	t.Run("a ticket not in the queue never heads it", func(t *testing.T) {
		a, _ := newGates(t)
		refused(t, a, session(t), "gone", conversation.ErrWaitersAhead)
	})

	t.Run("expired tickets do not hold the thread", func(t *testing.T) {
		a, _ := newGates(t)
		id := session(t)
		_, err := a.Queue.Join(ctx, id, "dead", false, 5, 20*time.Millisecond)
		require.NoError(t, err)
		time.Sleep(50 * time.Millisecond)
		require.NoError(t, take(t, a, id, "").Release(ctx))
	})

	t.Run("a release tells the waiters, on every instance", func(t *testing.T) {
		a, b := newGates(t)
		id := session(t)
		join(t, b.Queue, id, "waits", false)
		changed, stop := b.Queue.Watch(id)
		defer stop()
		// The watch's subscription may take a moment to be in place:
		// take and release the thread until the waiter heard.
		deadline := time.Now().Add(wait)
		for heard := false; !heard; {
			require.NoError(t, take(t, a, id, "waits").Release(ctx))
			select {
			case <-changed:
				heard = true
			case <-time.After(50 * time.Millisecond):
				require.True(t, time.Now().Before(deadline), "the waiter never heard a release")
			}
		}
	})
}
