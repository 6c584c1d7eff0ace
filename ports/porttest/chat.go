package porttest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
)

// stamp is a time every store keeps exactly: UTC, whole microseconds
// (PostgreSQL's precision).
func stamp(offset time.Duration) time.Time {
	return time.Date(2026, 3, 4, 5, 6, 7, 123456000, time.UTC).Add(offset)
}

// sameMessages compares messages, times by instant.
func sameMessages(t *testing.T, want, got []ports.Message) {
	t.Helper()
	require.Len(t, got, len(want))
	for i := range want {
		w, g := want[i], got[i]
		assert.True(t, w.CreatedAt.Equal(g.CreatedAt), "message %d: created at %v, want %v", i, g.CreatedAt, w.CreatedAt)
		w.CreatedAt, g.CreatedAt = time.Time{}, time.Time{}
		assert.Equal(t, w, g, "message %d", i)
	}
}

// sameCheckpoints compares checkpoints, states as JSON values and times by
// instant.
func sameCheckpoints(t *testing.T, want, got []ports.Checkpoint) {
	t.Helper()
	require.Len(t, got, len(want))
	for i := range want {
		w, g := want[i], got[i]
		assert.True(t, w.CreatedAt.Equal(g.CreatedAt), "checkpoint %d: created at %v, want %v", i, g.CreatedAt, w.CreatedAt)
		assert.JSONEq(t, string(w.State), string(g.State), "checkpoint %d", i)
		w.CreatedAt, g.CreatedAt, w.State, g.State = time.Time{}, time.Time{}, nil, nil
		assert.Equal(t, w, g, "checkpoint %d", i)
	}
}

// sameEscalations compares escalations, times by instant.
func sameEscalations(t *testing.T, want, got []ports.EscalationRecord) {
	t.Helper()
	require.Len(t, got, len(want))
	for i := range want {
		w, g := want[i], got[i]
		assert.True(t, w.CreatedAt.Equal(g.CreatedAt), "escalation %d: created at %v, want %v", i, g.CreatedAt, w.CreatedAt)
		w.CreatedAt, g.CreatedAt = time.Time{}, time.Time{}
		assert.Equal(t, w, g, "escalation %d", i)
	}
}

// CheckpointStore is a thread store that reads its checkpoints back. The
// port leaves that read out, for the conversation never reads them; the
// contract needs it to check that SaveTurn keeps them.
type CheckpointStore interface {
	ports.ThreadStore
	// Checkpoints returns the thread's checkpoints in the order saved, or
	// ErrThreadNotFound.
	Checkpoints(ctx context.Context, threadID string) ([]ports.Checkpoint, error)
}

// ThreadStore runs the thread store contract on the adapter that newStores
// makes.
func ThreadStore(t *testing.T, newStores Instances[CheckpointStore]) {
	ctx := context.Background()
	user := func(id, content string, at time.Duration) ports.Message {
		return ports.Message{ID: id, Role: ports.RoleUser, Content: content, CreatedAt: stamp(at)}
	}
	answer := func(id, content string, at time.Duration) ports.Message {
		return ports.Message{ID: id, Role: ports.RoleAssistant, Content: content, CreatedAt: stamp(at)}
	}

	// save stores a turn of msgs on thread id, as a chat does.
	save := func(t *testing.T, s CheckpointStore, id string, msgs ...ports.Message) {
		t.Helper()
		require.NoError(t, s.SaveTurn(ctx, ports.Turn{ThreadID: id, Channel: "web", Messages: msgs}))
	}

	t.Run("an unknown thread is not found", func(t *testing.T) {
		s, _ := newStores(t)
		id := session(t)
		_, err := s.Load(ctx, id)
		require.ErrorIs(t, err, conversation.ErrThreadNotFound)
		_, err = s.History(ctx, id)
		require.ErrorIs(t, err, conversation.ErrThreadNotFound)
		_, err = s.Checkpoints(ctx, id)
		require.ErrorIs(t, err, conversation.ErrThreadNotFound)
	})

	t.Run("a turn without messages creates an empty thread", func(t *testing.T) {
		s, _ := newStores(t)
		id := session(t)
		save(t, s, id)
		th, err := s.Load(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, id, th.ID)
		assert.Equal(t, "web", th.Channel)
		assert.False(t, th.CreatedAt.IsZero())
		assert.Empty(t, th.Messages)
		assert.Empty(t, th.Escalations)
		msgs, err := s.History(ctx, id)
		require.NoError(t, err)
		assert.Empty(t, msgs)
	})

	t.Run("appends messages in order", func(t *testing.T) {
		s, _ := newStores(t)
		id := session(t)
		want := []ports.Message{user("m1", "Where is my order?", 0), answer("m2", "On its way.", time.Second)}
		save(t, s, id, want...)
		// Same timestamps: the order is the order of saving.
		more := []ports.Message{user("m3", "Thanks", 2*time.Second), answer("m4", "You", 2*time.Second), user("m5", "bye", 2*time.Second)}
		more[1].Cancelled = true
		for _, m := range more {
			save(t, s, id, m)
		}
		want = append(want, more...)
		msgs, err := s.History(ctx, id)
		require.NoError(t, err)
		sameMessages(t, want, msgs)
		th, err := s.Load(ctx, id)
		require.NoError(t, err)
		sameMessages(t, want, th.Messages)
	})

	t.Run("keeps any text", func(t *testing.T) {
		s, _ := newStores(t)
		id := session(t)
		odd := []ports.Message{
			user("m1", "ü € 😀 \"quotes\" \\ \n\t<b>&amp;</b> '; DROP TABLE threads; --", 0),
			answer("m2", "", time.Second), // a cancelled answer may be empty
		}
		odd[1].Cancelled = true
		save(t, s, id, odd...)
		msgs, err := s.History(ctx, id)
		require.NoError(t, err)
		sameMessages(t, odd, msgs)
	})

	t.Run("keeps threads apart", func(t *testing.T) {
		s, _ := newStores(t)
		a, b := session(t), session(t)
		save(t, s, a, user("m1", "for a", 0))
		save(t, s, b, user("m1", "for b", 0))
		msgs, err := s.History(ctx, a)
		require.NoError(t, err)
		sameMessages(t, []ports.Message{user("m1", "for a", 0)}, msgs)
	})

	t.Run("a loaded thread is a copy", func(t *testing.T) {
		s, _ := newStores(t)
		id := session(t)
		save(t, s, id, user("m1", "hi", 0))
		th, err := s.Load(ctx, id)
		require.NoError(t, err)
		th.Messages[0].Content = "changed"
		msgs, err := s.History(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, "hi", msgs[0].Content)
	})

	t.Run("saves checkpoints in order", func(t *testing.T) {
		s, _ := newStores(t)
		id := session(t)
		nodes := []string{"load", "escalation_check", "generate", "guardrail", "respond"}
		first := ports.Turn{ThreadID: id, Channel: "web"}
		for i, n := range nodes {
			state := fmt.Sprintf(`{"node":%q,"released":"ü \"x\"","usage":{"input_tokens":%d},"list":[1,2]}`, n, i)
			first.Checkpoints = append(first.Checkpoints, ports.Checkpoint{RunID: "run-1", Step: i, Node: n, State: json.RawMessage(state), CreatedAt: stamp(0)})
		}
		require.NoError(t, s.SaveTurn(ctx, first))
		require.NoError(t, s.SaveTurn(ctx, ports.Turn{ThreadID: id, Checkpoints: []ports.Checkpoint{
			{RunID: "run-2", Step: 0, Node: "load", State: json.RawMessage(`{}`), CreatedAt: stamp(time.Second)},
		}}))
		cps, err := s.Checkpoints(ctx, id)
		require.NoError(t, err)
		require.Len(t, cps, len(nodes)+1)
		for i, n := range nodes {
			assert.Equal(t, "run-1", cps[i].RunID)
			assert.Equal(t, i, cps[i].Step)
			assert.Equal(t, n, cps[i].Node)
			assert.JSONEq(t, fmt.Sprintf(`{"node":%q,"released":"ü \"x\"","usage":{"input_tokens":%d},"list":[1,2]}`, n, i), string(cps[i].State))
			assert.True(t, stamp(0).Equal(cps[i].CreatedAt))
		}
		assert.Equal(t, "run-2", cps[len(nodes)].RunID)
	})

	t.Run("records escalations", func(t *testing.T) {
		s, _ := newStores(t)
		id := session(t)
		e1 := ports.EscalationRecord{RunID: "run-1", Reason: ports.ReasonUserRequested, Detail: `the user wrote "human"`, CreatedAt: stamp(0)}
		e2 := ports.EscalationRecord{RunID: "run-2", Reason: ports.ReasonGuardrail, CreatedAt: stamp(time.Second)}
		require.NoError(t, s.SaveTurn(ctx, ports.Turn{ThreadID: id, Channel: "web", Escalation: &e1}))
		require.NoError(t, s.SaveTurn(ctx, ports.Turn{ThreadID: id, Channel: "web", Escalation: &e2}))
		th, err := s.Load(ctx, id)
		require.NoError(t, err)
		sameEscalations(t, []ports.EscalationRecord{e1, e2}, th.Escalations)
	})

	t.Run("a cancelled context fails", func(t *testing.T) {
		s, _ := newStores(t)
		id := session(t)
		save(t, s, id)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		require.Error(t, s.SaveTurn(cctx, ports.Turn{ThreadID: id, Messages: []ports.Message{user("m1", "hi", 0)}}))
		_, err := s.Load(cctx, id)
		require.Error(t, err)
		_, err = s.History(cctx, id)
		require.Error(t, err)
		msgs, err := s.History(ctx, id)
		require.NoError(t, err)
		assert.Empty(t, msgs, "nothing was saved")
	})

	t.Run("every instance sees the thread", func(t *testing.T) {
		a, b := newStores(t)
		if b == nil {
			return // an in-process store has no other instance
		}
		id := session(t)
		save(t, a, id, user("m1", "on a", 0))
		save(t, b, id, answer("m2", "on b", time.Second))
		for _, s := range []CheckpointStore{a, b} {
			msgs, err := s.History(ctx, id)
			require.NoError(t, err)
			sameMessages(t, []ports.Message{user("m1", "on a", 0), answer("m2", "on b", time.Second)}, msgs)
		}
	})

	// A chat stores its turn when it ends, all at once.
	cp := func(run string, step int, node string) ports.Checkpoint {
		state := fmt.Sprintf(`{"run_id":%q,"node":%q,"released":"ü \"x\"","usage":{"input_tokens":%d}}`, run, node, step)
		return ports.Checkpoint{RunID: run, Step: step, Node: node, State: json.RawMessage(state), CreatedAt: stamp(time.Duration(step) * time.Millisecond)}
	}

	t.Run("a turn creates its thread", func(t *testing.T) {
		s, _ := newStores(t)
		id := session(t)
		turn := ports.Turn{
			ThreadID:    id,
			Channel:     "web",
			Messages:    []ports.Message{user("m1", "I want a human", 0), answer("m2", "Someone will take over.", time.Second)},
			Checkpoints: []ports.Checkpoint{cp("run-1", 0, "load"), cp("run-1", 1, "escalation_check"), cp("run-1", 2, "escalate")},
			Escalation:  &ports.EscalationRecord{RunID: "run-1", Reason: ports.ReasonUserRequested, Detail: `the user wrote "human"`, CreatedAt: stamp(time.Second)},
		}
		require.NoError(t, s.SaveTurn(ctx, turn))
		th, err := s.Load(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, id, th.ID)
		assert.Equal(t, "web", th.Channel)
		assert.False(t, th.CreatedAt.IsZero())
		sameMessages(t, turn.Messages, th.Messages)
		sameEscalations(t, []ports.EscalationRecord{*turn.Escalation}, th.Escalations)
		cps, err := s.Checkpoints(ctx, id)
		require.NoError(t, err)
		sameCheckpoints(t, turn.Checkpoints, cps)
	})

	t.Run("turns append after what is stored", func(t *testing.T) {
		s, _ := newStores(t)
		id := session(t)
		require.NoError(t, s.SaveTurn(ctx, ports.Turn{ThreadID: id, Channel: "web",
			Messages: []ports.Message{user("m1", "hi", 0)}, Checkpoints: []ports.Checkpoint{cp("run-0", 0, "load")}}))
		first := ports.Turn{
			ThreadID:    id,
			Channel:     "sms",
			Messages:    []ports.Message{user("m2", "Where is my order?", time.Second), answer("m3", "On its way.", time.Second)},
			Checkpoints: []ports.Checkpoint{cp("run-1", 0, "load"), cp("run-1", 1, "generate"), cp("run-1", 2, "respond")},
		}
		// Same timestamps: the order is the turn's. A cancelled answer may
		// be empty.
		second := ports.Turn{
			ThreadID:    id,
			Messages:    []ports.Message{user("m4", "Thanks", 2*time.Second), answer("m5", "", 2*time.Second)},
			Checkpoints: []ports.Checkpoint{cp("run-2", 0, "load"), cp("run-2", 1, "cancelled")},
		}
		second.Messages[1].Cancelled = true
		// A run that stored no message still has its checkpoints.
		third := ports.Turn{ThreadID: id, Checkpoints: []ports.Checkpoint{cp("run-3", 0, "load")}}
		for _, turn := range []ports.Turn{first, second, third} {
			require.NoError(t, s.SaveTurn(ctx, turn))
		}
		th, err := s.Load(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, "web", th.Channel, "a turn does not change the thread's channel")
		assert.Empty(t, th.Escalations)
		want := append([]ports.Message{user("m1", "hi", 0)}, first.Messages...)
		sameMessages(t, append(want, second.Messages...), th.Messages)
		cps, err := s.Checkpoints(ctx, id)
		require.NoError(t, err)
		wantCps := append([]ports.Checkpoint{cp("run-0", 0, "load")}, first.Checkpoints...)
		wantCps = append(wantCps, second.Checkpoints...)
		sameCheckpoints(t, append(wantCps, third.Checkpoints...), cps)
	})

	t.Run("a failed turn stores nothing", func(t *testing.T) {
		s, _ := newStores(t)
		old, fresh := session(t), session(t)
		save(t, s, old, user("m1", "hi", 0))
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		turn := func(id string, msgs ...ports.Message) ports.Turn {
			return ports.Turn{
				ThreadID:    id,
				Channel:     "web",
				Messages:    msgs,
				Checkpoints: []ports.Checkpoint{cp("run-1", 0, "load"), cp("run-1", 1, "escalate")},
				Escalation:  &ports.EscalationRecord{RunID: "run-1", Reason: ports.ReasonRule, CreatedAt: stamp(0)},
			}
		}
		for _, tc := range []struct {
			name string
			ctx  context.Context
			turn ports.Turn
		}{
			{"a cancelled context", cancelled, turn(old, user("m2", "lost", 0))},
			{"a cancelled context on a new thread", cancelled, turn(fresh, user("m2", "lost", 0))},
			// The store refuses it after the first message is appended.
			{"a message id already in the thread", ctx, turn(old, user("m2", "lost", 0), answer("m1", "again", 0))},
			{"a message id twice in the turn", ctx, turn(fresh, user("m2", "lost", 0), answer("m2", "again", 0))},
			{"a message without an id", ctx, turn(fresh, user("m2", "lost", 0), answer("", "no id", 0))},
			{"no thread id", ctx, turn("", user("m2", "lost", 0))},
		} {
			err := s.SaveTurn(tc.ctx, tc.turn)
			require.Error(t, err, tc.name)
			require.NotErrorIs(t, err, conversation.ErrThreadNotFound, tc.name)
		}
		th, err := s.Load(ctx, old)
		require.NoError(t, err)
		sameMessages(t, []ports.Message{user("m1", "hi", 0)}, th.Messages)
		assert.Empty(t, th.Escalations)
		cps, err := s.Checkpoints(ctx, old)
		require.NoError(t, err)
		assert.Empty(t, cps)
		_, err = s.Load(ctx, fresh)
		require.ErrorIs(t, err, conversation.ErrThreadNotFound, "no thread was created")
	})

	threadStoreRefusals(t, newStores)

	t.Run("concurrent turns are not interleaved", func(t *testing.T) {
		a, b := newStores(t)
		if b == nil {
			b = a // an in-process store has no other instance
		}
		id := session(t)
		const turns = 20
		var wg sync.WaitGroup
		for i := range turns {
			s := a
			if i%2 == 1 {
				s = b
			}
			run := fmt.Sprintf("run-%d", i)
			// The thread does not exist yet: the turns race to create it.
			turn := ports.Turn{
				ThreadID:    id,
				Channel:     "web",
				Messages:    []ports.Message{user(fmt.Sprintf("q%d", i), "question", 0), answer(fmt.Sprintf("a%d", i), "answer", 0)},
				Checkpoints: []ports.Checkpoint{cp(run, 0, "load"), cp(run, 1, "generate"), cp(run, 2, "respond")},
			}
			wg.Go(func() { assert.NoError(t, s.SaveTurn(ctx, turn)) })
		}
		wg.Wait()
		for _, s := range []CheckpointStore{a, b} {
			msgs, err := s.History(ctx, id)
			require.NoError(t, err)
			require.Len(t, msgs, 2*turns)
			questions := map[string]bool{}
			for k := 0; k < len(msgs); k += 2 {
				q, ans := msgs[k], msgs[k+1]
				require.True(t, strings.HasPrefix(q.ID, "q"), "message %d is %q: a turn's question comes first", k, q.ID)
				assert.Equal(t, "a"+q.ID[1:], ans.ID, "the answer follows its question at %d", k)
				questions[q.ID] = true
			}
			assert.Len(t, questions, turns)
			cps, err := s.Checkpoints(ctx, id)
			require.NoError(t, err)
			require.Len(t, cps, 3*turns)
			for k := range cps {
				assert.Equal(t, cps[k-k%3].RunID, cps[k].RunID, "checkpoint %d is in its run's turn", k)
				assert.Equal(t, k%3, cps[k].Step, "checkpoint %d", k)
			}
		}
	})
}

// ThreadLock runs the thread lock contract on the adapter that newLocks
// makes.
func ThreadLock(t *testing.T, newLocks Instances[ports.ThreadLock]) {
	ctx := context.Background()
	const long = time.Minute

	t.Run("one lease at a time", func(t *testing.T) {
		l, _ := newLocks(t)
		id := session(t)
		lease, err := l.Acquire(ctx, id, "conn-1", long)
		require.NoError(t, err)
		_, err = l.Acquire(ctx, id, "conn-2", long)
		require.ErrorIs(t, err, conversation.ErrThreadBusy)
		_, err = l.Acquire(ctx, id, "conn-1", long)
		require.ErrorIs(t, err, conversation.ErrThreadBusy, "the same owner too")
		require.NoError(t, lease.Renew(ctx))
		_, err = l.Acquire(ctx, id, "conn-2", long)
		require.ErrorIs(t, err, conversation.ErrThreadBusy)

		require.NoError(t, lease.Release(ctx))
		again, err := l.Acquire(ctx, id, "conn-2", long)
		require.NoError(t, err, "free after release")
		require.NoError(t, again.Release(ctx))
	})

	t.Run("threads are independent", func(t *testing.T) {
		l, _ := newLocks(t)
		a, err := l.Acquire(ctx, session(t), "conn-1", long)
		require.NoError(t, err)
		b, err := l.Acquire(ctx, session(t), "conn-1", long)
		require.NoError(t, err)
		require.NoError(t, a.Release(ctx))
		require.NoError(t, b.Release(ctx))
	})

	t.Run("a released lease is gone", func(t *testing.T) {
		l, _ := newLocks(t)
		id := session(t)
		lease, err := l.Acquire(ctx, id, "conn-1", long)
		require.NoError(t, err)
		require.NoError(t, lease.Release(ctx))
		require.NoError(t, lease.Release(ctx), "releasing twice is fine")
		require.ErrorIs(t, lease.Renew(ctx), conversation.ErrLeaseLost)

		next, err := l.Acquire(ctx, id, "conn-2", long)
		require.NoError(t, err)
		require.NoError(t, lease.Release(ctx))
		_, err = l.Acquire(ctx, id, "conn-3", long)
		require.ErrorIs(t, err, conversation.ErrThreadBusy, "an old lease never frees a newer one")
		require.NoError(t, next.Release(ctx))
	})

	t.Run("an expired lease is taken over", func(t *testing.T) {
		l, _ := newLocks(t)
		id := session(t)
		old, err := l.Acquire(ctx, id, "conn-1", 20*time.Millisecond)
		require.NoError(t, err)
		next := acquireEventually(t, l, id, "conn-2")
		require.ErrorIs(t, old.Renew(ctx), conversation.ErrLeaseLost)
		require.NoError(t, old.Release(ctx))
		_, err = l.Acquire(ctx, id, "conn-3", long)
		require.ErrorIs(t, err, conversation.ErrThreadBusy, "the expired lease did not free the new one")
		require.NoError(t, next.Release(ctx))
	})

	t.Run("renewing keeps the lease", func(t *testing.T) {
		l, _ := newLocks(t)
		id := session(t)
		// The lease's ttl is short, but it is renewed far more often, and
		// for longer than the ttl.
		lease, err := l.Acquire(ctx, id, "conn-1", 2*time.Second)
		require.NoError(t, err)
		start := time.Now()
		for i := 0; i < 1000 && time.Since(start) < 3*time.Second; i++ {
			require.NoError(t, lease.Renew(ctx))
			_, err := l.Acquire(ctx, id, "conn-2", long)
			require.ErrorIs(t, err, conversation.ErrThreadBusy)
			time.Sleep(5 * time.Millisecond)
		}
		require.NoError(t, lease.Release(ctx))
	})

	t.Run("one of many concurrent acquires wins", func(t *testing.T) {
		l, _ := newLocks(t)
		id := session(t)
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			won   []ports.Lease
			other []error
		)
		for i := range 20 {
			wg.Go(func() {
				lease, err := l.Acquire(ctx, id, fmt.Sprintf("conn-%d", i), long)
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					won = append(won, lease)
				} else {
					other = append(other, err)
				}
			})
		}
		wg.Wait()
		require.Len(t, won, 1)
		for _, err := range other {
			require.ErrorIs(t, err, conversation.ErrThreadBusy)
		}
		require.NoError(t, won[0].Release(ctx))
	})

	t.Run("a ttl must be positive", func(t *testing.T) {
		l, _ := newLocks(t)
		_, err := l.Acquire(ctx, session(t), "conn-1", 0)
		require.Error(t, err)
		require.NotErrorIs(t, err, conversation.ErrThreadBusy)
	})

	fences(t, newLocks)

	t.Run("one lease across instances", func(t *testing.T) {
		a, b := newLocks(t)
		if b == nil {
			return // an in-process lock has no other instance
		}
		id := session(t)
		lease, err := a.Acquire(ctx, id, "a-conn", long)
		require.NoError(t, err)
		_, err = b.Acquire(ctx, id, "b-conn", long)
		require.ErrorIs(t, err, conversation.ErrThreadBusy)
		require.NoError(t, lease.Release(ctx))
		other, err := b.Acquire(ctx, id, "b-conn", long)
		require.NoError(t, err)
		_, err = a.Acquire(ctx, id, "a-conn", long)
		require.ErrorIs(t, err, conversation.ErrThreadBusy)
		require.NoError(t, other.Release(ctx))
	})
}

// Fences runs the fencing cases of the thread lock contract: every
// lease's token is higher than those before it on the thread, on any
// instance, whether they were released or expired.
func fences(t *testing.T, newLocks Instances[ports.ThreadLock]) {
	t.Helper()
	ctx := context.Background()
	t.Run("fencing tokens increase", func(t *testing.T) {
		a, b := newLocks(t)
		if b == nil {
			b = a
		}
		id := session(t)
		var last int64
		for i := range 6 {
			l := a
			if i%2 == 1 {
				l = b
			}
			lease, err := l.Acquire(ctx, id, "conn", time.Minute)
			require.NoError(t, err)
			assert.Positive(t, lease.Fence())
			assert.Greater(t, lease.Fence(), last, "acquisition %d", i)
			last = lease.Fence()
			require.NoError(t, lease.Release(ctx))
		}
	})
	t.Run("a lease that took over an expired one has the higher token", func(t *testing.T) {
		l, _ := newLocks(t)
		id := session(t)
		old, err := l.Acquire(ctx, id, "conn-1", 20*time.Millisecond)
		require.NoError(t, err)
		next := acquireEventually(t, l, id, "conn-2")
		assert.Greater(t, next.Fence(), old.Fence())
		require.NoError(t, next.Release(ctx))
	})
}

// acquireEventually retries until the lock is free, within wait.
func acquireEventually(t *testing.T, l ports.ThreadLock, id, owner string) ports.Lease {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		lease, err := l.Acquire(context.Background(), id, owner, time.Minute)
		if err == nil {
			return lease
		}
		require.ErrorIs(t, err, conversation.ErrThreadBusy)
		if time.Now().After(deadline) {
			t.Fatal("the expired lease was never taken over")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
