package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

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
// The subscriptions live on one dedicated connection, kept equal to the
// threads registered on this instance by a goroutine that also restores
// them whenever the connection is lost and made again. A stop published
// while the subscription is not (yet, or again) in place is lost and
// reported not delivered: the caller may try again.
type Runs struct {
	cfg    RunsConfig
	prefix string // the channel names' start: cfg.Prefix + "stop:{"
	kick   chan struct{}
	stop   context.CancelFunc
	done   chan struct{}

	mu         sync.Mutex
	next       uint64                // the last registration's id
	wanted     map[string]*runThread // by thread
	subscribed map[string]bool       // SUBSCRIBE sent on the current connection
	confirmed  map[string]bool       // Redis answered that SUBSCRIBE
}

// runThread is one thread's registrations on this instance.
type runThread struct {
	stops  map[uint64]func(ports.StopMode)
	live   chan struct{}
	isLive bool
}

func (r *runThread) markLive() {
	if !r.isLive {
		r.isLive = true
		close(r.live)
	}
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
	ctx, stop := context.WithCancel(context.Background())
	r := &Runs{
		cfg:        cfg,
		prefix:     strings.TrimSuffix(tagged(prefix, kindStop, ""), "}"),
		kick:       make(chan struct{}, 1),
		stop:       stop,
		done:       make(chan struct{}),
		wanted:     make(map[string]*runThread),
		subscribed: make(map[string]bool),
		confirmed:  make(map[string]bool),
	}
	go r.run(ctx)
	return r, nil
}

// Close stops the subscriptions. The client stays open: its owner closes it.
func (r *Runs) Close() {
	r.stop()
	<-r.done
}

func (r *Runs) channel(thread string) string { return tagged(r.cfg.Prefix, kindStop, thread) }

func (r *Runs) thread(channel string) (string, bool) {
	s, ok := strings.CutPrefix(channel, r.prefix)
	if !ok {
		return "", false
	}
	return strings.CutSuffix(s, "}")
}

// Register routes the stop requests of threadID to stop until unregister.
// Requests that arrive after unregister are dropped at once, before the
// UNSUBSCRIBE reaches Redis.
func (r *Runs) Register(threadID string, stop func(ports.StopMode)) (<-chan struct{}, func()) {
	r.mu.Lock()
	r.next++
	id := r.next
	th := r.wanted[threadID]
	if th == nil {
		th = &runThread{stops: make(map[uint64]func(ports.StopMode)), live: make(chan struct{})}
		r.wanted[threadID] = th
	}
	th.stops[id] = stop
	if r.subscribed[threadID] && r.confirmed[threadID] {
		th.markLive()
	}
	live := th.live
	r.mu.Unlock()
	r.poke()
	var once sync.Once
	return live, func() {
		once.Do(func() {
			r.mu.Lock()
			if cur := r.wanted[threadID]; cur != nil {
				delete(cur.stops, id)
				if len(cur.stops) == 0 {
					delete(r.wanted, threadID)
				}
			}
			r.mu.Unlock()
			r.poke()
		})
	}
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

func (r *Runs) poke() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// run holds one dedicated pub/sub connection at a time and keeps its
// subscriptions equal to the registered threads.
func (r *Runs) run(ctx context.Context) {
	defer close(r.done)
	backoff := minBackoff
	for ctx.Err() == nil {
		dc, release := r.cfg.Client.Dedicate()
		lost := dc.SetPubSubHooks(rueidis.PubSubHooks{
			OnMessage:      r.onMessage,
			OnSubscription: r.onSubscription,
		})
		subscribed, err := r.serve(ctx, dc, lost)
		release()
		r.mu.Lock()
		clear(r.subscribed)
		clear(r.confirmed)
		r.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		if subscribed {
			backoff = minBackoff
		}
		r.cfg.OnError("stop_subscribe")
		r.cfg.Log.WarnContext(ctx, "redis stop channel connection lost; resubscribing", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// serve reconciles subscriptions on dc until the connection is lost, and
// reports whether Redis took a SUBSCRIBE there.
func (r *Runs) serve(ctx context.Context, dc rueidis.DedicatedClient, lost <-chan error) (subscribed bool, err error) {
	for {
		n, err := r.reconcile(ctx, dc)
		subscribed = subscribed || n > 0
		if err != nil {
			return subscribed, err
		}
		select {
		case <-ctx.Done():
			return subscribed, ctx.Err()
		case err := <-lost:
			if err == nil {
				err = errors.New("pub/sub hooks ended")
			}
			return subscribed, err
		case <-r.kick:
		}
	}
}

// reconcile subscribes dc to the registered threads it lacks and
// unsubscribes it from the others. It reports how many it subscribed.
func (r *Runs) reconcile(ctx context.Context, dc rueidis.DedicatedClient) (subscribed int, err error) {
	var add, drop []string
	r.mu.Lock()
	for t, th := range r.wanted {
		switch {
		case !r.subscribed[t]:
			r.subscribed[t] = true
			add = append(add, r.channel(t))
		case r.confirmed[t]:
			th.markLive()
		}
	}
	for t := range r.subscribed {
		if r.wanted[t] == nil {
			delete(r.subscribed, t)
			delete(r.confirmed, t)
			drop = append(drop, r.channel(t))
		}
	}
	r.mu.Unlock()

	for len(add) > 0 {
		n := min(len(add), batch)
		if err := dc.Do(ctx, dc.B().Subscribe().Channel(add[:n]...).Build()).Error(); err != nil {
			return subscribed, fmt.Errorf("subscribe: %w", err)
		}
		subscribed += n
		add = add[n:]
	}
	for len(drop) > 0 {
		n := min(len(drop), batch)
		if err := dc.Do(ctx, dc.B().Unsubscribe().Channel(drop[:n]...).Build()).Error(); err != nil {
			return subscribed, fmt.Errorf("unsubscribe: %w", err)
		}
		drop = drop[n:]
	}
	return subscribed, nil
}

func (r *Runs) onSubscription(s rueidis.PubSubSubscription) {
	if s.Kind != "subscribe" {
		return
	}
	t, ok := r.thread(s.Channel)
	if !ok {
		return
	}
	r.mu.Lock()
	if r.subscribed[t] {
		r.confirmed[t] = true
		if th := r.wanted[t]; th != nil {
			th.markLive()
		}
	}
	r.mu.Unlock()
}

func (r *Runs) onMessage(m rueidis.PubSubMessage) {
	t, ok := r.thread(m.Channel)
	mode := ports.StopMode(m.Message)
	if !ok || !mode.Valid() {
		return // not ours, or from a newer instance: nothing to do here
	}
	r.mu.Lock()
	var stops []func(ports.StopMode)
	if th := r.wanted[t]; th != nil {
		stops = make([]func(ports.StopMode), 0, len(th.stops))
		for _, s := range th.stops {
			stops = append(stops, s)
		}
	}
	r.mu.Unlock()
	for _, s := range stops {
		s(mode)
	}
}
