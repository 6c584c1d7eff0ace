package conversation

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/wsserver/wsserver/core/protocol"
	"github.com/wsserver/wsserver/ports"
)

// A chat on a busy thread (PROTOCOL.md §3.8). The thread lock says who
// answers; the thread queue (ports.ThreadQueue) says who is next. A chat
// takes a free thread only when no one waits for it, so that a chat sent
// now never overtakes one that waited: a chat that gets the lock while
// the queue is not empty frees it again and is busy. A waiter takes the
// thread when its ticket heads the queue and the lock is free. Waiters
// learn that the thread may be free from the queue's notifications (a
// run that releases the lock, a waiter that leaves, sends one) and, in
// case one was lost, look again every QueuePoll.
//
// Where the lock and the queue live together, a Gate (ports.ThreadGate)
// takes the thread with its look at the queue in one call, and its leases
// tell the waiters when they are released.
//
// Interrupting chats join at the front of the queue, so that no waiter
// takes the thread between the end of the answer they stop and their own
// start, and stop the run that holds the lock, wherever it runs
// (stopHolder, through the run control of Config.Runs).

// Defaults of the queue's timing.
const (
	// DefaultQueueTTL is how long a ticket outlives the last sign of life
	// of its waiter: the longest a waiter of an instance that died holds
	// the thread up.
	DefaultQueueTTL = 10 * time.Second
	// DefaultQueuePoll is how often a waiter looks at the queue and the
	// lock when no notification came.
	DefaultQueuePoll = time.Second
	// maxInterrupters bounds the interrupting chats waiting at once on a
	// thread for the answer they stopped to end. They are not counted in
	// MaxQueued: MAX_QUEUED_PER_THREAD=0 still lets a chat interrupt.
	maxInterrupters = 8
)

// errQueueFull is what the client is told when the queue is full.
var errQueueFull = &protocol.Error{Code: protocol.CodeThreadBusy, Message: "too many chats wait for this thread already; wait for its end"}

// stopHolder stops the run holding threadID's lock, wherever it runs
// (Stop, through Config.Runs), with mode StopInterrupt or StopRollback.
// A stop that is not delivered is no error: the chat waits for the
// answer's end, and tries again while it heads the queue.
func (c *Conversation) stopHolder(ctx context.Context, threadID string, mode ports.StopMode) {
	delivered, err := c.Stop(context.WithoutCancel(ctx), threadID, mode)
	switch {
	case err != nil:
		c.cfg.Log.WarnContext(ctx, "the running answer could not be told to stop; waiting for its end", "err", err)
	case !delivered:
		c.cfg.Log.DebugContext(ctx, "no running answer took the stop; waiting for the thread")
	}
}

// take acquires the thread's lock for req according to its multitask
// strategy: at once when it is free and no chat waits for it; otherwise
// busy (reject), or after waiting in the thread's queue (enqueue), or
// after stopping the running answer (interrupt, rollback). What the client
// must be told when it fails (thread_busy, unavailable) has been emitted.
func (c *Conversation) take(ctx context.Context, req Request, owner string, emit func(Event)) (grant, error) {
	mode := req.Multitask
	if c.cfg.Queue == nil {
		mode = MultitaskReject // no queue to wait in
	}
	g, err := c.takeFree(ctx, req.ThreadID, owner)
	switch {
	case err == nil:
		return g, nil
	case !errors.Is(err, ErrThreadBusy) && !errors.Is(err, ErrWaitersAhead):
		return grant{}, c.unavailable(emit, err)
	case mode == MultitaskReject:
		emit(Event{Kind: EventError, Code: protocol.CodeThreadBusy, Message: ErrThreadBusy.Message})
		return grant{}, ErrThreadBusy
	}
	return c.wait(ctx, req, owner, mode, emit)
}

// takeFree takes the thread's lock when it is free and no chat waits for
// the thread: the chats that wait have it first. Otherwise it returns
// ErrThreadBusy or ErrWaitersAhead. With a Gate this is one call;
// without, the lock is taken, then the queue looked at, and the lock
// freed again when a chat waits.
func (c *Conversation) takeFree(ctx context.Context, threadID, owner string) (grant, error) {
	if c.cfg.Queue != nil && c.cfg.Gate != nil {
		g, err := c.takeTurn(ctx, threadID, owner, "")
		if err != nil && !errors.Is(err, ErrThreadBusy) && !errors.Is(err, ErrWaitersAhead) {
			err = fmt.Errorf("conversation: take thread: %w", err)
		}
		return g, err
	}
	g, err := c.acquire(ctx, threadID, owner)
	switch {
	case errors.Is(err, ErrThreadBusy):
		return grant{}, err
	case err != nil:
		return grant{}, fmt.Errorf("conversation: acquire thread lock: %w", err)
	case c.cfg.Queue == nil:
		return g, nil
	}
	head, err := c.head(ctx, threadID)
	if err == nil && head == "" {
		return g, nil
	}
	c.free(ctx, threadID, g.lease, g.asked)
	if err != nil {
		return grant{}, fmt.Errorf("conversation: read thread queue: %w", err)
	}
	return grant{}, ErrWaitersAhead
}

// grant is a lease and when it was asked for: it is surely held for a
// TTL from then.
type grant struct {
	lease ports.Lease
	asked time.Time
}

// acquire tries the thread's lock once (see locked).
func (c *Conversation) acquire(ctx context.Context, threadID, owner string) (grant, error) {
	return c.locked(ctx, threadID, func(ctx context.Context) (ports.Lease, error) {
		return c.cfg.Lock.Acquire(ctx, threadID, owner, c.cfg.LockTTL)
	})
}

// takeTurn takes the thread through the Gate when ticket heads its queue
// ("": when no chat waits) (see locked).
func (c *Conversation) takeTurn(ctx context.Context, threadID, owner, ticket string) (grant, error) {
	return c.locked(ctx, threadID, func(ctx context.Context) (ports.Lease, error) {
		return c.cfg.Gate.TakeTurn(ctx, threadID, owner, ticket, c.cfg.LockTTL)
	})
}

// locked runs take, which takes the thread's lock, bounded by
// WriteTimeout but not by ctx: a take cut short when the client leaves
// may still have taken the lock in Redis, and nobody would free it before
// its TTL ran out, the thread busy meanwhile. A lock taken for a client
// that left meanwhile is freed at once, and ctx's cause returned.
func (c *Conversation) locked(ctx context.Context, threadID string, take func(context.Context) (ports.Lease, error)) (grant, error) {
	asked := time.Now()
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.WriteTimeout)
	lease, err := take(tctx)
	cancel()
	if err == nil && ctx.Err() != nil {
		c.free(ctx, threadID, lease, asked)
		return grant{}, context.Cause(ctx)
	}
	return grant{lease: lease, asked: asked}, err
}

func (c *Conversation) head(ctx context.Context, threadID string) (string, error) {
	hctx, cancel := context.WithTimeout(ctx, c.cfg.WriteTimeout)
	defer cancel()
	return c.cfg.Queue.Head(hctx, threadID)
}

func (c *Conversation) unavailable(emit func(Event), err error) error {
	emit(Event{Kind: EventError, Code: protocol.CodeUnavailable, Message: "the conversation is unavailable right now; nothing was stored; try again"})
	return err
}

// free releases lease (retrying in the background when the lock does not
// answer; renewed is when it was last acquired or renewed) and tells the
// thread's waiters, on every instance, that it may be theirs. The
// notification goes out in the background: the run's last event does not
// wait for it (Redis may be slow or away; the waiters look again anyway).
func (c *Conversation) free(ctx context.Context, threadID string, lease ports.Lease, renewed time.Time) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.WriteTimeout)
	err := lease.Release(wctx)
	cancel()
	if err != nil {
		// The lock is unreachable (Redis away): left alone, it would
		// hold the thread for the rest of its TTL after the client
		// saw end. The last event does not wait for the retries.
		c.retryRelease(context.WithoutCancel(ctx), lease, renewed.Add(c.cfg.LockTTL), err)
		return // no waiter can take the thread before the release succeeds
	}
	if c.cfg.Queue == nil || c.cfg.Gate != nil {
		return // no waiters, or the gate's lease told them
	}
	r := &c.releases
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return // shutting down: the waiters look again by themselves
	}
	r.running.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.running.Done()
		c.notify(ctx, threadID)
	}()
}

func (c *Conversation) notify(ctx context.Context, threadID string) {
	if c.cfg.Queue == nil {
		return
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.WriteTimeout)
	defer cancel()
	if err := c.cfg.Queue.Notify(wctx, threadID); err != nil {
		// The waiters look again within QueuePoll.
		c.cfg.Log.WarnContext(ctx, "thread queue not notified", "err", err)
	}
}

// wait puts req in the thread's queue and returns the thread's lease
// once the chat's turn has come. An interrupting chat joins at the front
// and stops the running answer first. It returns ctx's error, having sent
// nothing more, when ctx ends first (the client left): the chat leaves
// the queue.
func (c *Conversation) wait(ctx context.Context, req Request, owner string, mode Multitask, emit func(Event)) (grant, error) {
	q := c.cfg.Queue
	thread := req.ThreadID
	ticket := c.cfg.NewID()
	front := mode != MultitaskEnqueue
	limit := c.cfg.MaxQueued
	if front {
		limit = maxInterrupters
	}
	// Watched before joining: a notification after the join is not missed.
	changed, unwatch := q.Watch(thread)
	defer unwatch()
	jctx, cancel := context.WithTimeout(ctx, c.cfg.WriteTimeout)
	pos, err := q.Join(jctx, thread, ticket, front, limit, c.cfg.QueueTTL)
	cancel()
	switch {
	case errors.Is(err, ErrQueueFull):
		emit(Event{Kind: EventError, Code: errQueueFull.Code, Message: errQueueFull.Message})
		return grant{}, fmt.Errorf("%w: %w", ErrThreadBusy, err)
	case err != nil:
		return grant{}, c.unavailable(emit, fmt.Errorf("conversation: join thread queue: %w", err))
	}
	defer func() {
		// The next waiter may head the queue now.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.WriteTimeout)
		if err := q.Leave(wctx, thread, ticket); err != nil {
			c.cfg.Log.WarnContext(ctx, "thread queue not left; the ticket expires by itself", "err", err)
		}
		cancel()
		c.notify(ctx, thread)
	}()

	var stopMode ports.StopMode // how this chat stops the running answer; empty: it waits
	switch mode {
	case MultitaskEnqueue:
		emit(Event{Kind: EventQueued, ThreadID: thread, Position: pos})
		c.cfg.Log.DebugContext(ctx, "chat queued", "position", pos)
	case MultitaskInterrupt:
		stopMode = ports.StopInterrupt
	case MultitaskRollback:
		stopMode = ports.StopRollback
	}
	if stopMode != "" {
		c.stopHolder(ctx, thread, stopMode)
	}

	poll := time.NewTicker(c.cfg.QueuePoll)
	defer poll.Stop()
	kept := time.Now()    // when the ticket was last joined or kept
	var failing time.Time // since when the queue or the lock keep failing
	// restop: an interrupting chat stops whoever holds the thread while it
	// has headed the queue since it joined: a waiter that took the thread
	// in a race with its join, or a stop that was lost. Once another
	// ticket was seen ahead of it (an earlier interrupting chat), the
	// holder is that chat, whose turn it was.
	restop := stopMode != ""
	for {
		g, head, err := c.turn(ctx, thread, ticket, owner, &kept)
		switch {
		case g.lease != nil:
			return g, nil
		case errors.Is(err, ErrTicketLost):
			return grant{}, c.unavailable(emit, fmt.Errorf("conversation: waiting for the thread: %w", err))
		case err != nil && ctx.Err() == nil:
			if failing.IsZero() {
				failing = time.Now()
			}
			if time.Since(failing) >= c.cfg.QueueTTL {
				return grant{}, c.unavailable(emit, fmt.Errorf("conversation: waiting for the thread: %w", err))
			}
			c.cfg.Log.WarnContext(ctx, "thread queue or lock failed while waiting; retrying", "err", err)
		case err == nil:
			failing = time.Time{}
			restop = restop && head
		}
		select {
		case <-ctx.Done():
			return grant{}, context.Cause(ctx)
		case <-changed:
		case <-poll.C:
			if restop {
				c.stopHolder(ctx, thread, stopMode)
			}
		}
	}
}

// turn keeps the ticket alive and takes the thread when the ticket heads
// the queue and the lock is free. It returns a nil lease and nil error
// when it is not the ticket's turn yet; head tells whether the ticket
// heads the queue.
func (c *Conversation) turn(ctx context.Context, thread, ticket, owner string, kept *time.Time) (g grant, head bool, err error) {
	q := c.cfg.Queue
	if time.Since(*kept) >= c.cfg.QueueTTL/3 {
		at := time.Now()
		kctx, cancel := context.WithTimeout(ctx, c.cfg.WriteTimeout)
		err := q.Keep(kctx, thread, ticket, c.cfg.QueueTTL)
		cancel()
		if err != nil {
			return grant{}, false, fmt.Errorf("keep queue ticket: %w", err)
		}
		*kept = at
	}
	if c.cfg.Gate != nil {
		g, err := c.takeTurn(ctx, thread, owner, ticket)
		switch {
		case err == nil:
			return g, true, nil
		case errors.Is(err, ErrThreadBusy):
			return grant{}, true, nil
		case errors.Is(err, ErrWaitersAhead):
			return grant{}, false, nil
		}
		return grant{}, false, fmt.Errorf("take thread: %w", err)
	}
	first, err := c.head(ctx, thread)
	if err != nil || first != ticket {
		return grant{}, false, err
	}
	g, err = c.acquire(ctx, thread, owner)
	if errors.Is(err, ErrThreadBusy) {
		return grant{}, true, nil
	}
	if err != nil {
		return grant{}, true, err
	}
	// An interrupting chat may have joined ahead between the look at the
	// head and the lock: the thread is its.
	first, err = c.head(ctx, thread)
	if err != nil || first != ticket {
		c.free(ctx, thread, g.lease, g.asked)
		return grant{}, false, err
	}
	return g, true, nil
}
