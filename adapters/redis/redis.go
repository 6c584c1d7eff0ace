// Package redis fills the session ports with Redis: pub/sub carries
// broadcasts between instances and hashes hold presence. It uses rueidis,
// whose auto-pipelining lets every socket's publish share a few connections.
// It works on one Redis and on a Redis Cluster alike: every key of a thread
// or a session carries its id as a hash tag (keys.go).
package redis

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/rueidis"
)

// ClusterMode says whether a URL names a Redis Cluster.
type ClusterMode string

const (
	// ClusterAuto asks the server: rueidis sends CLUSTER SLOTS and, when
	// cluster support is enabled, finds every node from the one named.
	ClusterAuto ClusterMode = "auto"
	// ClusterOn requires a cluster: connecting to a single Redis fails.
	ClusterOn ClusterMode = "on"
	// ClusterOff talks to the one server named, as a single Redis.
	ClusterOff ClusterMode = "off"
)

// ClientConfig configures Connect.
type ClientConfig struct {
	// URL is a redis:// or rediss:// URL. Required.
	URL string
	// Cluster says whether URL names a cluster; zero means ClusterAuto.
	Cluster ClusterMode
	// Wait bounds the retries while the server does not answer yet (it may
	// be booting next to this instance); zero tries once.
	Wait time.Duration
}

// Open connects to the Redis at url (redis:// or rediss://), a single one
// or a cluster as the server says, retrying for up to wait.
func Open(ctx context.Context, url string, wait time.Duration) (rueidis.Client, error) {
	return Connect(ctx, ClientConfig{URL: url, Wait: wait})
}

// Connect connects to the Redis or the Redis Cluster of cfg, retrying for
// up to cfg.Wait so that an instance starting next to a Redis that is still
// booting does not fail.
func Connect(ctx context.Context, cfg ClientConfig) (rueidis.Client, error) {
	opt, err := rueidis.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("redis: parse url: %w", err)
	}
	switch cfg.Cluster {
	case "", ClusterAuto, ClusterOn:
	case ClusterOff:
		opt.ForceSingleClient = true
	default:
		return nil, fmt.Errorf("redis: cluster mode %q is none of auto, on, off", cfg.Cluster)
	}
	// Redis 7 without client tracking setup is fine; no client-side cache
	// is used here.
	opt.DisableCache = true
	// A dead peer is noticed within this time, not TCP's minutes.
	opt.ConnWriteTimeout = 3 * time.Second
	opt.Dialer.Timeout = 2 * time.Second

	deadline := time.Now().Add(cfg.Wait)
	backoff := 100 * time.Millisecond
	for {
		c, err := rueidis.NewClient(opt)
		if err == nil {
			if cfg.Cluster == ClusterOn && c.Mode() != rueidis.ClientModeCluster {
				c.Close()
				return nil, errors.New("redis: REDIS_CLUSTER is on but the server is not a Redis Cluster (cluster_enabled:0)")
			}
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
