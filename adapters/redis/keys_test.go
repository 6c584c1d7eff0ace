package redis_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/redis"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/test/containers"
)

// A prefix with a brace would hold the hash tag Redis Cluster hashes, and
// put every key of every thread and session in one slot: refused by each
// adapter, before it touches Redis.
func TestPrefixWithABraceIsRefused(t *testing.T) {
	for _, prefix := range []string{"{ws}:", "ws}:", "a{b:"} {
		t.Run(prefix, func(t *testing.T) {
			_, err := redis.NewBroker(redis.BrokerConfig{Client: client(t), Prefix: prefix})
			require.ErrorContains(t, err, "prefix")
			_, err = redis.NewLock(redis.LockConfig{Client: client(t), Prefix: prefix})
			require.ErrorContains(t, err, "prefix")
			_, err = redis.NewPresence(redis.PresenceConfig{Client: client(t), Prefix: prefix, InstanceID: "i"})
			require.ErrorContains(t, err, "prefix")
		})
	}
}

// The keys of a session carry its id as the hash tag, as RULES.md names
// them: <prefix>presence:{<id>}. (The lock's and the fence's names are
// checked in lock_test.go, the channel's in broker_test.go.)
func TestPresenceKeyCarriesTheSessionAsHashTag(t *testing.T) {
	ctx := t.Context()
	prefix := containers.Prefix(t)
	c := client(t)
	p := newPresence(t, c, prefix, "i", time.Minute)
	for _, session := range []string{"s1", "odd}id", "o{dd"} {
		require.NoError(t, p.Add(ctx, session, ports.Member{ConnectionID: "c1", UserType: "admin"}))
		n, err := c.Do(ctx, c.B().Hlen().Key(prefix+"presence:{"+session+"}").Build()).AsInt64()
		require.NoError(t, err)
		assert.Equal(t, int64(1), n, session)
		got, err := p.List(ctx, session)
		require.NoError(t, err)
		assert.Len(t, got, 1, session)
	}
}
