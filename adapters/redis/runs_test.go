package redis_test

import (
	"time"

	"testing"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/redis"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/ports/porttest"
	"github.com/wsserver/wsserver/test/containers"
)

func newRuns(t *testing.T, c rueidis.Client, prefix string) *redis.Runs {
	t.Helper()
	r, err := redis.NewRuns(redis.RunsConfig{Client: c, Prefix: prefix, OnError: func(op string) {
		// A lost pub/sub connection loses the stops sent until it is
		// back: said, should a contract test then wait in vain.
		t.Logf("redis runs: %s failed", op)
	}})
	require.NoError(t, err)
	t.Cleanup(r.Close)
	return r
}

func TestRunControlContract(t *testing.T) {
	porttest.RunControl(t, func(t *testing.T) (ports.RunControl, ports.RunControl) {
		t.Helper()
		prefix := containers.Prefix(t)
		// Two clients, as two instances have.
		return newRuns(t, client(t), prefix), newRuns(t, client(t), prefix)
	}, true)
}

func TestRunsChannelCarriesTheThreadAsAHashTag(t *testing.T) {
	ctx := t.Context()
	c := client(t)
	prefix := containers.Prefix(t)
	r := newRuns(t, c, prefix)
	got := make(chan ports.StopMode, 1)
	live, unregister := r.Register("t-1", func(m ports.StopMode) { got <- m })
	defer unregister()
	<-live
	// Another client publishing on the documented channel name stops the run.
	n, err := c.Do(ctx, c.B().Publish().Channel(prefix+"stop:{t-1}").Message("rollback").Build()).AsInt64()
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	require.Equal(t, ports.StopRollback, <-got)
}

func TestAnswerLogContract(t *testing.T) {
	porttest.AnswerLog(t, func(t *testing.T, maxEvents int, ttl time.Duration) (ports.AnswerLog, ports.AnswerLog) {
		t.Helper()
		prefix := containers.Prefix(t)
		mk := func() ports.AnswerLog {
			l, err := redis.NewAnswers(redis.AnswersConfig{Client: client(t), Prefix: prefix, MaxEvents: maxEvents, TTL: ttl})
			require.NoError(t, err)
			t.Cleanup(l.Close)
			return l
		}
		return mk(), mk()
	})
}
