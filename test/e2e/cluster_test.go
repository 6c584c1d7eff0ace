package e2e

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/redis"
)

// TestClusterFailoverMidFanout: while one socket broadcasts to a session
// with members on two instances, the cluster master serving the session's
// channel is replaced by its replica (CLUSTER FAILOVER, as a maintenance
// or an ElastiCache failover does). Nothing is lost silently (PROTOCOL.md
// §4.6): every broadcast whose sender got no `unavailable` reaches every
// member, each at most once and in the order sent; and broadcasts cross
// again afterwards with nobody stepping in. With sharded pub/sub
// (E2E_REDIS=cluster-sharded) the failover moves the slot of the session's
// partition channel, and Redis drops every instance's subscription to it:
// what is published on the new master before an instance subscribes there
// again reaches it from the partition's log.
func TestClusterFailoverMidFanout(t *testing.T) {
	if servers.Cluster == nil {
		t.Skip("runs on a Redis Cluster: E2E_REDIS=cluster (make test runs it)")
	}
	partitions := 0
	mk := func(id string) *instance {
		c := defaults(t)
		c.InstanceID = id
		useRedis(&c, redisURL())
		partitions = c.Store.ShardedPubSubPartitions
		// The sender waits for each answer; the limit is not under test.
		c.WebSocket.RateLimitPerSec, c.WebSocket.RateLimitBurst = 10_000, 10_000
		return start(t, c)
	}
	a, b := mk("a"), mk("b")
	s := uniqueSession(t)
	sender := join(t, a, s, "admin")
	members := []*client{join(t, a, s, "viewer")}
	for range 4 {
		members = append(members, join(t, b, s, "agent"))
	}

	// The failover starts after the first broadcasts, and the sending goes
	// on until it is over and some more have gone out.
	const before, after = 20, 50
	channel := redis.ChannelOf("", partitions, s)
	failedOver := make(chan error, 1)
	var sent []int
	refused := make(map[int]bool) // answered unavailable
	overAt := -1                  // the first broadcast sent after the failover
	for i := 0; overAt < 0 || i < overAt+after; i++ {
		if i == before {
			go func() { failedOver <- servers.Cluster.Failover(context.Background(), channel) }()
		}
		if overAt < 0 && len(failedOver) > 0 {
			overAt = i
		}
		require.Less(t, i, 100_000, "the failover never ended")
		sender.send(fmt.Sprintf(`{"type":"broadcast","msg":%d}`, i))
		sender.send(`{"type":"ping"}`)
		// The sender's own copy comes from Redis (or from its instance
		// when Redis was not reached), an error only when it failed; the
		// pong comes after both, or after the error at least.
		own, pong := false, false
		for !own || !pong {
			m := sender.next()
			switch m["type"] {
			case "session_message":
				if n, ok := m["msg"].(float64); ok && int(n) == i {
					own = true
				}
			case "error":
				require.Equal(t, "unavailable", m["code"], "%v", m)
				refused[i] = true
			case "pong":
				pong = true
			}
		}
		sent = append(sent, i)
	}
	require.NoError(t, <-failedOver)
	t.Logf("%d broadcasts, %d answered unavailable during the failover", len(sent), len(refused))

	// Every member got every broadcast not refused, in order, once each.
	last := sent[len(sent)-1]
	for k, m := range members {
		var got []int
		for len(got) == 0 || got[len(got)-1] != last {
			msg := m.nextOf("session_message")
			n, ok := msg["msg"].(float64)
			require.True(t, ok, "%v", msg)
			got = append(got, int(n))
		}
		seen := make(map[int]bool)
		for j, n := range got {
			require.False(t, seen[n], "member %d got %d twice", k, n)
			seen[n] = true
			if j > 0 {
				require.Less(t, got[j-1], n, "member %d: out of order", k)
			}
		}
		for _, i := range sent {
			if !refused[i] {
				assert.True(t, seen[i], "member %d never got broadcast %d, and its sender was not told", k, i)
			}
		}
	}

	// Recovered by itself: broadcasts cross without error again.
	sender.send(`{"type":"broadcast","msg":"after"}`)
	for _, m := range members {
		assert.Equal(t, "after", m.nextOf("session_message")["msg"])
	}
	sender.send(`{"type":"ping"}`)
	for {
		msg := sender.next()
		require.NotEqual(t, "error", msg["type"], "%v", msg)
		if msg["type"] == "pong" {
			break
		}
	}
}
