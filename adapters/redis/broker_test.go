package redis_test

import (
	"context"
	"encoding/binary"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/memory"
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
		require.NoError(t, c.Do(ctx, c.B().Publish().Channel(prefix+"session:s").Message(rueidis.BinaryString(msg)).Build()).Error())
	}
	earlier := binary.BigEndian.AppendUint64(nil, uint64(time.Now().UnixNano()))
	publish(append(earlier, `"earlier"`...))
	publish([]byte{0x80, 0, 0, 0, 0, 0, 0, 1, 'x'}) // the new format, cut short
	publish([]byte("short"))
	require.NoError(t, b.Publish(ctx, "s", []byte(`"marker"`)))
	assert.Equal(t, `"earlier"`, <-got)
	assert.Equal(t, `"marker"`, <-got, "the malformed ones were dropped")
}
