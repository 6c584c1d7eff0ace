package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/redis/rueidis"

	"github.com/wsserver/wsserver/ports"
)

var _ ports.RunControl = (*Runs)(nil)

// RunsConfig configures a Runs.
type RunsConfig struct {
	// Client is the shared Redis client. Required.
	Client rueidis.Client
	// Prefix is put before every channel name; empty means "ws:".
	Prefix string
	// OnError is told the operation of every failed Redis call (metrics).
	// Nil ignores them.
	OnError func(op string)
	Log     *slog.Logger
}

// Runs routes stop requests between instances on Redis pub/sub: one
// channel per thread, <prefix>stop:{<thread>} (the thread id as a hash
// tag, so that it sits in the slot of the thread's other keys), which the
// instance running the thread's answer subscribes to while it runs. Stop
// is one PUBLISH of the mode; Redis answers how many instances received
// it, which is Stop's delivered (on a single Redis; see Stop for a
// cluster).
//
// The subscriptions live on one dedicated connection (subscriber). A stop
// published while the subscription is not (yet, or again) in place is
// lost and reported not delivered: the caller may try again.
type Runs struct {
	cfg  RunsConfig
	subs *subscriber
}

// NewRuns starts a run control on cfg.Client. Close stops it.
func NewRuns(cfg RunsConfig) (*Runs, error) {
	if cfg.Client == nil {
		return nil, errors.New("redis: runs needs a client")
	}
	prefix, err := checkPrefix(cfg.Prefix)
	if err != nil {
		return nil, err
	}
	cfg.Prefix = prefix
	if cfg.OnError == nil {
		cfg.OnError = func(string) {}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Runs{cfg: cfg, subs: newSubscriber(cfg.Client, cfg.OnError, "stop_subscribe", cfg.Log)}, nil
}

// Close stops the subscriptions. The client stays open: its owner closes it.
func (r *Runs) Close() { r.subs.close() }

func (r *Runs) channel(thread string) string { return tagged(r.cfg.Prefix, kindStop, thread) }

// Register routes the stop requests of threadID to stop until unregister.
// Requests that arrive after unregister are dropped at once, before the
// UNSUBSCRIBE reaches Redis.
func (r *Runs) Register(threadID string, stop func(ports.StopMode)) (<-chan struct{}, func()) {
	return r.subs.add(r.channel(threadID), func(msg string) {
		if mode := ports.StopMode(msg); mode.Valid() {
			stop(mode) // other modes: from a newer instance, nothing to do here
		}
	})
}

// Stop publishes mode on the thread's channel. delivered is true when an
// instance was subscribed to it: one that runs the thread, or (for the
// moment its UNSUBSCRIBE takes) one whose run just ended. On a Redis
// Cluster, PUBLISH counts only the subscribers connected to the node that
// ran it, so delivered may be false for a request that did arrive: a
// caller that retries then stops the run twice, which is harmless.
func (r *Runs) Stop(ctx context.Context, threadID string, mode ports.StopMode) (bool, error) {
	if !mode.Valid() {
		return false, fmt.Errorf("redis: stop %q: %w", mode, ports.ErrInvalidStopMode)
	}
	c := r.cfg.Client
	// Pinned to the channel's slot on a Redis Cluster, as the broker's
	// publications are.
	ch := r.channel(threadID)
	n, err := c.Do(ctx, c.B().Publish().Channel(ch).Message(string(mode)).Build().SetSlot(ch)).AsInt64()
	if err != nil {
		r.cfg.OnError("stop_publish")
		return false, fmt.Errorf("redis: stop: %w", err)
	}
	return n > 0, nil
}
