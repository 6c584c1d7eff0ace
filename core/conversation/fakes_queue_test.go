package conversation_test

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
)

// fakeQueue is a thread queue in maps, without expiry: tickets leave
// when their waiter does.
type fakeQueue struct {
	mu       sync.Mutex
	front    map[string][]string
	back     map[string][]string
	watchers map[string][]chan struct{}
	joined   int   // every Join that succeeded
	err      error // Join and Head fail with it, as with Redis away
}

func newFakeQueue() *fakeQueue {
	return &fakeQueue{front: map[string][]string{}, back: map[string][]string{}, watchers: map[string][]chan struct{}{}}
}

func (q *fakeQueue) Join(ctx context.Context, id, ticket string, front bool, limit int, ttl time.Duration) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return 0, q.err
	}
	list := q.back
	if front {
		list = q.front
	}
	if len(list[id]) >= limit {
		return 0, conversation.ErrQueueFull
	}
	list[id] = append(list[id], ticket)
	q.joined++
	if front {
		return len(q.front[id]), nil
	}
	return len(q.front[id]) + len(q.back[id]), nil
}

func (q *fakeQueue) Keep(ctx context.Context, id, ticket string, ttl time.Duration) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !slices.Contains(q.front[id], ticket) && !slices.Contains(q.back[id], ticket) {
		return conversation.ErrTicketLost
	}
	return nil
}

func (q *fakeQueue) Head(ctx context.Context, id string) (string, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return "", q.err
	}
	if len(q.front[id]) > 0 {
		return q.front[id][0], nil
	}
	if len(q.back[id]) > 0 {
		return q.back[id][0], nil
	}
	return "", nil
}

func (q *fakeQueue) Leave(ctx context.Context, id, ticket string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	is := func(t string) bool { return t == ticket }
	q.front[id] = slices.DeleteFunc(q.front[id], is)
	q.back[id] = slices.DeleteFunc(q.back[id], is)
	return nil
}

func (q *fakeQueue) Notify(ctx context.Context, id string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, ch := range q.watchers[id] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	return nil
}

func (q *fakeQueue) Watch(id string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	q.mu.Lock()
	q.watchers[id] = append(q.watchers[id], ch)
	q.mu.Unlock()
	return ch, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		q.watchers[id] = slices.DeleteFunc(q.watchers[id], func(c chan struct{}) bool { return c == ch })
	}
}

// waiting is how many tickets wait on the thread.
func (q *fakeQueue) waiting(id string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.front[id]) + len(q.back[id])
}

// fakeGate takes a fakeLock by a fakeQueue's rule, as Redis's script
// does: the queue's head and the lock in one step (under the queue's
// mutex, so that no ticket joins between them). Its leases notify the
// queue's watchers on release when tickets wait.
type fakeGate struct {
	l *fakeLock
	q *fakeQueue
}

func (g *fakeGate) TakeTurn(ctx context.Context, id, owner, ticket string, ttl time.Duration) (ports.Lease, error) {
	g.q.mu.Lock()
	defer g.q.mu.Unlock()
	if g.q.err != nil {
		return nil, g.q.err
	}
	head := ""
	if l := append(g.q.front[id][:len(g.q.front[id]):len(g.q.front[id])], g.q.back[id]...); len(l) > 0 {
		head = l[0]
	}
	if head != ticket {
		return nil, conversation.ErrWaitersAhead
	}
	lease, err := g.l.Acquire(ctx, id, owner, ttl)
	if err != nil {
		return nil, err
	}
	return notifying{Lease: lease, q: g.q, id: id}, nil
}

// notifying is a lease of fakeGate.
type notifying struct {
	ports.Lease
	q  *fakeQueue
	id string
}

func (n notifying) Release(ctx context.Context) error {
	if err := n.Lease.Release(ctx); err != nil {
		return err
	}
	if n.q.waiting(n.id) > 0 {
		return n.q.Notify(ctx, n.id)
	}
	return nil
}
