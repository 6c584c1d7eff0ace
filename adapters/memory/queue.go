package memory

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
)

var _ ports.ThreadQueue = (*Queue)(nil)

// Queue is the in-process thread queue: the chats that wait for a busy
// thread on this instance. Tickets expire like the Redis queue's, so that
// both behave alike.
type Queue struct {
	mu      sync.Mutex
	threads map[string]*waiting
}

// waiting is one thread's queue and its watchers. It is forgotten when
// both are empty.
type waiting struct {
	front, back []string             // tickets, the head first
	expires     map[string]time.Time // by ticket
	watchers    map[chan struct{}]struct{}
}

// NewQueue returns an empty in-process thread queue.
func NewQueue() *Queue {
	return &Queue{threads: make(map[string]*waiting)}
}

// thread returns the thread's queue, made when make is set (nil otherwise
// when there is none). q.mu must be held.
func (q *Queue) thread(id string, make bool) *waiting {
	w := q.threads[id]
	if w == nil && make {
		w = &waiting{expires: map[string]time.Time{}, watchers: map[chan struct{}]struct{}{}}
		q.threads[id] = w
	}
	return w
}

// forget drops the thread's queue when nothing is left in it. q.mu must be
// held.
func (q *Queue) forget(id string, w *waiting) {
	if len(w.front) == 0 && len(w.back) == 0 && len(w.watchers) == 0 {
		delete(q.threads, id)
	}
}

// prune drops the tickets whose ttl ran out.
func (w *waiting) prune(now time.Time) {
	gone := func(t string) bool {
		if now.Before(w.expires[t]) {
			return false
		}
		delete(w.expires, t)
		return true
	}
	w.front = slices.DeleteFunc(w.front, gone)
	w.back = slices.DeleteFunc(w.back, gone)
}

// Join adds ticket at the back, or at the end of the front tickets, unless
// limit tickets of its kind wait.
func (q *Queue) Join(ctx context.Context, threadID, ticket string, front bool, limit int, ttl time.Duration) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if ttl <= 0 {
		return 0, errors.New("memory: queue ttl must be positive")
	}
	now := time.Now()
	q.mu.Lock()
	defer q.mu.Unlock()
	w := q.thread(threadID, true)
	w.prune(now)
	list := &w.back
	if front {
		list = &w.front
	}
	if len(*list) >= limit {
		q.forget(threadID, w)
		return 0, conversation.ErrQueueFull
	}
	if _, ok := w.expires[ticket]; ok {
		return 0, errors.New("memory: the ticket is in the queue already")
	}
	*list = append(*list, ticket)
	w.expires[ticket] = now.Add(ttl)
	if front {
		return len(w.front), nil
	}
	return len(w.front) + len(w.back), nil
}

// Keep extends the ticket's ttl, unless it expired.
func (q *Queue) Keep(ctx context.Context, threadID, ticket string, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := time.Now()
	q.mu.Lock()
	defer q.mu.Unlock()
	w := q.thread(threadID, false)
	if w == nil {
		return conversation.ErrTicketLost
	}
	w.prune(now)
	if _, ok := w.expires[ticket]; !ok {
		q.forget(threadID, w)
		return conversation.ErrTicketLost
	}
	w.expires[ticket] = now.Add(ttl)
	return nil
}

// Head returns the first live ticket, the front ones first.
func (q *Queue) Head(ctx context.Context, threadID string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	w := q.thread(threadID, false)
	if w == nil {
		return "", nil
	}
	w.prune(time.Now())
	defer q.forget(threadID, w)
	switch {
	case len(w.front) > 0:
		return w.front[0], nil
	case len(w.back) > 0:
		return w.back[0], nil
	}
	return "", nil
}

// Leave removes the ticket.
func (q *Queue) Leave(_ context.Context, threadID, ticket string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	w := q.thread(threadID, false)
	if w == nil {
		return nil
	}
	is := func(t string) bool { return t == ticket }
	w.front = slices.DeleteFunc(w.front, is)
	w.back = slices.DeleteFunc(w.back, is)
	delete(w.expires, ticket)
	q.forget(threadID, w)
	return nil
}

// Notify wakes the thread's watchers.
func (q *Queue) Notify(ctx context.Context, threadID string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if w := q.thread(threadID, false); w != nil {
		for ch := range w.watchers {
			select {
			case ch <- struct{}{}:
			default: // one is pending already: notifications merge
			}
		}
	}
	return nil
}

// Watch returns a channel that receives after Notify on the thread.
func (q *Queue) Watch(threadID string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	q.mu.Lock()
	q.thread(threadID, true).watchers[ch] = struct{}{}
	q.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			q.mu.Lock()
			defer q.mu.Unlock()
			if w := q.thread(threadID, false); w != nil {
				delete(w.watchers, ch)
				q.forget(threadID, w)
			}
		})
	}
}
