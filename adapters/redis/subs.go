package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

// subscriber keeps one dedicated pub/sub connection subscribed to the
// channels that handlers are added on, restoring them whenever the
// connection is lost and made again, and calls each channel's handlers
// with its messages. Messages sent while a channel's subscription is not
// in place are lost: its users say what that means for them.
type subscriber struct {
	client  rueidis.Client
	onError func(op string)
	op      string // the operation named to onError when the connection is lost
	log     *slog.Logger
	kick    chan struct{}
	stop    context.CancelFunc
	done    chan struct{}

	mu         sync.Mutex
	next       uint64
	wanted     map[string]*channelSub // by channel
	subscribed map[string]bool        // SUBSCRIBE sent on the current connection
	confirmed  map[string]bool        // Redis answered that SUBSCRIBE
}

type channelSub struct {
	handlers map[uint64]func(msg string)
	live     chan struct{}
	isLive   bool
}

func (c *channelSub) markLive() {
	if !c.isLive {
		c.isLive = true
		close(c.live)
	}
}

func newSubscriber(client rueidis.Client, onError func(string), op string, log *slog.Logger) *subscriber {
	s := idleSubscriber(client, onError, op, log)
	s.start()
	return s
}

// idleSubscriber returns a subscriber that subscribes nothing until start.
func idleSubscriber(client rueidis.Client, onError func(string), op string, log *slog.Logger) *subscriber {
	return &subscriber{
		client:     client,
		onError:    onError,
		op:         op,
		log:        log,
		kick:       make(chan struct{}, 1),
		done:       make(chan struct{}),
		wanted:     make(map[string]*channelSub),
		subscribed: make(map[string]bool),
		confirmed:  make(map[string]bool),
	}
}

func (s *subscriber) start() {
	ctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	go s.run(ctx)
}

// channels counts the channels subscribed or wanted.
func (s *subscriber) channels() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.wanted)
}

func (s *subscriber) close() {
	s.stop()
	<-s.done
}

// add calls h with every message of channel until remove. live is closed
// once the channel's subscription is in place. Messages that arrive after
// remove are dropped at once, before the UNSUBSCRIBE reaches Redis.
func (s *subscriber) add(channel string, h func(msg string)) (live <-chan struct{}, remove func()) {
	s.mu.Lock()
	s.next++
	id := s.next
	cs := s.wanted[channel]
	if cs == nil {
		cs = &channelSub{handlers: make(map[uint64]func(string)), live: make(chan struct{})}
		s.wanted[channel] = cs
	}
	cs.handlers[id] = h
	if s.subscribed[channel] && s.confirmed[channel] {
		cs.markLive()
	}
	live = cs.live
	s.mu.Unlock()
	s.poke()
	var once sync.Once
	return live, func() {
		once.Do(func() {
			s.mu.Lock()
			if cur := s.wanted[channel]; cur != nil {
				delete(cur.handlers, id)
				if len(cur.handlers) == 0 {
					delete(s.wanted, channel)
				}
			}
			s.mu.Unlock()
			s.poke()
		})
	}
}

func (s *subscriber) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// run holds one dedicated pub/sub connection at a time and keeps its
// subscriptions equal to the wanted channels.
func (s *subscriber) run(ctx context.Context) {
	defer close(s.done)
	backoff := minBackoff
	for ctx.Err() == nil {
		dc, release := s.client.Dedicate()
		lost := dc.SetPubSubHooks(rueidis.PubSubHooks{
			OnMessage:      s.onMessage,
			OnSubscription: s.onSubscription,
		})
		subscribed, err := s.serve(ctx, dc, lost)
		release()
		s.mu.Lock()
		clear(s.subscribed)
		clear(s.confirmed)
		s.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		if subscribed {
			backoff = minBackoff
		}
		s.onError(s.op)
		s.log.WarnContext(ctx, "redis pub/sub connection lost; resubscribing", "op", s.op, "err", err, "retry_in", backoff)
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
func (s *subscriber) serve(ctx context.Context, dc rueidis.DedicatedClient, lost <-chan error) (subscribed bool, err error) {
	for {
		n, err := s.reconcile(ctx, dc)
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
		case <-s.kick:
		}
	}
}

// reconcile subscribes dc to the wanted channels it lacks and
// unsubscribes it from the others. It reports how many it subscribed.
func (s *subscriber) reconcile(ctx context.Context, dc rueidis.DedicatedClient) (subscribed int, err error) {
	var add, drop []string
	s.mu.Lock()
	for ch, cs := range s.wanted {
		switch {
		case !s.subscribed[ch]:
			s.subscribed[ch] = true
			add = append(add, ch)
		case s.confirmed[ch]:
			cs.markLive()
		}
	}
	for ch := range s.subscribed {
		if s.wanted[ch] == nil {
			delete(s.subscribed, ch)
			delete(s.confirmed, ch)
			drop = append(drop, ch)
		}
	}
	s.mu.Unlock()

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

func (s *subscriber) onSubscription(p rueidis.PubSubSubscription) {
	if p.Kind != "subscribe" {
		return
	}
	s.mu.Lock()
	if s.subscribed[p.Channel] {
		s.confirmed[p.Channel] = true
		if cs := s.wanted[p.Channel]; cs != nil {
			cs.markLive()
		}
	}
	s.mu.Unlock()
}

func (s *subscriber) onMessage(m rueidis.PubSubMessage) {
	s.mu.Lock()
	var hs []func(string)
	if cs := s.wanted[m.Channel]; cs != nil {
		hs = make([]func(string), 0, len(cs.handlers))
		for _, h := range cs.handlers {
			hs = append(hs, h)
		}
	}
	s.mu.Unlock()
	for _, h := range hs {
		h(m.Message)
	}
}
