package conversation

import (
	"context"
	"sync"
	"time"

	"github.com/wsserver/wsserver/ports"
)

// The backoff between the tries of a thread lock release that failed: the
// first retry comes soon, so that a thread is free again moments after the
// lock's server is back, and the wait doubles up to a bound, so that a long
// outage costs a few calls a second per thread at most.
const (
	releaseRetryFirst = 10 * time.Millisecond
	releaseRetryMax   = 500 * time.Millisecond
)

// releases tracks the retries of thread lock releases that failed.
type releases struct {
	mu      sync.Mutex
	closed  bool
	closing chan struct{} // closed by Close: every retry gives up
	running sync.WaitGroup
}

func newReleases() releases {
	return releases{closing: make(chan struct{})}
}

// retryRelease retries, in the background, the release of lease, whose
// first try failed with err, until it succeeds, the lease has expired by
// itself (at expires: nothing is left to free), or Close is called.
// Retrying is safe: a release frees the lock only while this lease holds
// it, never a newer lease's (ports.Lease).
func (c *Conversation) retryRelease(ctx context.Context, lease ports.Lease, expires time.Time, err error) {
	log := c.cfg.Log
	r := &c.releases
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		log.WarnContext(ctx, "thread lock release failed while shutting down; it expires by itself",
			"expires_in", time.Until(expires).Round(time.Millisecond), "err", err)
		return
	}
	r.running.Add(1)
	r.mu.Unlock()
	log.WarnContext(ctx, "thread lock release failed; retrying in the background until it expires",
		"expires_in", time.Until(expires).Round(time.Millisecond), "err", err)

	go func() {
		defer r.running.Done()
		ctx, cancel := context.WithDeadline(ctx, expires)
		defer cancel()
		// Close cancels the wait and the try under way alike.
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			select {
			case <-r.closing:
				cancel()
			case <-ctx.Done():
			}
		}()
		defer func() { cancel(); <-watched }()

		wait := releaseRetryFirst
		for tries := 2; ; tries++ {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				log.WarnContext(ctx, "thread lock release abandoned; it expires by itself",
					"tries", tries-1, "err", err)
				return
			case <-t.C:
			}
			wctx, cancelTry := context.WithTimeout(ctx, c.cfg.WriteTimeout)
			err = lease.Release(wctx)
			cancelTry()
			if err == nil {
				log.InfoContext(ctx, "thread lock released after retries", "tries", tries)
				return
			}
			wait = min(2*wait, releaseRetryMax)
		}
	}()
}

// Close stops the retries of thread lock releases that failed (their
// leases expire by themselves) and waits for them to end. Runs may still
// be answered after Close, but a release of theirs that fails is not
// retried. Close is idempotent; call it before closing the lock's client.
func (c *Conversation) Close() {
	r := &c.releases
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.closing)
	}
	r.mu.Unlock()
	r.running.Wait()
	c.logs.Wait() // the answer logs' last appends, bounded by their tries
}
