package redis_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/memory"
	"github.com/wsserver/wsserver/adapters/redis"
	"github.com/wsserver/wsserver/core/session"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/ports/porttest"
	"github.com/wsserver/wsserver/test/containers"
)

func newHistory(t *testing.T, b *redis.Broker, size int, ttl time.Duration) *redis.History {
	t.Helper()
	h, err := redis.NewHistory(redis.HistoryConfig{Broker: b, Size: size, TTL: ttl})
	require.NoError(t, err)
	return h
}

func TestHistoryContract(t *testing.T) {
	porttest.History(t, func(t *testing.T, size int, ttl time.Duration) (porttest.HistoryInstance, porttest.HistoryInstance) {
		t.Helper()
		prefix := containers.Prefix(t)
		a, b := newBroker(t, client(t), prefix), newBroker(t, client(t), prefix)
		return porttest.HistoryInstance{Broker: a, History: newHistory(t, a, size, ttl)},
			porttest.HistoryInstance{Broker: b, History: newHistory(t, b, size, ttl)}
	})
}

func TestNewHistoryRefusesWhatCannotWork(t *testing.T) {
	b := newBroker(t, client(t), containers.Prefix(t))
	sharded := newBrokerWith(t, redis.BrokerConfig{Client: client(t), Prefix: containers.Prefix(t), Partitions: 4})
	for name, cfg := range map[string]redis.HistoryConfig{
		"no broker":      {Size: 1, TTL: time.Second},
		"no size":        {Broker: b, TTL: time.Second},
		"no ttl":         {Broker: b, Size: 1},
		"sharded pubsub": {Broker: sharded, Size: 1, TTL: time.Second},
	} {
		_, err := redis.NewHistory(cfg)
		assert.Error(t, err, name)
	}
}

var note = ports.Numbered{Head: []byte(`{"offset":`), Tail: []byte(`}`)}

// TestHistoryKeysSitInTheSessionsSlot: the two keys carry the session as
// a hash tag (RULES.md), so the script touches one slot, and expire.
func TestHistoryKeysSitInTheSessionsSlot(t *testing.T) {
	ctx := t.Context()
	prefix := containers.Prefix(t)
	c := client(t)
	h := newHistory(t, newBroker(t, c, prefix), 5, time.Minute)
	_, err := h.Publish(ctx, "room-1", note)
	require.NoError(t, err)
	keys, err := c.Do(ctx, c.B().Keys().Pattern(prefix+"*").Build()).AsStrSlice()
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{prefix + "session-offset:{room-1}", prefix + "session-history:{room-1}"}, keys)
	for _, k := range keys {
		ttl, err := c.Do(ctx, c.B().Pttl().Key(k).Build()).AsInt64()
		require.NoError(t, err)
		assert.Positive(t, ttl, k)
	}
}

// TestHistoryThatRedisLostIsNotVouchedFor: when Redis loses the offset
// key (eviction, a restart without persistence) a new epoch starts; when
// it loses entries of the stream, the gap is seen. Neither recovers.
func TestHistoryThatRedisLostIsNotVouchedFor(t *testing.T) {
	ctx := t.Context()
	for _, lost := range []string{"session-offset", "session-history"} {
		t.Run(lost, func(t *testing.T) {
			prefix := containers.Prefix(t)
			c := client(t)
			h := newHistory(t, newBroker(t, c, prefix), 10, time.Minute)
			for range 3 {
				_, err := h.Publish(ctx, "s", note)
				require.NoError(t, err)
			}
			before, err := h.Recover(ctx, "s", nil)
			require.NoError(t, err)
			require.NoError(t, c.Do(ctx, c.B().Del().Key(prefix+lost+":{s}").Build()).Error())

			rec, err := h.Recover(ctx, "s", &ports.Position{Offset: 1, Epoch: before.Top.Epoch})
			require.NoError(t, err)
			assert.False(t, rec.Recovered)
			assert.Empty(t, rec.Messages)
			if lost == "session-offset" {
				assert.NotEqual(t, before.Top.Epoch, rec.Top.Epoch)
				pos, err := h.Publish(ctx, "s", note)
				require.NoError(t, err)
				assert.Equal(t, ports.Position{Offset: 1, Epoch: rec.Top.Epoch}, pos.Position)
			} else {
				assert.Equal(t, before.Top, rec.Top)
			}
		})
	}
}

// lostScriptReply is a client whose history scripts reach Redis only after
// their caller got an error, when the test lands them.
type lostScriptReply struct {
	rueidis.Client
	mu      sync.Mutex
	pending []string
}

func (c *lostScriptReply) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	args := cmd.Commands()
	if len(args) == 0 || !strings.EqualFold(args[0], "EVALSHA") && !strings.EqualFold(args[0], "EVAL") {
		return c.Client.Do(ctx, cmd)
	}
	c.mu.Lock()
	c.pending = append([]string(nil), args...)
	c.mu.Unlock()
	return rueidis.NewErrorResult(context.DeadlineExceeded)
}

// land runs the script whose reply was lost, as EVAL (its sha may not be
// loaded yet).
func (c *lostScriptReply) land(t *testing.T, script string) {
	t.Helper()
	c.mu.Lock()
	args := c.pending
	c.mu.Unlock()
	require.NotEmpty(t, args, "no script waits to land")
	args = append([]string{"EVAL", script}, args[2:]...)
	require.NoError(t, c.Client.Do(t.Context(), c.Client.B().Arbitrary(args...).Build()).Error())
}

// TestHistoryPublishWhoseReplyIsLostDeliversOnce: a broadcast whose
// script ran although its caller got an error reaches this instance's
// socket once (delivered locally, without offset; the echo is dropped)
// and the other instance's once, with its offset.
func TestHistoryPublishWhoseReplyIsLostDeliversOnce(t *testing.T) {
	ctx := t.Context()
	prefix := containers.Prefix(t)
	lossy := &lostScriptReply{Client: client(t)}
	bA := newBroker(t, lossy, prefix)
	bB := newBroker(t, client(t), prefix)
	hubA := newHistoryHub(t, bA, newHistory(t, bA, 10, time.Minute))
	hubB := newHistoryHub(t, bB, newHistory(t, bB, 10, time.Minute))
	a, b := newSocket(), newSocket()
	from := ports.Member{ConnectionID: "a", UserType: "admin"}
	require.NoError(t, hubA.Join(ctx, "s", from, a, []byte("hi")))
	require.NoError(t, hubB.Join(ctx, "s", ports.Member{ConnectionID: "b", UserType: "agent"}, b, []byte("hi")))

	require.ErrorIs(t, hubA.Broadcast(ctx, "s", from, []byte(`"once"`), nil), session.ErrUnavailable)
	local := string(session.EncodeSessionMessage(from, []byte(`"once"`), nil))
	a.waitFor(t, local)
	lossy.land(t, redis.PublishScriptSource)
	numbered := string(session.NumberSessionMessage(from, []byte(`"once"`), nil).Bytes(1))
	b.waitFor(t, numbered)

	marker := string(session.NumberSessionMessage(from, []byte(`"marker"`), nil).Bytes(2))
	require.NoError(t, hubB.Broadcast(ctx, "s", from, []byte(`"marker"`), nil))
	a.waitFor(t, marker)
	b.waitFor(t, marker)
	assert.Equal(t, []string{"hi", local, marker}, a.frames(), "this instance's socket")
	assert.Equal(t, []string{"hi", numbered, marker}, b.frames(), "the other instance's socket")
}

func newHistoryHub(t *testing.T, b ports.Broker, h ports.History) *session.Hub {
	t.Helper()
	hub, err := session.NewHub(session.HubConfig{Broker: b, Presence: memory.NewPresence(), History: h})
	require.NoError(t, err)
	return hub
}

// TestRejoinAcrossInstancesUnderConcurrentPublishing: listeners on one
// instance leave and come back with since while publishers on both
// instances broadcast without pause. Each comes back recovered, and gets
// every offset after the one it left at exactly once, in order.
func TestRejoinAcrossInstancesUnderConcurrentPublishing(t *testing.T) {
	ctx := t.Context()
	prefix := containers.Prefix(t)
	bA, bB := newBroker(t, client(t), prefix), newBroker(t, client(t), prefix)
	hubA := newHistoryHub(t, bA, newHistory(t, bA, 100000, time.Minute))
	hubB := newHistoryHub(t, bB, newHistory(t, bB, 100000, time.Minute))
	from := ports.Member{ConnectionID: "p", UserType: "admin"}
	// A member that stays keeps instance B subscribed throughout. (When an
	// instance's last member leaves, it unsubscribes; a broadcast that
	// Redis runs between that UNSUBSCRIBE and the next SUBSCRIBE reaches
	// no member there, and one published by B itself may then not be
	// delivered here either: a gap the client sees in the offsets.)
	require.NoError(t, hubB.JoinSince(ctx, "s", ports.Member{ConnectionID: "stays", UserType: "agent"}, newSocketOf(100000), nil))

	const each, listeners = 150, 4
	var pubs sync.WaitGroup
	for p, hub := range []*session.Hub{hubA, hubB, hubA, hubB} {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			for i := range each {
				assert.NoError(t, hub.Broadcast(ctx, "s", from, fmt.Appendf(nil, `"%d-%d"`, p, i), nil))
			}
		}()
	}
	stop := make(chan struct{})
	type round struct {
		s    *socket
		from *ports.Position
	}
	rounds := make([][]round, listeners)
	var joins sync.WaitGroup
	for l := range listeners {
		joins.Add(1)
		go func() {
			defer joins.Done()
			var pos *ports.Position
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				s := newSocketOf(100000)
				m := ports.Member{ConnectionID: fmt.Sprintf("l%d-%d", l, n), UserType: "agent"}
				if !assert.NoError(t, hubB.JoinSince(ctx, "s", m, s, pos)) {
					return
				}
				rounds[l] = append(rounds[l], round{s, pos})
				for range 20 {
					if len(s.frames()) > 5 {
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
				hubB.Leave(ctx, "s", m.ConnectionID, s)
				pos = resumeFrom(t, s.frames())
			}
		}()
	}
	pubs.Wait()
	close(stop)
	joins.Wait()

	checked := 0
	for l, rs := range rounds {
		for r, rd := range rs {
			frames := rd.s.frames()
			var hello struct {
				Recovered *bool
				Offset    uint64
			}
			require.NoError(t, json.Unmarshal([]byte(frames[0]), &hello))
			next := hello.Offset + 1
			if rd.from != nil {
				require.NotNil(t, hello.Recovered)
				require.True(t, *hello.Recovered, "listener %d round %d", l, r)
				next = rd.from.Offset + 1
			}
			for _, f := range frames[1:] {
				require.Contains(t, f, fmt.Sprintf(`"offset":%d,`, next), "listener %d round %d from %v: %s", l, r, rd.from, strings.Join(frames, "\n"))
				next++
				checked++
			}
		}
	}
	t.Logf("%d deliveries checked over %d listeners", checked, listeners)
}

func newSocketOf(n int) *socket { return &socket{sent: make(chan struct{}, n)} }

// resumeFrom is the position a listener that got frames comes back from.
func resumeFrom(t *testing.T, frames []string) *ports.Position {
	t.Helper()
	var pos struct {
		Offset uint64
		Epoch  string
	}
	// Called from the joiners' goroutines: assert, not require.
	assert.NoError(t, json.Unmarshal([]byte(frames[0]), &pos))
	for _, f := range frames[1:] {
		var m struct{ Offset uint64 }
		assert.NoError(t, json.Unmarshal([]byte(f), &m))
		pos.Offset = m.Offset
	}
	return &ports.Position{Offset: pos.Offset, Epoch: pos.Epoch}
}
