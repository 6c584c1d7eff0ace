// Package porttest holds the contract tests of the ports: one suite per
// port, run on every adapter, so an in-memory adapter cannot drift from the
// real one.
package porttest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/ports"
)

// Instances returns two adapters of one kind as two server instances would
// have them: sharing a backend. second is nil for in-process adapters,
// which have no other instances; the cross-instance cases then do not run.
type Instances[T any] func(t *testing.T) (first, second T)

// wait bounds every wait of the suites. It is generous: the machines that
// run them are shared and slow, and a passing run never waits this long.
const wait = 10 * time.Second

// inbox collects deliveries.
type inbox struct {
	mu   sync.Mutex
	msgs []string
	ch   chan struct{}
}

func newInbox() *inbox { return &inbox{ch: make(chan struct{}, 1)} }

func (in *inbox) deliver(d ports.Delivery) {
	in.mu.Lock()
	in.msgs = append(in.msgs, string(d.Payload))
	in.mu.Unlock()
	select {
	case in.ch <- struct{}{}:
	default:
	}
}

// waitFor waits until n messages arrived and returns them.
func (in *inbox) waitFor(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.After(wait)
	for {
		in.mu.Lock()
		got := append([]string(nil), in.msgs...)
		in.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-in.ch:
		case <-deadline:
			t.Fatalf("got %d of %d messages: %q", len(got), n, got)
		}
	}
}

func (in *inbox) all() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]string(nil), in.msgs...)
}

func waitLive(t *testing.T, live <-chan struct{}) {
	t.Helper()
	select {
	case <-live:
	case <-time.After(wait):
		t.Fatal("subscription never became live")
	}
}

var sessionSeq struct {
	sync.Mutex
	n int
}

// session returns a session name unique in the test binary.
func session(t *testing.T) string {
	t.Helper()
	sessionSeq.Lock()
	defer sessionSeq.Unlock()
	sessionSeq.n++
	return fmt.Sprintf("contract-%d-%d", time.Now().UnixNano(), sessionSeq.n)
}

// Broker runs the broker contract on the adapter that newBrokers makes.
func Broker(t *testing.T, newBrokers Instances[ports.Broker]) {
	ctx := context.Background()

	t.Run("delivers to a subscriber", func(t *testing.T) {
		b, _ := newBrokers(t)
		s, in := session(t), newInbox()
		waitLive(t, b.Subscribe(s, in.deliver))
		require.NoError(t, b.Publish(ctx, s, []byte(`{"n":1}`)))
		assert.Equal(t, []string{`{"n":1}`}, in.waitFor(t, 1))
	})

	t.Run("keeps one publisher's order", func(t *testing.T) {
		b, _ := newBrokers(t)
		s, in := session(t), newInbox()
		waitLive(t, b.Subscribe(s, in.deliver))
		var want []string
		for i := range 200 {
			m := fmt.Sprintf(`{"n":%d}`, i)
			want = append(want, m)
			require.NoError(t, b.Publish(ctx, s, []byte(m)))
		}
		assert.Equal(t, want, in.waitFor(t, len(want)))
	})

	t.Run("keeps sessions apart and stops after unsubscribe", func(t *testing.T) {
		b, _ := newBrokers(t)
		s1, s2, s3 := session(t), session(t), session(t)
		in1, in2, in3 := newInbox(), newInbox(), newInbox()
		waitLive(t, b.Subscribe(s1, in1.deliver))
		waitLive(t, b.Subscribe(s2, in2.deliver))
		waitLive(t, b.Subscribe(s3, in3.deliver))
		require.NoError(t, b.Publish(ctx, s1, []byte(`"one"`)))
		require.NoError(t, b.Publish(ctx, s2, []byte(`"two"`)))
		assert.Equal(t, []string{`"one"`}, in1.waitFor(t, 1))
		assert.Equal(t, []string{`"two"`}, in2.waitFor(t, 1))

		b.Unsubscribe(s1)
		require.NoError(t, b.Publish(ctx, s1, []byte(`"late"`)))
		// The marker is published after the late message on the same
		// broker: once it arrives, the late one would have too.
		require.NoError(t, b.Publish(ctx, s3, []byte(`"marker"`)))
		in3.waitFor(t, 1)
		assert.Equal(t, []string{`"one"`}, in1.all())
		assert.Empty(t, in3.all()[1:])
	})

	t.Run("resubscribes after unsubscribe", func(t *testing.T) {
		b, _ := newBrokers(t)
		s, in1, in2 := session(t), newInbox(), newInbox()
		waitLive(t, b.Subscribe(s, in1.deliver))
		b.Unsubscribe(s)
		waitLive(t, b.Subscribe(s, in2.deliver))
		require.NoError(t, b.Publish(ctx, s, []byte(`"again"`)))
		assert.Equal(t, []string{`"again"`}, in2.waitFor(t, 1))
		assert.Empty(t, in1.all())
	})

	t.Run("carries any bytes", func(t *testing.T) {
		b, _ := newBrokers(t)
		s, in := session(t), newInbox()
		waitLive(t, b.Subscribe(s, in.deliver))
		odd := "\x00\xff{\"ü\":\"\\n\"}\r\n"
		require.NoError(t, b.Publish(ctx, s, []byte(odd)))
		assert.Equal(t, []string{odd}, in.waitFor(t, 1))
	})

	t.Run("reaches every instance", func(t *testing.T) {
		a, b := newBrokers(t)
		if b == nil {
			return // an in-process broker has no other instance
		}
		s, inA, inB := session(t), newInbox(), newInbox()
		waitLive(t, a.Subscribe(s, inA.deliver))
		waitLive(t, b.Subscribe(s, inB.deliver))
		require.NoError(t, a.Publish(ctx, s, []byte(`"from a"`)))
		require.NoError(t, b.Publish(ctx, s, []byte(`"from b"`)))
		assert.ElementsMatch(t, []string{`"from a"`, `"from b"`}, inA.waitFor(t, 2))
		assert.ElementsMatch(t, []string{`"from a"`, `"from b"`}, inB.waitFor(t, 2))
	})
}

// Presence runs the presence contract on the adapter that newPresence makes.
func Presence(t *testing.T, newPresence Instances[ports.Presence]) {
	ctx := context.Background()
	admin := ports.Member{ConnectionID: "c1", UserType: "admin", ClientType: "web"}
	agent := ports.Member{ConnectionID: "c2", UserType: "agent"}

	t.Run("lists what was added", func(t *testing.T) {
		p, _ := newPresence(t)
		s := session(t)
		got, err := p.List(ctx, s)
		require.NoError(t, err)
		assert.Empty(t, got)

		require.NoError(t, p.Add(ctx, s, admin))
		require.NoError(t, p.Add(ctx, s, agent))
		got, err = p.List(ctx, s)
		require.NoError(t, err)
		assert.ElementsMatch(t, []ports.Member{admin, agent}, got)
	})

	t.Run("adding twice counts once", func(t *testing.T) {
		p, _ := newPresence(t)
		s := session(t)
		require.NoError(t, p.Add(ctx, s, admin))
		require.NoError(t, p.Add(ctx, s, admin))
		got, err := p.List(ctx, s)
		require.NoError(t, err)
		assert.Equal(t, []ports.Member{admin}, got)
	})

	t.Run("removal is seen at once", func(t *testing.T) {
		p, _ := newPresence(t)
		s := session(t)
		require.NoError(t, p.Add(ctx, s, admin))
		require.NoError(t, p.Add(ctx, s, agent))
		require.NoError(t, p.Remove(ctx, s, admin.ConnectionID))
		got, err := p.List(ctx, s)
		require.NoError(t, err)
		assert.Equal(t, []ports.Member{agent}, got)
		require.NoError(t, p.Remove(ctx, s, agent.ConnectionID))
		require.NoError(t, p.Remove(ctx, s, "never-added"))
		got, err = p.List(ctx, s)
		require.NoError(t, err)
		assert.Empty(t, got)
	})

	t.Run("keeps sessions apart", func(t *testing.T) {
		p, _ := newPresence(t)
		s1, s2 := session(t), session(t)
		require.NoError(t, p.Add(ctx, s1, admin))
		require.NoError(t, p.Add(ctx, s2, agent))
		got, err := p.List(ctx, s1)
		require.NoError(t, err)
		assert.Equal(t, []ports.Member{admin}, got)
	})

	t.Run("keeps odd values", func(t *testing.T) {
		p, _ := newPresence(t)
		s := session(t)
		odd := ports.Member{ConnectionID: "c:3", UserType: "a\"dmin ü\n", ClientType: "{}"}
		require.NoError(t, p.Add(ctx, s, odd))
		got, err := p.List(ctx, s)
		require.NoError(t, err)
		assert.Equal(t, []ports.Member{odd}, got)
	})

	t.Run("keeps the presence key", func(t *testing.T) {
		p, _ := newPresence(t)
		s := session(t)
		tab := ports.Member{ConnectionID: "c4", UserType: "user", PresenceKey: "person:7"}
		require.NoError(t, p.Add(ctx, s, tab))
		got, err := p.List(ctx, s)
		require.NoError(t, err)
		assert.Equal(t, []ports.Member{tab}, got)
	})

	t.Run("counts every instance", func(t *testing.T) {
		a, b := newPresence(t)
		if b == nil {
			return // an in-process store has no other instance
		}
		s := session(t)
		require.NoError(t, a.Add(ctx, s, admin))
		require.NoError(t, b.Add(ctx, s, agent))
		for _, p := range []ports.Presence{a, b} {
			got, err := p.List(ctx, s)
			require.NoError(t, err)
			assert.ElementsMatch(t, []ports.Member{admin, agent}, got)
		}
		require.NoError(t, b.Remove(ctx, s, agent.ConnectionID))
		got, err := a.List(ctx, s)
		require.NoError(t, err)
		assert.Equal(t, []ports.Member{admin}, got)
	})
}

// Dying is an instance of a shared presence store that the test can kill:
// kill stops it without a goodbye, as a crash does, and returns once the
// store may take it for dead.
type Dying struct {
	Presence ports.Presence
	Kill     func()
}

// PresenceReaper runs the reaper's contract: the members of a dead
// instance are returned once in all, however many survivors reap at once,
// and a live instance's never. newFleet makes a dying instance and the
// survivors, all on one store.
func PresenceReaper(t *testing.T, newFleet func(t *testing.T) (Dying, []ports.PresenceReaper, ports.Presence)) {
	ctx := context.Background()
	dying, survivors, alive := newFleet(t)
	s1, s2 := session(t), session(t)
	gone := []ports.Member{
		{ConnectionID: "d1", UserType: "admin", PresenceKey: "ann"},
		{ConnectionID: "d2", UserType: "agent", ClientType: "web"},
	}
	require.NoError(t, dying.Presence.Add(ctx, s1, gone[0]))
	require.NoError(t, dying.Presence.Add(ctx, s2, gone[1]))
	stays := ports.Member{ConnectionID: "a1", UserType: "user"}
	require.NoError(t, alive.Add(ctx, s1, stays))

	for _, r := range survivors {
		lost, err := r.Reap(ctx)
		require.NoError(t, err)
		assert.Empty(t, lost, "reaped a live instance")
	}
	dying.Kill()

	// Every survivor reaps at once, again and again: one of them gets
	// the dead instance's members, once.
	var mu sync.Mutex
	got := map[string][]ports.Member{}
	reaped := 0
	deadline := time.Now().Add(wait)
	for len(got) < 2 && time.Now().Before(deadline) {
		var wg sync.WaitGroup
		for _, r := range survivors {
			wg.Go(func() {
				lost, err := r.Reap(ctx)
				assert.NoError(t, err) //nolint:testifylint // in a goroutine: require would not stop the test
				mu.Lock()
				defer mu.Unlock()
				if len(lost) > 0 {
					reaped++
				}
				for s, ms := range lost {
					got[s] = append(got[s], ms...)
				}
			})
		}
		wg.Wait()
		time.Sleep(20 * time.Millisecond)
	}
	assert.Equal(t, map[string][]ports.Member{s1: {gone[0]}, s2: {gone[1]}}, got)
	assert.Equal(t, 1, reaped, "more than one reaper claimed the dead instance")

	members, err := alive.List(ctx, s1)
	require.NoError(t, err)
	assert.Equal(t, []ports.Member{stays}, members)
	for _, r := range survivors {
		lost, err := r.Reap(ctx)
		require.NoError(t, err)
		assert.Empty(t, lost, "reaped twice")
	}
}
