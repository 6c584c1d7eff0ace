package redis_test

import (
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/redis"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/ports/porttest"
	"github.com/wsserver/wsserver/test/containers"
)

func newQueue(t *testing.T, c rueidis.Client, prefix string) *redis.Queue {
	t.Helper()
	q, err := redis.NewQueue(redis.QueueConfig{Client: c, Prefix: prefix})
	require.NoError(t, err)
	t.Cleanup(q.Close)
	return q
}

func TestQueueContract(t *testing.T) {
	porttest.ThreadQueue(t, func(t *testing.T) (ports.ThreadQueue, ports.ThreadQueue) {
		t.Helper()
		prefix := containers.Prefix(t)
		// Two clients, as two instances have.
		return newQueue(t, client(t), prefix), newQueue(t, client(t), prefix)
	})
}

// Each script touches the three keys of one thread: refused on a cluster
// (CROSSSLOT) unless they all carry the thread as hash tag.
func TestQueueContractOnACluster(t *testing.T) {
	porttest.ThreadQueue(t, func(t *testing.T) (ports.ThreadQueue, ports.ThreadQueue) {
		t.Helper()
		prefix := containers.Prefix(t)
		return newQueue(t, clusterClient(t), prefix), newQueue(t, clusterClient(t), prefix)
	})
}

func TestQueueNeedsAClientAndAPlainPrefix(t *testing.T) {
	_, err := redis.NewQueue(redis.QueueConfig{})
	require.Error(t, err)
	_, err = redis.NewQueue(redis.QueueConfig{Client: client(t), Prefix: "{ws}:"})
	require.ErrorContains(t, err, "prefix")
}

// The keys are named as RULES.md says, <prefix>queue:{<thread>}..., and
// expire when the queue is abandoned.
func TestQueueKeysCarryTheThreadAndExpire(t *testing.T) {
	ctx := t.Context()
	prefix := containers.Prefix(t)
	c := client(t)
	q := newQueue(t, c, prefix)
	_, err := q.Join(ctx, "t1", "back", false, 5, 10*time.Second)
	require.NoError(t, err)
	_, err = q.Join(ctx, "t1", "front", true, 5, 10*time.Second)
	require.NoError(t, err)
	for _, key := range []string{prefix + "queue:{t1}", prefix + "queue:{t1}:front", prefix + "queue:{t1}:alive"} {
		pttl, err := c.Do(ctx, c.B().Pttl().Key(key).Build()).AsInt64()
		require.NoError(t, err, key)
		assert.InDelta(t, 20_000, pttl, 3_000, "%s expires after twice the ttl", key)
	}
	require.NoError(t, q.Leave(ctx, "t1", "back"))
	require.NoError(t, q.Leave(ctx, "t1", "front"))
	n, err := c.Do(ctx, c.B().Exists().Key(prefix+"queue:{t1}", prefix+"queue:{t1}:front", prefix+"queue:{t1}:alive").Build()).AsInt64()
	require.NoError(t, err)
	assert.Zero(t, n, "an empty queue leaves no key")
}
