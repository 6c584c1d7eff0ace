package redis_test

import (
	"github.com/stretchr/testify/require"
	"github.com/wsserver/wsserver/adapters/redis"

	"testing"
	"time"

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
