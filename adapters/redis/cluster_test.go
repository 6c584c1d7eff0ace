package redis_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"strconv"
	"strings"
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

// The ports' contracts hold on a Redis Cluster of three masters, each
// instance with a client of its own that found the cluster by itself.

func TestBrokerContractOnACluster(t *testing.T) {
	porttest.Broker(t, func(t *testing.T) (ports.Broker, ports.Broker) {
		t.Helper()
		prefix := containers.Prefix(t)
		return newBroker(t, clusterClient(t), prefix), newBroker(t, clusterClient(t), prefix)
	})
}

func TestPresenceContractOnACluster(t *testing.T) {
	porttest.Presence(t, func(t *testing.T) (ports.Presence, ports.Presence) {
		t.Helper()
		prefix := containers.Prefix(t)
		return newPresence(t, clusterClient(t), prefix, "a", time.Minute), newPresence(t, clusterClient(t), prefix, "b", time.Minute)
	})
}

func TestPresenceReaperContractOnACluster(t *testing.T) {
	porttest.PresenceReaper(t, reaperFleet(clusterClient))
}

// The lock's script touches the lock and the fence of one thread: refused
// on a cluster (CROSSSLOT) unless both carry the thread as hash tag.
func TestLockContractOnACluster(t *testing.T) {
	porttest.ThreadLock(t, func(t *testing.T) (ports.ThreadLock, ports.ThreadLock) {
		t.Helper()
		prefix := containers.Prefix(t)
		return newLock(t, clusterClient(t), prefix), newLock(t, clusterClient(t), prefix)
	})
}

func TestRunControlContractOnACluster(t *testing.T) {
	porttest.RunControl(t, func(t *testing.T) (ports.RunControl, ports.RunControl) {
		t.Helper()
		prefix := containers.Prefix(t)
		return newRuns(t, clusterClient(t), prefix), newRuns(t, clusterClient(t), prefix)
	}, false)
}

// The answer log's scripts touch the four keys of one answer: refused on
// a cluster (CROSSSLOT) unless all carry the thread as hash tag.
func TestAnswerLogContractOnACluster(t *testing.T) {
	porttest.AnswerLog(t, func(t *testing.T, maxEvents int, ttl time.Duration) (ports.AnswerLog, ports.AnswerLog) {
		t.Helper()
		prefix := containers.Prefix(t)
		mk := func() ports.AnswerLog {
			l, err := redis.NewAnswers(redis.AnswersConfig{Client: clusterClient(t), Prefix: prefix, MaxEvents: maxEvents, TTL: ttl})
			require.NoError(t, err)
			t.Cleanup(l.Close)
			return l
		}
		return mk(), mk()
	})
}

func newShardedBroker(t *testing.T, c rueidis.Client, prefix string, partitions int) *redis.Broker {
	t.Helper()
	return newBrokerWith(t, redis.BrokerConfig{Client: c, Prefix: prefix, Partitions: partitions})
}

// Sharded pub/sub keeps the broker's contract, on a cluster and on a
// single Redis 7 alike.
func TestShardedBrokerContract(t *testing.T) {
	for _, on := range []struct {
		name   string
		client func(*testing.T) rueidis.Client
	}{{"cluster", clusterClient}, {"single", client}} {
		t.Run(on.name, func(t *testing.T) {
			porttest.Broker(t, func(t *testing.T) (ports.Broker, ports.Broker) {
				t.Helper()
				prefix := containers.Prefix(t)
				return newShardedBroker(t, on.client(t), prefix, 4), newShardedBroker(t, on.client(t), prefix, 4)
			})
		})
	}
}

func TestShardedBrokerKeepsOnePublishersOrderOnACluster(t *testing.T) {
	prefix := containers.Prefix(t)
	inOrder(t, newShardedBroker(t, clusterClient(t), prefix, 8), newShardedBroker(t, clusterClient(t), prefix, 8))
}

// A sharded broker holds one subscription connection per partition that
// has sessions here, whatever the number of sessions or slots, each on the
// node serving its channel.
func TestShardedBrokerUsesOneConnectionPerPartition(t *testing.T) {
	ctx := t.Context()
	prefix := containers.Prefix(t)
	name := "sharded-" + strings.ToLower(rand.Text()[:8])
	opt, err := rueidis.ParseURL(cluster.URL())
	require.NoError(t, err)
	opt.ClientName = name
	opt.DisableCache = true
	c, err := rueidis.NewClient(opt)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	const partitions = 6
	b := newShardedBroker(t, c, prefix, partitions)
	var lives []<-chan struct{}
	for i := range 300 {
		lives = append(lives, b.Subscribe(fmt.Sprintf("s%d", i), func(ports.Delivery) {}))
	}
	for _, live := range lives {
		select {
		case <-live:
		case <-time.After(30 * time.Second):
			t.Fatal("a session's subscription never live")
		}
	}
	conns, channels := 0, 0
	for addr, node := range c.Nodes() {
		list, err := node.Do(ctx, node.B().ClientList().Build()).ToString()
		require.NoError(t, err, addr)
		for line := range strings.Lines(list) {
			f := clientFields(line)
			if f["name"] != name {
				continue
			}
			assert.Equal(t, "0", f["sub"], "no plain subscription: %s", line)
			if n, _ := strconv.Atoi(f["ssub"]); n > 0 {
				conns++
				channels += n
			}
		}
	}
	assert.Equal(t, partitions, conns, "one subscription connection per partition (300 sessions)")
	assert.Equal(t, partitions, channels, "one channel on each")
}

// clientFields reads a CLIENT LIST line: id=1 addr=… name=… sub=0 ssub=1 …
func clientFields(line string) map[string]string {
	f := make(map[string]string)
	for _, kv := range strings.Fields(line) {
		k, v, _ := strings.Cut(kv, "=")
		f[k] = v
	}
	return f
}

func TestProbeShardedPubSub(t *testing.T) {
	ctx := t.Context()
	require.NoError(t, redis.ProbeShardedPubSub(ctx, clusterClient(t), "", 16))
	require.NoError(t, redis.ProbeShardedPubSub(ctx, client(t), "", 16))

	// A server that refuses SPUBLISH (Redis 6, or an ACL that forbids
	// it) is named as the reason.
	admin := client(t)
	user := "noshard" + strings.ToLower(rand.Text()[:6])
	require.NoError(t, admin.Do(ctx, admin.B().AclSetuser().Username(user).Rule("on", "nopass", "+@all", "-spublish", "~*", "&*").Build()).Error())
	t.Cleanup(func() { _ = admin.Do(context.Background(), admin.B().AclDeluser().Username(user).Build()).Error() })
	u := strings.Replace(server.URL(), "redis://", "redis://"+user+":x@", 1)
	limited, err := redis.Open(ctx, u, 10*time.Second)
	require.NoError(t, err)
	t.Cleanup(limited.Close)
	err = redis.ProbeShardedPubSub(ctx, limited, "", 4)
	require.ErrorContains(t, err, "sharded pub/sub (SPUBLISH, Redis 7 or later) refused")
}

// The history's scripts touch a session's offset hash and stream and
// PUBLISH on its channel: one slot, the session's.
func TestHistoryContractOnACluster(t *testing.T) {
	porttest.History(t, func(t *testing.T, size int, ttl time.Duration) (porttest.HistoryInstance, porttest.HistoryInstance) {
		t.Helper()
		prefix := containers.Prefix(t)
		a, b := newBroker(t, clusterClient(t), prefix), newBroker(t, clusterClient(t), prefix)
		return porttest.HistoryInstance{Broker: a, History: newHistory(t, a, size, ttl)},
			porttest.HistoryInstance{Broker: b, History: newHistory(t, b, size, ttl)}
	})
}

// TestShardedBrokerCatchesUpAfterResubscribing: Redis drops an instance's
// subscription to a partition channel when its slot moves (a failover),
// and the instance subscribes again on the new master; what was published
// in between reaches it from the partition's log. Here the subscription
// is lost with its connection and held off while both instances publish:
// once back, the instance gets every message once and in order, its own
// included (they were not delivered here directly: they come back from
// the log).
func TestShardedBrokerCatchesUpAfterResubscribing(t *testing.T) {
	ctx := t.Context()
	prefix := containers.Prefix(t)
	clientName := "sharded-" + strings.ReplaceAll(prefix, ":", "")
	held := holdResubscribe(t)
	a := newBrokerWith(t, redis.BrokerConfig{Client: namedClient(t, clientName), Prefix: prefix, Partitions: 1, OnError: held.onError})
	t.Cleanup(held.resume) // before a.Close: a held broker never stops
	b := newShardedBroker(t, client(t), prefix, 1)
	got := make(chan string, 100)
	waitLive(t, a.Subscribe("s", func(d ports.Delivery) { got <- string(d.Payload) }))
	require.NoError(t, b.Publish(ctx, "s", []byte("before")))
	assert.Equal(t, "before", <-got)

	killPubSub(t, clientName)
	held.waitLost(t)
	want := []string{"before"}
	for i := range 5 {
		for _, from := range []struct {
			name string
			b    *redis.Broker
		}{{"a", a}, {"b", b}} {
			msg := fmt.Sprintf("%s%d", from.name, i)
			require.NoError(t, from.b.Publish(ctx, "s", []byte(msg)))
			want = append(want, msg)
		}
	}
	select {
	case m := <-got:
		t.Fatalf("%q came while the subscription was down", m)
	default:
	}
	held.resume()
	require.NoError(t, b.Publish(ctx, "s", []byte("after")))
	want = append(want, "after")
	all := []string{"before"}
	for all[len(all)-1] != "after" {
		select {
		case m := <-got:
			all = append(all, m)
		case <-time.After(30 * time.Second): // against a hang only
			t.Fatalf("got %q, never the rest", all)
		}
	}
	assert.Equal(t, want, all)
}

// TestShardedBrokerDoesNotReplayToLaterSessions: a partition that stopped
// being wanted here while the subscription was down starts afresh: a
// session that joins it afterwards gets nothing of what was published
// before it joined.
func TestShardedBrokerDoesNotReplayToLaterSessions(t *testing.T) {
	ctx := t.Context()
	prefix := containers.Prefix(t)
	clientName := "sharded-" + strings.ReplaceAll(prefix, ":", "")
	held := holdResubscribe(t)
	a := newBrokerWith(t, redis.BrokerConfig{Client: namedClient(t, clientName), Prefix: prefix, Partitions: 1, OnError: held.onError})
	t.Cleanup(held.resume)
	b := newShardedBroker(t, client(t), prefix, 1)
	waitLive(t, a.Subscribe("s", func(ports.Delivery) {}))
	killPubSub(t, clientName)
	held.waitLost(t)
	a.Unsubscribe("s")
	require.NoError(t, b.Publish(ctx, "t", []byte("earlier")))
	got := make(chan string, 10)
	live := a.Subscribe("t", func(d ports.Delivery) { got <- string(d.Payload) })
	held.resume()
	waitLive(t, live)
	require.NoError(t, b.Publish(ctx, "t", []byte("later")))
	assert.Equal(t, "later", <-got, "what came before the join is not replayed")
}

func waitLive(t *testing.T, live <-chan struct{}) {
	t.Helper()
	select {
	case <-live:
	case <-time.After(30 * time.Second): // against a hang only
		t.Fatal("subscription never live")
	}
}
