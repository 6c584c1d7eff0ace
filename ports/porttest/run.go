package porttest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/ports"
)

// stops collects the stop requests a registered run receives.
type stops struct {
	mu    sync.Mutex
	modes []ports.StopMode
	ch    chan struct{}
}

func newStops() *stops { return &stops{ch: make(chan struct{}, 1)} }

func (s *stops) stop(m ports.StopMode) {
	s.mu.Lock()
	s.modes = append(s.modes, m)
	s.mu.Unlock()
	select {
	case s.ch <- struct{}{}:
	default:
	}
}

func (s *stops) all() []ports.StopMode {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ports.StopMode(nil), s.modes...)
}

// waitFor waits until n requests arrived and returns them.
func (s *stops) waitFor(t *testing.T, n int) []ports.StopMode {
	t.Helper()
	deadline := time.After(wait)
	for {
		if got := s.all(); len(got) >= n {
			return got
		}
		select {
		case <-s.ch:
		case <-deadline:
			t.Fatalf("got %d of %d stop requests: %q", len(s.all()), n, s.all())
		}
	}
}

// RunControl runs the run control contract on the adapter that newControls
// makes. sure says that the adapter's delivered is exact: a request that
// reached a registered run is reported delivered. Without it (Redis
// Cluster, whose PUBLISH counts the subscribers of one node) delivered may
// be false for a request that arrived; it is never true when no run is
// registered.
func RunControl(t *testing.T, newControls Instances[ports.RunControl], sure bool) {
	ctx := context.Background()
	assertDelivered := func(t *testing.T, delivered bool, msgAndArgs ...any) {
		t.Helper()
		if sure {
			assert.True(t, delivered, msgAndArgs...)
		}
	}

	t.Run("stops a registered run with the mode asked", func(t *testing.T) {
		rc, _ := newControls(t)
		for _, mode := range []ports.StopMode{ports.StopCancel, ports.StopInterrupt, ports.StopRollback} {
			t.Run(string(mode), func(t *testing.T) {
				th, got := session(t), newStops()
				live, unregister := rc.Register(th, got.stop)
				defer unregister()
				waitLive(t, live)
				delivered, err := rc.Stop(ctx, th, mode)
				require.NoError(t, err)
				assertDelivered(t, delivered)
				assert.Equal(t, []ports.StopMode{mode}, got.waitFor(t, 1))
			})
		}
	})

	t.Run("says when no run is registered", func(t *testing.T) {
		rc, _ := newControls(t)
		delivered, err := rc.Stop(ctx, session(t), ports.StopCancel)
		require.NoError(t, err)
		assert.False(t, delivered)
	})

	t.Run("refuses an unknown mode", func(t *testing.T) {
		rc, _ := newControls(t)
		th, got := session(t), newStops()
		live, unregister := rc.Register(th, got.stop)
		defer unregister()
		waitLive(t, live)
		for _, mode := range []ports.StopMode{"", "Cancel", "pause"} {
			delivered, err := rc.Stop(ctx, th, mode)
			require.ErrorIs(t, err, ports.ErrInvalidStopMode, "%q", mode)
			assert.False(t, delivered)
		}
		// A valid request after them is the only one received.
		delivered, err := rc.Stop(ctx, th, ports.StopCancel)
		require.NoError(t, err)
		assertDelivered(t, delivered)
		assert.Equal(t, []ports.StopMode{ports.StopCancel}, got.waitFor(t, 1))
	})

	t.Run("stops nothing after unregister", func(t *testing.T) {
		rc, _ := newControls(t)
		th, got := session(t), newStops()
		live, unregister := rc.Register(th, got.stop)
		waitLive(t, live)
		unregister()
		unregister() // idempotent
		// Delivered may stay true the moment a shared backend takes to
		// see the run go; the run receives nothing even so.
		for deadline := time.Now().Add(wait); ; time.Sleep(10 * time.Millisecond) {
			d, err := rc.Stop(ctx, th, ports.StopCancel)
			if err == nil && !d {
				break
			}
			require.False(t, time.Now().After(deadline), "stops after unregister still delivered after %s: delivered %v, err %v", wait, d, err)
		}
		// A marker on another thread of the same control, sent after:
		// once it arrives, a late delivery of the first would have.
		other, marker := session(t), newStops()
		live, unregister = rc.Register(other, marker.stop)
		defer unregister()
		waitLive(t, live)
		_, err := rc.Stop(ctx, other, ports.StopCancel)
		require.NoError(t, err)
		marker.waitFor(t, 1)
		assert.Empty(t, got.all())
	})

	t.Run("keeps threads apart", func(t *testing.T) {
		rc, _ := newControls(t)
		th1, th2 := session(t), session(t)
		got1, got2 := newStops(), newStops()
		live1, un1 := rc.Register(th1, got1.stop)
		defer un1()
		live2, un2 := rc.Register(th2, got2.stop)
		defer un2()
		waitLive(t, live1)
		waitLive(t, live2)
		_, err := rc.Stop(ctx, th2, ports.StopRollback)
		require.NoError(t, err)
		_, err = rc.Stop(ctx, th1, ports.StopCancel)
		require.NoError(t, err)
		assert.Equal(t, []ports.StopMode{ports.StopCancel}, got1.waitFor(t, 1))
		assert.Equal(t, []ports.StopMode{ports.StopRollback}, got2.waitFor(t, 1))
	})

	t.Run("a second registration of a thread outlives the first", func(t *testing.T) {
		rc, _ := newControls(t)
		th, old, cur := session(t), newStops(), newStops()
		liveOld, unOld := rc.Register(th, old.stop)
		waitLive(t, liveOld)
		liveCur, unCur := rc.Register(th, cur.stop)
		defer unCur()
		waitLive(t, liveCur)
		delivered, err := rc.Stop(ctx, th, ports.StopInterrupt)
		require.NoError(t, err)
		assertDelivered(t, delivered)
		assert.Equal(t, []ports.StopMode{ports.StopInterrupt}, old.waitFor(t, 1))
		assert.Equal(t, []ports.StopMode{ports.StopInterrupt}, cur.waitFor(t, 1))

		unOld()
		delivered, err = rc.Stop(ctx, th, ports.StopCancel)
		require.NoError(t, err)
		assertDelivered(t, delivered, "the second registration is still there")
		assert.Equal(t, []ports.StopMode{ports.StopInterrupt, ports.StopCancel}, cur.waitFor(t, 2))
		assert.Equal(t, []ports.StopMode{ports.StopInterrupt}, old.all())
	})

	t.Run("reaches the run on another instance", func(t *testing.T) {
		a, b := newControls(t)
		if b == nil {
			return // an in-process control has no other instance
		}
		th, got := session(t), newStops()
		live, unregister := a.Register(th, got.stop)
		waitLive(t, live)
		delivered, err := b.Stop(ctx, th, ports.StopRollback)
		require.NoError(t, err)
		assertDelivered(t, delivered)
		assert.Equal(t, []ports.StopMode{ports.StopRollback}, got.waitFor(t, 1))

		unregister()
		// Once b sees nobody registered, a received nothing more.
		require.Eventually(t, func() bool {
			d, err := b.Stop(ctx, th, ports.StopCancel)
			return err == nil && !d
		}, wait, 10*time.Millisecond)
		assert.Equal(t, []ports.StopMode{ports.StopRollback}, got.all())
	})
}
