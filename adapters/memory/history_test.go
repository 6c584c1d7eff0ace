package memory_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/memory"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/ports/porttest"
)

func TestHistoryContract(t *testing.T) {
	porttest.History(t, func(t *testing.T, size int, ttl time.Duration) (porttest.HistoryInstance, porttest.HistoryInstance) {
		t.Helper()
		b := memory.NewBroker()
		h, err := memory.NewHistory(memory.HistoryConfig{Broker: b, Size: size, TTL: ttl})
		require.NoError(t, err)
		return porttest.HistoryInstance{Broker: b, History: h}, porttest.HistoryInstance{}
	})
}

func TestNewHistoryRefusesWhatCannotWork(t *testing.T) {
	b := memory.NewBroker()
	for name, cfg := range map[string]memory.HistoryConfig{
		"no broker": {Size: 1, TTL: time.Second},
		"no size":   {Broker: b, TTL: time.Second},
		"no ttl":    {Broker: b, Size: 1},
	} {
		_, err := memory.NewHistory(cfg)
		assert.Error(t, err, name)
	}
}

// TestHistoryForgetsIdleSessions: the histories of sessions that went
// quiet are freed, not only replaced when touched again.
func TestHistoryForgetsIdleSessions(t *testing.T) {
	now := time.Unix(1000, 0)
	b := memory.NewBroker()
	h, err := memory.NewHistory(memory.HistoryConfig{Broker: b, Size: 4, TTL: time.Minute, Now: func() time.Time { return now }})
	require.NoError(t, err)
	for i := range 50 {
		_, err := h.Publish(t.Context(), fmt.Sprint("s", i), ports.Numbered{Head: []byte("{\"o\":"), Tail: []byte("}")})
		require.NoError(t, err)
	}
	assert.Equal(t, 50, h.Sessions())
	now = now.Add(time.Minute)
	_, err = h.Publish(t.Context(), "s0", ports.Numbered{Head: []byte("{\"o\":"), Tail: []byte("}")})
	require.NoError(t, err)
	assert.Equal(t, 1, h.Sessions())
}

// TestHistoryReadRenewsIt: a connection that read a position keeps its
// epoch for a TTL after the read, whenever the last broadcast was.
func TestHistoryReadRenewsIt(t *testing.T) {
	now := time.Unix(1000, 0)
	h, err := memory.NewHistory(memory.HistoryConfig{Broker: memory.NewBroker(), Size: 4, TTL: time.Minute, Now: func() time.Time { return now }})
	require.NoError(t, err)
	pub, err := h.Publish(t.Context(), "s", ports.Numbered{Head: []byte("{\"o\":"), Tail: []byte("}")})
	require.NoError(t, err)
	now = now.Add(50 * time.Second)
	rec, err := h.Recover(t.Context(), "s", &pub.Position)
	require.NoError(t, err)
	require.True(t, rec.Recovered)
	now = now.Add(50 * time.Second) // 100 s after the broadcast, 50 s after the read
	rec, err = h.Recover(t.Context(), "s", &pub.Position)
	require.NoError(t, err)
	assert.True(t, rec.Recovered)
	assert.Equal(t, pub.Position, rec.Top)
	now = now.Add(time.Minute)
	rec, err = h.Recover(t.Context(), "s", &pub.Position)
	require.NoError(t, err)
	assert.False(t, rec.Recovered, "a TTL after the last read it is gone")
	assert.NotEqual(t, pub.Epoch, rec.Top.Epoch)
}
