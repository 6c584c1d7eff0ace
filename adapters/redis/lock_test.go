package redis_test

import (
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/redis"
	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/ports/porttest"
	"github.com/wsserver/wsserver/test/containers"
)

func newLock(t *testing.T, c rueidis.Client, prefix string) *redis.Lock {
	t.Helper()
	l, err := redis.NewLock(redis.LockConfig{Client: c, Prefix: prefix})
	require.NoError(t, err)
	return l
}

func TestLockContract(t *testing.T) {
	porttest.ThreadLock(t, func(t *testing.T) (ports.ThreadLock, ports.ThreadLock) {
		t.Helper()
		prefix := containers.Prefix(t)
		// Two clients, as two instances have.
		return newLock(t, client(t), prefix), newLock(t, client(t), prefix)
	})
}

func TestLockNeedsAClient(t *testing.T) {
	_, err := redis.NewLock(redis.LockConfig{})
	require.Error(t, err)
}

func TestLockKeyHoldsTheOwnerAndExpires(t *testing.T) {
	ctx := t.Context()
	prefix := containers.Prefix(t)
	c := client(t)
	l := newLock(t, c, prefix)
	lease, err := l.Acquire(ctx, "t1", "instance-a/conn-7", 10*time.Second)
	require.NoError(t, err)

	key := prefix + "lock:{t1}"
	val, err := c.Do(ctx, c.B().Get().Key(key).Build()).ToString()
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(val, "instance-a/conn-7/"), "the value names the owner: %q", val)
	assert.Greater(t, len(val), len("instance-a/conn-7/")+16, "and a random token: %q", val)
	pttl, err := c.Do(ctx, c.B().Pttl().Key(key).Build()).AsInt64()
	require.NoError(t, err)
	assert.InDelta(t, 10_000, pttl, 2_000)

	require.NoError(t, lease.Release(ctx))
	n, err := c.Do(ctx, c.B().Exists().Key(key).Build()).AsInt64()
	require.NoError(t, err)
	assert.Zero(t, n, "released: the key is gone")
}

func TestLockLeaseExpiresUnlessRenewed(t *testing.T) {
	ctx := t.Context()
	prefix := containers.Prefix(t)
	a, b := newLock(t, client(t), prefix), newLock(t, client(t), prefix)
	const ttl = 300 * time.Millisecond

	start := time.Now()
	held, err := a.Acquire(ctx, "t1", "a-conn", ttl)
	require.NoError(t, err)
	_, err = b.Acquire(ctx, "t1", "b-conn", time.Minute)
	require.ErrorIs(t, err, conversation.ErrThreadBusy, "live on the other instance")

	// Nobody renews: the other instance gets the thread once the ttl passes.
	taken := acquireEventually(t, b, "t1", "b-conn")
	assert.GreaterOrEqual(t, time.Since(start), ttl-10*time.Millisecond, "not before the ttl")
	require.ErrorIs(t, held.Renew(ctx), conversation.ErrLeaseLost)
	require.NoError(t, taken.Release(ctx))
}

func TestLockStaleHolderCannotTouchTheNewLease(t *testing.T) {
	ctx := t.Context()
	prefix := containers.Prefix(t)
	c := client(t)
	a, b := newLock(t, c, prefix), newLock(t, client(t), prefix)
	key := prefix + "lock:{t1}"

	stale, err := a.Acquire(ctx, "t1", "same-owner", 50*time.Millisecond)
	require.NoError(t, err)
	// The same owner name on purpose: only the token tells leases apart.
	fresh := acquireEventually(t, b, "t1", "same-owner")
	val, err := c.Do(ctx, c.B().Get().Key(key).Build()).ToString()
	require.NoError(t, err)

	require.ErrorIs(t, stale.Renew(ctx), conversation.ErrLeaseLost, "the stale holder cannot renew")
	require.NoError(t, stale.Release(ctx), "releasing a lost lease is not an error")
	require.NoError(t, stale.Release(ctx))

	after, err := c.Do(ctx, c.B().Get().Key(key).Build()).ToString()
	require.NoError(t, err, "the new lease is still there")
	assert.Equal(t, val, after)
	pttl, err := c.Do(ctx, c.B().Pttl().Key(key).Build()).AsInt64()
	require.NoError(t, err)
	assert.Greater(t, pttl, int64(30_000), "and keeps its own ttl, not the stale lease's")
	_, err = a.Acquire(ctx, "t1", "a-conn", time.Minute)
	require.ErrorIs(t, err, conversation.ErrThreadBusy)

	require.NoError(t, fresh.Renew(ctx))
	require.NoError(t, fresh.Release(ctx))
	_, err = a.Acquire(ctx, "t1", "a-conn", time.Minute)
	require.NoError(t, err, "free once the holder released it")
}

// acquireEventually retries until the thread is free: its lease expired.
func acquireEventually(t *testing.T, l *redis.Lock, id, owner string) ports.Lease {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		lease, err := l.Acquire(t.Context(), id, owner, time.Minute)
		if err == nil {
			return lease
		}
		require.ErrorIs(t, err, conversation.ErrThreadBusy)
		require.True(t, time.Now().Before(deadline), "the lease never expired")
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLockRedisFailuresAreNotBusy(t *testing.T) {
	ctx := t.Context()
	prefix := containers.Prefix(t)
	c, err := redis.Open(ctx, server.URL(), 10*time.Second)
	require.NoError(t, err)
	var (
		mu  sync.Mutex
		ops []string
	)
	l, err := redis.NewLock(redis.LockConfig{Client: c, Prefix: prefix, OnError: func(op string) {
		mu.Lock()
		defer mu.Unlock()
		ops = append(ops, op)
	}})
	require.NoError(t, err)
	lease, err := l.Acquire(ctx, "t1", "conn", time.Minute)
	require.NoError(t, err)
	c.Close()

	_, err = l.Acquire(ctx, "t2", "conn", time.Minute)
	require.Error(t, err)
	require.NotErrorIs(t, err, conversation.ErrThreadBusy)
	err = lease.Renew(ctx)
	require.Error(t, err)
	require.NotErrorIs(t, err, conversation.ErrLeaseLost, "no answer is not a lost lease: the caller retries")
	require.Error(t, lease.Release(ctx))
	_, err = l.TakeTurn(ctx, "t3", "conn", "", time.Minute)
	require.Error(t, err)
	require.NotErrorIs(t, err, conversation.ErrThreadBusy)
	require.NotErrorIs(t, err, conversation.ErrWaitersAhead)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"lock_acquire", "lock_renew", "lock_release", "lock_take"}, ops)
}

// The fencing token comes from a counter per thread, raised in the same
// script as the lock; it keeps increasing when the counter is lost (Redis
// restarted empty, or the key expired), since it never falls behind
// Redis's clock.
func TestLockFencingTokens(t *testing.T) {
	ctx := t.Context()
	prefix := containers.Prefix(t)
	c := client(t)
	a, b := newLock(t, c, prefix), newLock(t, client(t), prefix)
	fenceKey := prefix + "fence:{t1}"

	first, err := a.Acquire(ctx, "t1", "a-conn", time.Minute)
	require.NoError(t, err)
	stored, err := c.Do(ctx, c.B().Get().Key(fenceKey).Build()).AsInt64()
	require.NoError(t, err)
	assert.Equal(t, first.Fence(), stored, "the counter holds the last token")
	pttl, err := c.Do(ctx, c.B().Pttl().Key(fenceKey).Build()).AsInt64()
	require.NoError(t, err)
	assert.Positive(t, pttl, "the counter expires")
	_, err = b.Acquire(ctx, "t1", "b-conn", time.Minute)
	require.ErrorIs(t, err, conversation.ErrThreadBusy)
	require.NoError(t, first.Release(ctx))

	second, err := b.Acquire(ctx, "t1", "b-conn", time.Minute)
	require.NoError(t, err)
	assert.Greater(t, second.Fence(), first.Fence())
	require.NoError(t, second.Release(ctx))

	require.NoError(t, c.Do(ctx, c.B().Del().Key(fenceKey).Build()).Error())
	third, err := a.Acquire(ctx, "t1", "a-conn", time.Minute)
	require.NoError(t, err)
	assert.Greater(t, third.Fence(), second.Fence(), "a lost counter does not start over")
	require.NoError(t, third.Release(ctx))

	// A counter ahead of the clock (a clock stepped back) is followed.
	ahead := third.Fence() + 1_000_000_000
	require.NoError(t, c.Do(ctx, c.B().Set().Key(fenceKey).Value(strconv.FormatInt(ahead, 10)).Build()).Error())
	fourth, err := a.Acquire(ctx, "t1", "a-conn", time.Minute)
	require.NoError(t, err)
	assert.Equal(t, ahead+1, fourth.Fence())
	require.NoError(t, fourth.Release(ctx))
}

func TestGateContract(t *testing.T) {
	porttest.ThreadGate(t, func(t *testing.T) (porttest.Gated, porttest.Gated) {
		t.Helper()
		prefix := containers.Prefix(t)
		gated := func() porttest.Gated {
			c := client(t)
			l := newLock(t, c, prefix)
			return porttest.Gated{Gate: l, Lock: l, Queue: newQueue(t, c, prefix)}
		}
		return gated(), gated()
	})
}

// The script touches the lock's, the fence's and the queue's keys of one
// thread: refused on a cluster (CROSSSLOT) unless they share its slot.
func TestGateContractOnACluster(t *testing.T) {
	porttest.ThreadGate(t, func(t *testing.T) (porttest.Gated, porttest.Gated) {
		t.Helper()
		prefix := containers.Prefix(t)
		gated := func() porttest.Gated {
			c := clusterClient(t)
			l := newLock(t, c, prefix)
			return porttest.Gated{Gate: l, Lock: l, Queue: newQueue(t, c, prefix)}
		}
		return gated(), gated()
	})
}
