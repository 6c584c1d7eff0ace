package conversation_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/core/protocol"
	"github.com/wsserver/wsserver/ports"
)

// background is a run on its own goroutine.
type background struct {
	s      *sink
	cancel context.CancelFunc
	done   chan struct{}
	res    conversation.Result
	err    error
	tok    chan struct{} // closed at its first token
}

// runInBackground starts req on h; a test waits for it with end.
func runInBackground(t *testing.T, h *harness, req conversation.Request) *background {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b := &background{cancel: cancel, done: make(chan struct{}), tok: make(chan struct{})}
	var once sync.Once
	b.s = &sink{onTok: func(conversation.Event) { once.Do(func() { close(b.tok) }) }}
	go func() {
		defer close(b.done)
		b.res, b.err = h.conv.Run(ctx, req, b.s.emit)
	}()
	t.Cleanup(func() { cancel(); <-b.done })
	return b
}

func (b *background) streaming(t *testing.T) {
	t.Helper()
	select {
	case <-b.tok:
	case <-b.done:
		t.Fatalf("the run ended before its first token: %v", b.s.kinds())
	case <-time.After(wait):
		t.Fatal("no token")
	}
}

func (b *background) end(t *testing.T) {
	t.Helper()
	select {
	case <-b.done:
	case <-time.After(wait):
		t.Fatal("the run never ended")
	}
}

// events returns what the run emitted so far.
func (b *background) events() []conversation.Event {
	b.s.mu.Lock()
	defer b.s.mu.Unlock()
	return append([]conversation.Event(nil), b.s.events...)
}

// eventually waits until cond holds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("never: " + what)
		}
		time.Sleep(time.Millisecond)
	}
}

// throughGate makes multitaskHarness's conversations take threads
// through a Gate (TestMultitaskThroughTheGate).
var throughGate bool

func multitaskHarness(t *testing.T, maxQueued int) (*harness, *fakeQueue) {
	t.Helper()
	q := newFakeQueue()
	h, err := newHarness([]script{
		{pieces: []string{"First part. ", "and more"}, block: true}, // the running answer, stopped by the test
		{pieces: []string{"Second."}},
	}, false, 0, func(c *conversation.Config) {
		c.Queue = q
		c.MaxQueued = maxQueued
		c.Runs = &fakeRuns{}
		if throughGate {
			c.Gate = &fakeGate{l: c.Lock.(*fakeLock), q: q}
		}
	})
	require.NoError(t, err)
	return h, q
}

func ask(message string, m conversation.Multitask) conversation.Request {
	return conversation.Request{ThreadID: thread, Message: message, Data: json.RawMessage(`[]`), Multitask: m}
}

func TestMultitaskReject(t *testing.T) {
	for _, m := range []conversation.Multitask{conversation.MultitaskReject, conversation.MultitaskEnqueue} {
		t.Run(m.String(), func(t *testing.T) {
			h, _ := multitaskHarness(t, 0) // no place in the queue: enqueue is refused too
			first := runInBackground(t, h, ask("first", conversation.MultitaskReject))
			first.streaming(t)
			var s sink
			_, err := h.conv.Run(context.Background(), ask("second", m), s.emit)
			require.ErrorIs(t, err, conversation.ErrThreadBusy)
			assert.Equal(t, []conversation.EventKind{errorEvent}, s.kinds())
			assert.Equal(t, protocol.CodeThreadBusy, s.last().Code)
		})
	}
}

func TestMultitaskEnqueue(t *testing.T) {
	h, q := multitaskHarness(t, 5)
	first := runInBackground(t, h, ask("first", conversation.MultitaskReject))
	first.streaming(t)
	second := runInBackground(t, h, ask("second", conversation.MultitaskEnqueue))
	eventually(t, "the second chat is queued", func() bool { return len(second.events()) > 0 })
	assert.Equal(t, conversation.Event{Kind: conversation.EventQueued, ThreadID: thread, Position: 1}, second.events()[0])
	third := runInBackground(t, h, ask("third", conversation.MultitaskEnqueue))
	eventually(t, "the third chat is queued", func() bool { return len(third.events()) > 0 })
	assert.Equal(t, 2, third.events()[0].Position)

	// A chat that would overtake them is busy, though the lock is free
	// for a moment when the first answer ends.
	first.cancel()
	first.end(t)
	second.end(t)
	require.NoError(t, second.err)
	assert.Equal(t, []conversation.EventKind{queued, started, tokens, end}, second.s.kinds())
	third.end(t)
	require.NoError(t, third.err)
	assert.Equal(t, []conversation.EventKind{queued, started, tokens, end}, third.s.kinds())
	assert.Zero(t, q.waiting(thread), "every chat left the queue")

	msgs, err := h.store.History(context.Background(), thread)
	require.NoError(t, err)
	var got []string
	for _, m := range msgs {
		got = append(got, string(m.Role)+": "+m.Content)
	}
	assert.Equal(t, []string{"user: first", "assistant: First part.", "user: second", "assistant: Second.", "user: third", "assistant: Second."}, got,
		"the queued chats ran in their order, each after the one before was stored")
}

func TestMultitaskQueueBound(t *testing.T) {
	h, q := multitaskHarness(t, 1)
	first := runInBackground(t, h, ask("first", conversation.MultitaskReject))
	first.streaming(t)
	second := runInBackground(t, h, ask("second", conversation.MultitaskEnqueue))
	eventually(t, "the second chat is queued", func() bool { return len(second.events()) > 0 })
	var s sink
	_, err := h.conv.Run(context.Background(), ask("third", conversation.MultitaskEnqueue), s.emit)
	require.ErrorIs(t, err, conversation.ErrThreadBusy)
	require.ErrorIs(t, err, conversation.ErrQueueFull)
	assert.Equal(t, []conversation.EventKind{errorEvent}, s.kinds())
	assert.Equal(t, protocol.CodeThreadBusy, s.last().Code)
	assert.Equal(t, 1, q.waiting(thread))
}

// A queued chat whose client leaves leaves the queue, and the next one
// takes its place.
func TestMultitaskQueuedChatLeaves(t *testing.T) {
	h, q := multitaskHarness(t, 5)
	first := runInBackground(t, h, ask("first", conversation.MultitaskReject))
	first.streaming(t)
	leaving := runInBackground(t, h, ask("leaving", conversation.MultitaskEnqueue))
	eventually(t, "queued", func() bool { return len(leaving.events()) > 0 })
	staying := runInBackground(t, h, ask("staying", conversation.MultitaskEnqueue))
	eventually(t, "queued", func() bool { return len(staying.events()) > 0 })
	assert.Equal(t, 2, staying.events()[0].Position)

	leaving.cancel()
	leaving.end(t)
	assert.Equal(t, []conversation.EventKind{queued}, leaving.s.kinds(), "nothing more is sent to a client that left")
	assert.Equal(t, 1, q.waiting(thread))

	first.cancel()
	staying.end(t)
	require.NoError(t, staying.err)
	msgs, err := h.store.History(context.Background(), thread)
	require.NoError(t, err)
	require.Len(t, msgs, 4)
	assert.Equal(t, "staying", msgs[2].Content, "the chat that left was never run")
}

func TestMultitaskInterrupt(t *testing.T) {
	h, q := multitaskHarness(t, 0) // interrupting needs no place in the queue
	first := runInBackground(t, h, ask("first", conversation.MultitaskReject))
	first.streaming(t)
	var s sink
	_, err := runBounded(t, h, ask("second", conversation.MultitaskInterrupt), &s)
	require.NoError(t, err)
	assert.Equal(t, []conversation.EventKind{started, tokens, end}, s.kinds())

	first.end(t)
	require.NoError(t, first.err)
	assert.True(t, first.res.Cancelled)
	last := first.s.last()
	assert.Equal(t, conversation.EventEnd, last.Kind)
	assert.True(t, last.Cancelled)
	assert.False(t, last.RolledBack)
	assert.NotEmpty(t, last.MessageID, "the interrupted answer is stored")
	assert.Equal(t, []string{"First part."}, first.s.tokens())

	reqs := h.model.requests()
	require.Len(t, reqs, 2)
	assert.Equal(t, []ports.Message{
		{ID: "id-3", Role: ports.RoleUser, Content: "first", CreatedAt: reqs[1].Messages[0].CreatedAt},
		{ID: last.MessageID, Role: ports.RoleAssistant, Content: "First part.", CreatedAt: reqs[1].Messages[1].CreatedAt, Cancelled: true},
	}, reqs[1].Messages[:2], "the new chat sees the interrupted turn, as far as it was sent")
	msgs, err := h.store.History(context.Background(), thread)
	require.NoError(t, err)
	require.Len(t, msgs, 4)
	assert.True(t, msgs[1].Cancelled)
	assert.Equal(t, "First part.", msgs[1].Content)
	assert.Zero(t, q.waiting(thread))
}

func TestMultitaskRollback(t *testing.T) {
	h, q := multitaskHarness(t, 0)
	first := runInBackground(t, h, ask("first", conversation.MultitaskReject))
	first.streaming(t)
	var s sink
	_, err := runBounded(t, h, ask("second", conversation.MultitaskRollback), &s)
	require.NoError(t, err)
	assert.Equal(t, []conversation.EventKind{started, tokens, end}, s.kinds())
	assert.False(t, s.last().RolledBack, "the new chat's own end is an ordinary one")

	first.end(t)
	require.NoError(t, first.err)
	last := first.s.last()
	assert.Equal(t, conversation.EventEnd, last.Kind)
	assert.True(t, last.Cancelled)
	assert.True(t, last.RolledBack)
	assert.Empty(t, last.MessageID, "nothing of the rolled back turn is stored")

	reqs := h.model.requests()
	require.Len(t, reqs, 2)
	require.Len(t, reqs[1].Messages, 1, "the new chat does not see the rolled back turn")
	assert.Equal(t, "second", reqs[1].Messages[0].Content)
	msgs, err := h.store.History(context.Background(), thread)
	require.NoError(t, err)
	require.Len(t, msgs, 2, "history reads as if the turn never happened")
	assert.Equal(t, "second", msgs[0].Content)
	assert.Equal(t, "Second.", msgs[1].Content)
	for _, n := range h.store.nodes(thread) {
		assert.NotEqual(t, "cancelled", n, "not even its checkpoints")
	}
	assert.Zero(t, q.waiting(thread))
}

// On a free thread, every strategy runs at once, without a queue.
func TestMultitaskOnAFreeThread(t *testing.T) {
	for _, m := range []conversation.Multitask{conversation.MultitaskEnqueue, conversation.MultitaskInterrupt, conversation.MultitaskRollback} {
		t.Run(m.String(), func(t *testing.T) {
			q := newFakeQueue()
			h, err := newHarness([]script{{pieces: []string{"Fine."}}}, false, 0, func(c *conversation.Config) { c.Queue = q; c.MaxQueued = 5 })
			require.NoError(t, err)
			var s sink
			_, err = runBounded(t, h, ask("hi", m), &s)
			require.NoError(t, err)
			assert.Equal(t, []conversation.EventKind{started, tokens, end}, s.kinds())
			assert.Zero(t, q.joined, "nobody waited")
		})
	}
}

// A chat that would take a free thread while others wait for it is busy:
// the thread is theirs first.
func TestMultitaskNoOvertaking(t *testing.T) {
	h, q := multitaskHarness(t, 5)
	_, err := q.Join(context.Background(), thread, "someone", false, 5, time.Minute)
	require.NoError(t, err)
	var s sink
	_, err = runBounded(t, h, ask("hi", conversation.MultitaskReject), &s)
	require.ErrorIs(t, err, conversation.ErrThreadBusy)
	assert.False(t, h.lock.isHeld(thread), "the lock it took for a moment is free again")
}

// The lock is fenced for streaming too: a token due when the lease may
// have expired — renewals failing, the lock's server away — is never sent,
// and the run stops as one that lost its lease.
func TestGraphStreamsOnlyUnderTheLease(t *testing.T) {
	const ttl = 30 * time.Millisecond
	pieces := make([]string, 400)
	for i := range pieces {
		pieces[i] = "Word. "
	}
	h, err := newHarness([]script{{pieces: pieces, gap: time.Millisecond}}, false, 0,
		func(c *conversation.Config) { c.LockTTL = ttl; c.MaxStretch = -1 })
	require.NoError(t, err)
	h.lock.renewErr = errUnreachable // not lost: the renewals keep trying
	var s sink
	_, err = runBounded(t, h, chat("hi"), &s)
	require.ErrorIs(t, err, conversation.ErrLeaseLost)
	texts, at := s.timedTokens()
	require.NotEmpty(t, texts, "tokens went out while the lease held")
	h.lock.mu.Lock()
	expires := h.lock.acquiredAt.Add(ttl)
	h.lock.mu.Unlock()
	for i, when := range at {
		assert.True(t, when.Before(expires), "token %d went out %v after the lease may have expired", i, when.Sub(expires))
	}
	assert.Equal(t, protocol.CodeInternal, s.last().Code)
}

var queued = conversation.EventQueued

// errUnreachable is a lock server that does not answer.
var errUnreachable = errors.New("redis: i/o timeout")

// An interrupting chat whose stop reaches no one (no run control here: the
// answer runs on an instance that cannot be told) waits at the head of the
// queue for the answer's end, ahead of the chats that waited before it.
func TestMultitaskInterruptGoesAheadOfTheQueue(t *testing.T) {
	h, q := multitaskHarness(t, 5)
	h2, err := newHarness(h.model.scripts, false, 0, func(c *conversation.Config) {
		c.Store, c.Lock, c.Queue, c.MaxQueued = h.store, h.lock, q, 5 // shares the thread, not the runs
		c.Model = h.model
	})
	require.NoError(t, err)
	first := runInBackground(t, h2, ask("first", conversation.MultitaskReject))
	first.streaming(t)
	waiter := runInBackground(t, h, ask("waited", conversation.MultitaskEnqueue))
	eventually(t, "queued", func() bool { return len(waiter.events()) > 0 })
	interrupter := runInBackground(t, h, ask("interrupts", conversation.MultitaskInterrupt))
	eventually(t, "the interrupting chat waits at the head", func() bool { return q.waiting(thread) == 2 })
	head, err := q.Head(context.Background(), thread)
	require.NoError(t, err)
	assert.NotEmpty(t, head)
	assert.Empty(t, interrupter.events(), "nothing is sent while it waits")

	first.cancel() // the answer ends by itself, as far as this instance knows
	interrupter.end(t)
	waiter.end(t)
	require.NoError(t, interrupter.err)
	require.NoError(t, waiter.err)
	msgs, err := h.store.History(context.Background(), thread)
	require.NoError(t, err)
	var users []string
	for _, m := range msgs {
		if m.Role == ports.RoleUser {
			users = append(users, m.Content)
		}
	}
	assert.Equal(t, []string{"first", "interrupts", "waited"}, users)
}

// A queue that does not answer (Redis away) makes a chat that must wait
// unavailable, as a lock that does not answer does.
func TestMultitaskQueueUnavailable(t *testing.T) {
	h, q := multitaskHarness(t, 5)
	first := runInBackground(t, h, ask("first", conversation.MultitaskReject))
	first.streaming(t)
	q.mu.Lock()
	q.err = errUnreachable
	q.mu.Unlock()
	for _, m := range []conversation.Multitask{conversation.MultitaskEnqueue, conversation.MultitaskInterrupt} {
		var s sink
		_, err := runBounded(t, h, ask("second", m), &s)
		require.ErrorIs(t, err, errUnreachable, m.String())
		assert.Equal(t, []conversation.EventKind{errorEvent}, s.kinds())
		assert.Equal(t, protocol.CodeUnavailable, s.last().Code)
	}
}

// The same rules hold when the thread is taken through a Gate, in one
// call, whose leases tell the waiters when they are released.
func TestMultitaskThroughTheGate(t *testing.T) {
	throughGate = true
	defer func() { throughGate = false }()
	for name, test := range map[string]func(*testing.T){
		"reject":               TestMultitaskReject,
		"enqueue":              TestMultitaskEnqueue,
		"queue bound":          TestMultitaskQueueBound,
		"queued chat leaves":   TestMultitaskQueuedChatLeaves,
		"interrupt":            TestMultitaskInterrupt,
		"rollback":             TestMultitaskRollback,
		"no overtaking":        TestMultitaskNoOvertaking,
		"interrupt goes ahead": TestMultitaskInterruptGoesAheadOfTheQueue,
		"queue unavailable":    TestMultitaskQueueUnavailable,
	} {
		t.Run(name, test)
	}
}

// lateLock takes the lock, then lets the client leave before its answer
// comes back, as a Redis reply that arrives after the caller's context
// ended: a lock taken for a client that left must be freed, not left to
// its TTL.
type lateLock struct {
	ports.ThreadLock
	leave func()
}

func (l lateLock) Acquire(ctx context.Context, id, owner string, ttl time.Duration) (ports.Lease, error) {
	lease, err := l.ThreadLock.Acquire(ctx, id, owner, ttl)
	l.leave()
	if ctx.Err() != nil {
		return nil, ctx.Err() // the reply is lost with the caller's context
	}
	return lease, err
}

func TestALockTakenForAClientThatLeftIsFreed(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h, err := newHarness([]script{{pieces: []string{"Hello."}}}, false, 0, func(c *conversation.Config) {
		c.Lock = lateLock{ThreadLock: c.Lock, leave: cancel}
	})
	require.NoError(t, err)
	var s sink
	_, err = h.conv.Run(ctx, conversation.Request{ThreadID: thread, Message: "hi", Data: json.RawMessage(`[]`)}, s.emit)
	require.ErrorIs(t, err, context.Canceled)
	h.lock.mu.Lock()
	defer h.lock.mu.Unlock()
	assert.False(t, h.lock.held[thread], "the thread is free again")
	assert.Equal(t, 1, h.lock.released)
}
