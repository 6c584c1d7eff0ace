package redis_test

import (
	"context"
	"fmt"
	"os"
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

// server is the one Redis of this package's tests, and cluster its one
// Redis Cluster (three masters, a replica each); tests keep apart by key
// prefix.
var (
	server  *containers.Redis
	cluster *containers.Cluster
)

func TestMain(m *testing.M) {
	ctx := context.Background()
	var err error
	server, err = containers.StartRedis(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "start redis:", err)
		os.Exit(1)
	}
	cluster, err = containers.StartCluster(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "start redis cluster:", err)
		_ = server.Terminate(ctx)
		os.Exit(1)
	}
	code := m.Run()
	_ = server.Terminate(ctx)
	_ = cluster.Terminate(ctx)
	os.Exit(code)
}

// clusterClient is a client of the cluster, as an instance has one.
func clusterClient(t *testing.T) rueidis.Client {
	t.Helper()
	c, err := redis.Open(t.Context(), cluster.URL(), 10*time.Second)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	require.Equal(t, rueidis.ClientModeCluster, c.Mode(), "rueidis finds the cluster by itself")
	return c
}

func client(t *testing.T) rueidis.Client {
	t.Helper()
	c, err := redis.Open(t.Context(), server.URL(), 10*time.Second)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// namedClient is a client whose connections carry name in CLIENT LIST.
func namedClient(t *testing.T, name string) rueidis.Client {
	t.Helper()
	c, err := redis.Open(t.Context(), server.URL()+"?client_name="+name, 10*time.Second)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

func newBroker(t *testing.T, c rueidis.Client, prefix string) *redis.Broker {
	t.Helper()
	return newBrokerWith(t, redis.BrokerConfig{Client: c, Prefix: prefix})
}

func newBrokerWith(t *testing.T, cfg redis.BrokerConfig) *redis.Broker {
	t.Helper()
	b, err := redis.NewBroker(cfg)
	require.NoError(t, err)
	t.Cleanup(b.Close)
	return b
}

func newPresence(t *testing.T, c rueidis.Client, prefix, instance string, ttl time.Duration) *redis.Presence {
	t.Helper()
	p, err := redis.NewPresence(redis.PresenceConfig{Client: c, Prefix: prefix, InstanceID: instance, TTL: ttl})
	require.NoError(t, err)
	t.Cleanup(p.Close)
	return p
}

func TestBrokerContract(t *testing.T) {
	porttest.Broker(t, func(t *testing.T) (ports.Broker, ports.Broker) {
		t.Helper()
		prefix := containers.Prefix(t)
		// Two clients, as two instances have.
		return newBroker(t, client(t), prefix), newBroker(t, client(t), prefix)
	})
}

func TestPresenceContract(t *testing.T) {
	porttest.Presence(t, func(t *testing.T) (ports.Presence, ports.Presence) {
		t.Helper()
		prefix := containers.Prefix(t)
		return newPresence(t, client(t), prefix, "a", time.Minute), newPresence(t, client(t), prefix, "b", time.Minute)
	})
}

func TestPresenceReaperContract(t *testing.T) {
	porttest.PresenceReaper(t, reaperFleet(client))
}

// reaperFleet makes a dying instance and two survivors, each with a client
// of its own from newClient.
func reaperFleet(newClient func(t *testing.T) rueidis.Client) func(t *testing.T) (porttest.Dying, []ports.PresenceReaper, ports.Presence) {
	return func(t *testing.T) (porttest.Dying, []ports.PresenceReaper, ports.Presence) {
		t.Helper()
		prefix := containers.Prefix(t)
		a, b := newPresence(t, newClient(t), prefix, "a", time.Minute), newPresence(t, newClient(t), prefix, "b", time.Minute)
		c := newClient(t)
		dying, err := redis.NewPresence(redis.PresenceConfig{Client: c, Prefix: prefix, InstanceID: "dying", TTL: 600 * time.Millisecond})
		require.NoError(t, err)
		kill := func() {
			dying.Close() // no goodbye: its heartbeat just stops
			require.Eventually(t, func() bool {
				n, err := a.AliveInstances(t.Context())
				return err == nil && n == 2
			}, 10*time.Second, 50*time.Millisecond, "the dying instance's alive key never expired")
		}
		return porttest.Dying{Presence: dying, Kill: kill}, []ports.PresenceReaper{a, b}, a
	}
}

func TestPresenceOfADeadInstanceExpires(t *testing.T) {
	ctx := t.Context()
	prefix := containers.Prefix(t)
	ttl := 600 * time.Millisecond
	alive := newPresence(t, client(t), prefix, "alive", ttl)
	dying, err := redis.NewPresence(redis.PresenceConfig{Client: client(t), Prefix: prefix, InstanceID: "dying", TTL: ttl})
	require.NoError(t, err)

	require.NoError(t, alive.Add(ctx, "s", ports.Member{ConnectionID: "a1", UserType: "admin"}))
	require.NoError(t, dying.Add(ctx, "s", ports.Member{ConnectionID: "d1", UserType: "agent"}))
	got, err := alive.List(ctx, "s")
	require.NoError(t, err)
	assert.Len(t, got, 2)

	dying.Close() // no goodbye: its heartbeat just stops
	require.Eventually(t, func() bool {
		got, err := alive.List(ctx, "s")
		return err == nil && len(got) == 1 && got[0].ConnectionID == "a1"
	}, 20*ttl, ttl/10, "the dead instance's entry never expired")
}

// An instance taken for dead while it was only cut off finds itself out
// of the registry at its next beat and writes its entries again.
func TestPresenceComesBackAfterBeingReaped(t *testing.T) {
	ctx := t.Context()
	prefix := containers.Prefix(t)
	c := client(t)
	p := newPresence(t, c, prefix, "i", 600*time.Millisecond)
	require.NoError(t, p.Add(ctx, "s", ports.Member{ConnectionID: "c1", UserType: "admin"}))

	// What a reaper does, with the liveness key still there: the entries
	// and the registry's name go.
	tokens, err := c.Do(ctx, c.B().Smembers().Key(prefix+"instances").Build()).AsStrSlice()
	require.NoError(t, err)
	require.Len(t, tokens, 1)
	require.NoError(t, c.Do(ctx, c.B().Hdel().Key(prefix+"presence:{s}").Field("c1").Build()).Error())
	require.NoError(t, c.Do(ctx, c.B().Srem().Key(prefix+"instances").Member(tokens[0]).Build()).Error())

	require.Eventually(t, func() bool {
		got, err := p.List(ctx, "s")
		return err == nil && len(got) == 1
	}, 10*time.Second, 50*time.Millisecond, "the reaped entries were not written again")
}

func TestPresenceComesBackAfterRedisLosesItsData(t *testing.T) {
	ctx := t.Context()
	prefix := containers.Prefix(t)
	c := client(t)
	p := newPresence(t, c, prefix, "i", 600*time.Millisecond)
	require.NoError(t, p.Add(ctx, "s", ports.Member{ConnectionID: "c1", UserType: "admin"}))

	keys, err := c.Do(ctx, c.B().Keys().Pattern(prefix+"*").Build()).AsStrSlice()
	require.NoError(t, err)
	for _, k := range keys {
		require.NoError(t, c.Do(ctx, c.B().Del().Key(k).Build()).Error())
	}
	require.Eventually(t, func() bool {
		got, err := p.List(ctx, "s")
		return err == nil && len(got) == 1
	}, 10*time.Second, 50*time.Millisecond, "presence was not re-announced")
}
