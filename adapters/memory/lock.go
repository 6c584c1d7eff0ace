package memory

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
)

var _ ports.ThreadLock = (*Lock)(nil)

// Lock is the in-process thread lock: one answer per thread on this
// instance. Leases expire like the Redis one's, so that both behave alike.
type Lock struct {
	mu     sync.Mutex
	leases map[string]*Lease
	fence  int64 // the last fencing token handed out, on any thread
}

// NewLock returns an in-process thread lock.
func NewLock() *Lock {
	return &Lock{leases: make(map[string]*Lease)}
}

// Lease is a held thread lock.
type Lease struct {
	lock    *Lock
	thread  string
	ttl     time.Duration
	fence   int64
	expires time.Time // guarded by lock.mu
}

var _ ports.Lease = (*Lease)(nil)

// Acquire takes the thread's lock for ttl, unless a live lease holds it.
// owner only matters to shared locks, whose holders are hard to see.
func (l *Lock) Acquire(ctx context.Context, threadID, owner string, ttl time.Duration) (ports.Lease, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if ttl <= 0 {
		return nil, errors.New("memory: lock ttl must be positive")
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur := l.leases[threadID]; cur != nil && now.Before(cur.expires) {
		return nil, conversation.ErrThreadBusy
	}
	// One counter for every thread is increasing on each. It starts from
	// the clock, in microseconds, so that tokens keep increasing across
	// restarts: a thread store that outlives the process (PostgreSQL)
	// would otherwise refuse every turn until the counter caught up.
	l.fence = max(l.fence+1, now.UnixMicro())
	lease := &Lease{lock: l, thread: threadID, ttl: ttl, fence: l.fence, expires: now.Add(ttl)}
	l.leases[threadID] = lease
	return lease, nil
}

// Renew extends the lease by its ttl, unless it expired or was released.
func (le *Lease) Renew(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := time.Now()
	le.lock.mu.Lock()
	defer le.lock.mu.Unlock()
	if le.lock.leases[le.thread] != le || !now.Before(le.expires) {
		return conversation.ErrLeaseLost
	}
	le.expires = now.Add(le.ttl)
	return nil
}

// Fence is the lease's fencing token.
func (le *Lease) Fence() int64 { return le.fence }

// Release frees the lock if this lease holds it.
func (le *Lease) Release(ctx context.Context) error {
	le.lock.mu.Lock()
	defer le.lock.mu.Unlock()
	if le.lock.leases[le.thread] == le {
		delete(le.lock.leases, le.thread)
	}
	return nil
}
