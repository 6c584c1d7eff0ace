package redis_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/memory"
	"github.com/wsserver/wsserver/adapters/redis"
	"github.com/wsserver/wsserver/core/session"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/test/containers"
)

// lostReply is a client whose PUBLISH reaches Redis but whose caller gets an
// error, as when the reply is late and the context runs out after the
// command was written. late: the command reaches Redis only after the
// caller got the error (when the test calls land); otherwise it reaches
// Redis first, and the error comes once the test calls fail.
type lostReply struct {
	rueidis.Client
	late bool

	mu      sync.Mutex
	pending []string      // the PUBLISH of a late reply, not sent yet
	fail    chan struct{} // closed by failNow
}

func (c *lostReply) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	args := cmd.Commands()
	if len(args) == 0 || !strings.EqualFold(args[0], "PUBLISH") {
		return c.Client.Do(ctx, cmd)
	}
	if c.late {
		c.mu.Lock()
		c.pending = slices.Clone(args)
		c.mu.Unlock()
	} else {
		if err := c.Client.Do(ctx, cmd).Error(); err != nil {
			return rueidis.NewErrorResult(err)
		}
		select {
		case <-c.fail:
		case <-time.After(30 * time.Second): // against a hang only
		}
	}
	return rueidis.NewErrorResult(context.DeadlineExceeded)
}

// land sends the PUBLISH whose reply was lost.
func (c *lostReply) land(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	args := c.pending
	c.mu.Unlock()
	require.NotEmpty(t, args, "no publication waits to land")
	require.NoError(t, c.Client.Do(t.Context(), c.Client.B().Arbitrary(args...).Build()).Error())
}

// socket is a session.Subscriber that keeps what it was sent and tells
// when something came.
type socket struct {
	mu   sync.Mutex
	got  []string
	sent chan struct{}
}

func newSocket() *socket { return &socket{sent: make(chan struct{}, 100)} }

func (s *socket) Send(wire []byte) {
	s.mu.Lock()
	s.got = append(s.got, string(wire))
	s.mu.Unlock()
	s.sent <- struct{}{}
}

func (s *socket) frames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

// waitFor waits until the socket was sent want.
func (s *socket) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(30 * time.Second) // against a hang only
	for !slices.Contains(s.frames(), want) {
		select {
		case <-s.sent:
		case <-deadline:
			t.Fatalf("never got %q; got %q", want, s.frames())
		}
	}
}

// TestPublishWhoseReplyIsLostDeliversOnce: a PUBLISH that reached Redis
// although the caller got an error delivers exactly once to every socket,
// on this instance (which delivers a failed publication itself) and on
// the others, whether Redis hands the message back before or after the
// caller learns of the error.
func TestPublishWhoseReplyIsLostDeliversOnce(t *testing.T) {
	for _, late := range []bool{false, true} {
		name := map[bool]string{false: "the echo comes before the error", true: "the echo comes after the error"}[late]
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			prefix := containers.Prefix(t)
			lossy := &lostReply{Client: client(t), late: late, fail: make(chan struct{})}
			hubA := newHub(t, newBroker(t, lossy, prefix))
			hubB := newHub(t, newBroker(t, client(t), prefix))
			a, b := newSocket(), newSocket()
			from := ports.Member{ConnectionID: "a", UserType: "admin"}
			require.NoError(t, hubA.Join(ctx, "s", from, a, []byte("hi")))
			require.NoError(t, hubB.Join(ctx, "s", ports.Member{ConnectionID: "b", UserType: "agent"}, b, []byte("hi")))

			msg := string(session.EncodeSessionMessage(from, []byte(`"once"`), nil))
			done := make(chan error, 1)
			go func() { done <- hubA.Broadcast(ctx, "s", from, []byte(`"once"`), nil) }()
			if late {
				err := <-done
				require.ErrorIs(t, err, session.ErrUnavailable, "the caller only knows it failed")
				a.waitFor(t, msg) // delivered locally at once
				lossy.land(t)
			} else {
				a.waitFor(t, msg) // came back from Redis
				close(lossy.fail)
				require.NoError(t, <-done, "it came back from Redis, so it reached every instance")
			}
			b.waitFor(t, msg)

			// A marker published after it through the same Redis comes
			// after any echo of it: then the count is final.
			marker := string(session.EncodeSessionMessage(from, []byte(`"marker"`), nil))
			require.NoError(t, newBroker(t, client(t), prefix).Publish(ctx, "s", []byte(marker)))
			a.waitFor(t, marker)
			b.waitFor(t, marker)
			assert.Equal(t, []string{"hi", msg, marker}, a.frames(), "this instance's socket")
			assert.Equal(t, []string{"hi", msg, marker}, b.frames(), "the other instance's socket")
		})
	}
}

func newHub(t *testing.T, b ports.Broker) *session.Hub {
	t.Helper()
	h, err := session.NewHub(session.HubConfig{Broker: b, Presence: memory.NewPresence()})
	require.NoError(t, err)
	return h
}

// TestBrokerReadsTheEarlierFormat: during a rolling upgrade, messages of
// the earlier version (the time, then the payload) still arrive, and
// malformed ones are dropped.
func TestBrokerReadsTheEarlierFormat(t *testing.T) {
	ctx := t.Context()
	prefix := containers.Prefix(t)
	c := client(t)
	b := newBroker(t, c, prefix)
	got := make(chan string, 10)
	live := b.Subscribe("s", func(d ports.Delivery) { got <- string(d.Payload) })
	select {
	case <-live:
	case <-time.After(30 * time.Second):
		t.Fatal("subscription never live")
	}
	publish := func(msg []byte) {
		require.NoError(t, c.Do(ctx, c.B().Publish().Channel(prefix+"session:{s}").Message(rueidis.BinaryString(msg)).Build()).Error())
	}
	earlier := binary.BigEndian.AppendUint64(nil, uint64(time.Now().UnixNano()))
	publish(append(earlier, `"earlier"`...))
	publish([]byte{0x80, 0, 0, 0, 0, 0, 0, 1, 'x'}) // the new format, cut short
	publish([]byte("short"))
	require.NoError(t, b.Publish(ctx, "s", []byte(`"marker"`)))
	assert.Equal(t, `"earlier"`, <-got)
	assert.Equal(t, `"marker"`, <-got, "the malformed ones were dropped")
}

// TestPublishWhileResubscribingDeliversLocallyOnce: when the broker's
// pub/sub connection is lost and not yet subscribed again, Redis takes a
// PUBLISH (other instances may hear it) but has no subscription of this
// instance to hand it back to. The sockets of this instance still get the
// broadcast, exactly once: also when Redis runs the PUBLISH only after the
// subscription is back, and so does hand it back late.
func TestPublishWhileResubscribingDeliversLocallyOnce(t *testing.T) {
	for _, late := range []bool{false, true} {
		name := map[bool]string{false: "no echo", true: "the echo comes once resubscribed"}[late]
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			prefix := containers.Prefix(t)
			clientName := "broker-" + strings.ReplaceAll(prefix, ":", "")
			deferred := &deferredPublish{Client: namedClient(t, clientName), late: late, void: prefix + "void"}
			held := holdResubscribe(t)
			b := newBrokerWith(t, redis.BrokerConfig{Client: deferred, Prefix: prefix, OnError: held.onError})
			t.Cleanup(held.resume) // before b.Close: a held broker never stops
			hub := newHub(t, b)
			a := newSocket()
			from := ports.Member{ConnectionID: "a", UserType: "admin"}
			require.NoError(t, hub.Join(ctx, "s", from, a, []byte("hi")))

			killPubSub(t, clientName)
			held.waitLost(t)
			require.NoError(t, hub.Broadcast(ctx, "s", from, []byte(`"window"`), nil),
				"Redis took the PUBLISH: the others that listen were reached")
			msg := string(session.EncodeSessionMessage(from, []byte(`"window"`), nil))
			a.waitFor(t, msg)

			held.resume()
			// Subscribed again: a session wanted now is confirmed on the
			// new connection after "s", which was wanted before it.
			probe := b.Subscribe("probe", func(ports.Delivery) {})
			select {
			case <-probe:
			case <-time.After(30 * time.Second): // against a hang only
				t.Fatal("the broker never subscribed again")
			}
			if late {
				deferred.land(t)
			}
			// A marker published after it through the same Redis comes
			// after any echo of it: then the count is final.
			marker := string(session.EncodeSessionMessage(from, []byte(`"marker"`), nil))
			require.NoError(t, newBroker(t, client(t), prefix).Publish(ctx, "s", []byte(marker)))
			a.waitFor(t, marker)
			assert.Equal(t, []string{"hi", msg, marker}, a.frames())
		})
	}
}

// deferredPublish is a client whose PUBLISH, when late, is answered at once
// but reaches Redis only when the test calls land: as when the echo of a
// publication comes after its reply.
type deferredPublish struct {
	rueidis.Client
	late bool
	void string // a channel nobody listens to

	mu      sync.Mutex
	pending []string
}

func (c *deferredPublish) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	args := cmd.Commands()
	if !c.late || len(args) == 0 || !strings.EqualFold(args[0], "PUBLISH") {
		return c.Client.Do(ctx, cmd)
	}
	c.mu.Lock()
	c.pending = slices.Clone(args)
	c.mu.Unlock()
	// A real reply of PUBLISH, from a channel nobody listens to.
	return c.Client.Do(ctx, c.Client.B().Publish().Channel(c.void).Message("x").Build())
}

// land sends the deferred PUBLISH.
func (c *deferredPublish) land(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	args := c.pending
	c.mu.Unlock()
	require.NotEmpty(t, args, "no publication waits to land")
	require.NoError(t, c.Client.Do(t.Context(), c.Client.B().Arbitrary(args...).Build()).Error())
}

// heldResubscribe keeps a broker from subscribing again after its first
// lost pub/sub connection until resume: the broker reports the loss to
// OnError before it reconnects.
type heldResubscribe struct {
	lost    chan struct{}
	resumed chan struct{}
	once    sync.Once
	held    atomic.Bool
}

func holdResubscribe(t *testing.T) *heldResubscribe {
	t.Helper()
	return &heldResubscribe{lost: make(chan struct{}), resumed: make(chan struct{})}
}

func (h *heldResubscribe) onError(op string) {
	if op != "subscribe" || h.held.Swap(true) {
		return
	}
	close(h.lost)
	select {
	case <-h.resumed:
	case <-time.After(30 * time.Second): // against a hang only
	}
}

func (h *heldResubscribe) waitLost(t *testing.T) {
	t.Helper()
	select {
	case <-h.lost:
	case <-time.After(30 * time.Second): // against a hang only
		t.Fatal("the broker never noticed its pub/sub connection was lost")
	}
}

func (h *heldResubscribe) resume() { h.once.Do(func() { close(h.resumed) }) }

// killPubSub closes the pub/sub connections of the client named name, on
// the Redis side.
func killPubSub(t *testing.T, name string) {
	t.Helper()
	c := client(t)
	list, err := c.Do(t.Context(), c.B().ClientList().TypePubsub().Build()).ToString()
	require.NoError(t, err)
	killed := 0
	// A RESP3 verbatim string: its format, then the text.
	for line := range strings.Lines(strings.TrimPrefix(list, "txt:")) {
		fields := map[string]string{}
		for f := range strings.FieldsSeq(line) {
			k, v, _ := strings.Cut(f, "=")
			fields[k] = v
		}
		if fields["name"] != name {
			continue
		}
		id, err := strconv.ParseInt(fields["id"], 10, 64)
		require.NoError(t, err, "in %q", line)
		require.NoError(t, c.Do(t.Context(), c.B().ClientKill().Id(id).Build()).Error())
		killed++
	}
	require.Equal(t, 1, killed, "pub/sub connections of %s in %q", name, list)
}

// TestResubscribeWaitStartsOverOnceSubscribed: after a pub/sub connection
// lost and made again, the next loss waits the shortest time again, not
// twice the last: one outage does not slow every later reconnect.
func TestResubscribeWaitStartsOverOnceSubscribed(t *testing.T) {
	prefix := containers.Prefix(t)
	clientName := "broker-" + strings.ReplaceAll(prefix, ":", "")
	waits := make(chan any, 10)
	log := slog.New(&recordHandler{on: func(r slog.Record) {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "retry_in" {
				waits <- a.Value.Any()
			}
			return true
		})
	}})
	b := newBrokerWith(t, redis.BrokerConfig{Client: namedClient(t, clientName), Prefix: prefix, Log: log})
	var first any
	for i := range 3 {
		live := b.Subscribe(fmt.Sprintf("s%d", i), func(ports.Delivery) {})
		select {
		case <-live:
		case <-time.After(30 * time.Second): // against a hang only
			t.Fatalf("subscription %d never live", i)
		}
		killPubSub(t, clientName)
		var wait any
		select {
		case wait = <-waits:
		case <-time.After(30 * time.Second): // against a hang only
			t.Fatalf("loss %d never reported", i)
		}
		if i == 0 {
			first = wait
			continue
		}
		assert.Equal(t, first, wait, "the wait after loss %d", i)
	}
}

// recordHandler passes every record to on.
type recordHandler struct{ on func(slog.Record) }

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.on(r)
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

// TestBrokerKeepsOnePublishersOrderOnACluster: on a Redis Cluster a
// PUBLISH reaches the subscribers of other nodes over the cluster bus, and
// those of its own node at once; one publisher's messages sent through
// different nodes overtake one another. Every publication of a session must
// go through one node for them to arrive in the order they were sent.
func TestBrokerKeepsOnePublishersOrderOnACluster(t *testing.T) {
	prefix := containers.Prefix(t)
	inOrder(t, newBroker(t, clusterClient(t), prefix), newBroker(t, clusterClient(t), prefix))
}

// inOrder publishes on a and checks that b receives every message in order.
func inOrder(t *testing.T, a, b *redis.Broker) {
	t.Helper()
	ctx := t.Context()
	const n = 2000
	got := make(chan int, n)
	live := b.Subscribe("s", func(d ports.Delivery) {
		i, err := strconv.Atoi(string(d.Payload))
		assert.NoError(t, err)
		got <- i
	})
	select {
	case <-live:
	case <-time.After(30 * time.Second):
		t.Fatal("subscription never live")
	}
	for i := range n {
		require.NoError(t, a.Publish(ctx, "s", []byte(strconv.Itoa(i))))
	}
	var disorder []string
	for want := range n {
		select {
		case i := <-got:
			if i != want && len(disorder) < 10 {
				disorder = append(disorder, fmt.Sprintf("got %d where %d was due", i, want))
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("message %d never came", want)
		}
	}
	assert.Empty(t, disorder, "one publisher's messages arrive in order")
}
