// Package redis fills the session ports with Redis: pub/sub carries
// broadcasts between instances and hashes hold presence. It uses rueidis,
// whose auto-pipelining lets every socket's publish share a few connections.
package redis

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/rueidis"
)

// Open connects to the Redis at url (redis:// or rediss://), retrying for
// up to wait so that an instance starting next to a Redis that is still
// booting does not fail.
func Open(ctx context.Context, url string, wait time.Duration) (rueidis.Client, error) {
	opt, err := rueidis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis: parse url: %w", err)
	}
	// Redis 7 without client tracking setup is fine; no client-side cache
	// is used here.
	opt.DisableCache = true
	// A dead peer is noticed within this time, not TCP's minutes.
	opt.ConnWriteTimeout = 3 * time.Second
	opt.Dialer.Timeout = 2 * time.Second

	deadline := time.Now().Add(wait)
	backoff := 100 * time.Millisecond
	for {
		c, err := rueidis.NewClient(opt)
		if err == nil {
			return c, nil
		}
		if time.Now().Add(backoff).After(deadline) {
			return nil, fmt.Errorf("redis: connect: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, errors.Join(fmt.Errorf("redis: connect: %w", err), ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}
