package memory_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/memory"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/ports/porttest"
)

func TestBrokerContract(t *testing.T) {
	porttest.Broker(t, func(t *testing.T) (ports.Broker, ports.Broker) {
		t.Helper()
		return memory.NewBroker(), nil
	})
}

func TestPresenceContract(t *testing.T) {
	porttest.Presence(t, func(t *testing.T) (ports.Presence, ports.Presence) {
		t.Helper()
		return memory.NewPresence(), nil
	})
}

func TestRunControlContract(t *testing.T) {
	porttest.RunControl(t, func(t *testing.T) (ports.RunControl, ports.RunControl) {
		t.Helper()
		return memory.NewRuns(), nil
	}, true)
}

func TestThreadQueueContract(t *testing.T) {
	porttest.ThreadQueue(t, func(t *testing.T) (ports.ThreadQueue, ports.ThreadQueue) {
		t.Helper()
		return memory.NewQueue(), nil
	})
}

func TestAnswerLogContract(t *testing.T) {
	porttest.AnswerLog(t, func(t *testing.T, maxEvents int, ttl time.Duration) (ports.AnswerLog, ports.AnswerLog) {
		t.Helper()
		l, err := memory.NewAnswers(memory.AnswersConfig{MaxEvents: maxEvents, TTL: ttl})
		require.NoError(t, err)
		return l, nil
	})
}
