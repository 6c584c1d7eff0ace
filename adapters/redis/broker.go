package redis

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/wsserver/wsserver/core/logctx"
	"github.com/wsserver/wsserver/ports"
)

var _ ports.Broker = (*Broker)(nil)

// BrokerConfig configures a Broker.
type BrokerConfig struct {
	// Client is the shared Redis client. Required.
	Client rueidis.Client
	// Prefix is put before every channel name; empty means "ws:". It must
	// not contain a brace.
	Prefix string
	// OnError is told the operation of every failed Redis call (metrics).
	// Nil ignores them.
	OnError func(op string)
	Log     *slog.Logger
}

// Broker carries broadcasts between instances on Redis pub/sub: one PUBLISH
// per broadcast, and one SUBSCRIBE per session that this instance has
// sockets on, all on one dedicated connection. A goroutine keeps the
// subscriptions at the wanted set, and restores them whenever the
// connection is lost and made again.
//
// A PUBLISH can reach Redis although its caller gets an error (the reply
// was late and the context ran out), and the caller then delivers the
// message to this instance's sockets itself (ports.Broker). So every
// message carries this broker's origin id and a sequence number, and the
// broker drops the echo of a publication that failed without its echo
// seen; when the echo came first, the publication reached Redis and
// Publish reports success. Every local socket gets the message once.
//
// Redis hands a message back only on a connection whose SUBSCRIBE it has
// answered. While the session's subscription is not confirmed on the
// current connection (it was lost and is being made again, say), a
// PUBLISH that Redis takes reaches the other instances but not this one:
// Publish then delivers the message to this instance's sockets itself,
// and the echo, should the subscription come back before Redis runs the
// PUBLISH, is dropped like that of a failed publication.
type Broker struct {
	cfg   BrokerConfig
	kick  chan struct{}
	retry chan struct{} // cuts a wait before reconnecting short
	stop  context.CancelFunc
	done  chan struct{}

	origin uint64 // random, in every message this broker publishes
	seq    atomic.Uint64
	echoes echoes

	mu         sync.Mutex
	conn       uint64                   // counts the pub/sub connections lost
	down       bool                     // waiting to make a pub/sub connection again
	wanted     map[string]*subscription // by session
	subscribed map[string]bool          // SUBSCRIBE sent on the current connection
	confirmed  map[string]bool          // Redis answered that SUBSCRIBE
}

type subscription struct {
	deliver func(ports.Delivery)
	live    chan struct{}
	isLive  bool
}

func (s *subscription) markLive() {
	if !s.isLive {
		s.isLive = true
		close(s.live)
	}
}

// NewBroker starts a broker on cfg.Client. Close stops it.
func NewBroker(cfg BrokerConfig) (*Broker, error) {
	if cfg.Client == nil {
		return nil, errors.New("redis: broker needs a client")
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
	b := &Broker{
		origin:     rand.Uint64(),
		cfg:        cfg,
		kick:       make(chan struct{}, 1),
		retry:      make(chan struct{}, 1),
		stop:       stop,
		done:       make(chan struct{}),
		wanted:     make(map[string]*subscription),
		subscribed: make(map[string]bool),
		confirmed:  make(map[string]bool),
	}
	go b.run(ctx)
	return b, nil
}

// Close stops the subscriptions. The client stays open: its owner closes it.
func (b *Broker) Close() {
	b.stop()
	<-b.done
}

// A message on a session channel is a header and the payload:
//
//	bytes 0-7    publication time, UnixNano, big-endian, with the top bit set
//	bytes 8-15   origin: the publishing broker's random id
//	bytes 16-23  the publication's sequence number at its origin
//
// An earlier version sent only the time, top bit clear, then the payload:
// such messages are still read. That version drops messages with the top
// bit set as malformed, so during a rolling upgrade the old instances miss
// the new instances' broadcasts rather than relay the header to browsers.
const (
	headerLen  = 24
	originFlag = 1 << 63
)

// Publish sends payload to every instance subscribed to session. The
// publication time travels with it, so receivers can tell the latency.
// When it fails, the caller delivers payload to this instance's sockets
// itself, and the broker drops the message if Redis hands it back later.
// When it succeeds while this instance's subscription to session is not
// confirmed, it delivers payload to this instance itself, the same way.
func (b *Broker) Publish(ctx context.Context, session string, payload []byte) error {
	seq := b.seq.Add(1)
	sent := time.Now()
	msg := make([]byte, headerLen+len(payload))
	binary.BigEndian.PutUint64(msg, uint64(sent.UnixNano())|originFlag)
	binary.BigEndian.PutUint64(msg[8:], b.origin)
	binary.BigEndian.PutUint64(msg[16:], seq)
	copy(msg[headerLen:], payload)

	// Redis hands the message back if this connection's SUBSCRIBE was
	// answered before the PUBLISH runs: counted on when it was answered
	// before the PUBLISH is sent, on a connection still up after it.
	// (A connection that Redis closed and rueidis has not yet seen closed
	// still counts; its messages are lost, at most once, to every socket
	// of this instance alike.)
	b.mu.Lock()
	conn := b.conn
	listening := b.wanted[session] != nil
	confirmed := b.confirmed[session]
	b.mu.Unlock()
	b.echoes.publishing(seq)
	c := b.cfg.Client
	// On a Redis Cluster a PUBLISH names no key, and rueidis sends it to
	// any node: the node's own subscribers get it at once, the others'
	// after a hop over the cluster bus, so two publications sent through
	// two nodes overtake one another. Pinned to the channel's slot, every
	// publication of a session goes through one node, and each subscriber
	// gets them in the order they were sent (the bus keeps order).
	ch := b.channel(session)
	err := c.Do(ctx, c.B().Publish().Channel(ch).Message(rueidis.BinaryString(msg)).Build().SetSlot(ch)).Error()
	b.mu.Lock()
	// With nobody here, there is nothing to deliver here: an echo, if a
	// socket joined meanwhile, is for it.
	echoDue := err == nil && (!listening || confirmed && b.conn == conn)
	down := b.down
	b.mu.Unlock()
	echoed := b.echoes.published(seq, echoDue)
	if err != nil {
		b.cfg.OnError("publish")
		if echoed {
			// Redis handed it back, so it reached every subscribed
			// instance, this one included: only the reply was lost.
			// The session is named once, whether ctx carries it (a
			// session socket's) or not (a thread's chat events).
			b.cfg.Log.WarnContext(logctx.With(ctx, slog.String("session_id", session)), "redis publish reply lost after the message went out", "err", err)
			return nil
		}
		return fmt.Errorf("redis: publish: %w", err)
	}
	if down {
		// Redis answers again: subscribe again now, not after the wait.
		select {
		case b.retry <- struct{}{}:
		default:
		}
	}
	if !echoDue && !echoed {
		// Redis may have had no subscription of this instance to hand it
		// to: deliver it here, and drop its echo if it comes after all.
		b.mu.Lock()
		sub := b.wanted[session]
		b.mu.Unlock()
		if sub != nil {
			sub.deliver(ports.Delivery{Payload: payload, Sent: sent})
		}
	}
	return nil
}

// Subscribe routes the session's broadcasts to deliver.
func (b *Broker) Subscribe(session string, deliver func(ports.Delivery)) <-chan struct{} {
	s := &subscription{deliver: deliver, live: make(chan struct{})}
	b.mu.Lock()
	b.wanted[session] = s
	if b.subscribed[session] && b.confirmed[session] {
		s.markLive()
	}
	b.mu.Unlock()
	b.poke()
	return s.live
}

// Unsubscribe stops the session's broadcasts to this instance.
func (b *Broker) Unsubscribe(session string) {
	b.mu.Lock()
	delete(b.wanted, session)
	b.mu.Unlock()
	b.poke()
}

// channel names the session's pub/sub channel.
func (b *Broker) channel(session string) string {
	return tagged(b.cfg.Prefix, kindSession, session)
}

// sessionOf names the session of one of this broker's channels.
func (b *Broker) sessionOf(channel string) (string, bool) {
	rest, ok := strings.CutPrefix(channel, b.cfg.Prefix+kindSession+":{")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, "}")
}

func (b *Broker) poke() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// The wait before making the pub/sub connection again doubles from
// minBackoff to maxBackoff while attempts fail, and starts over once one
// subscribes. A PUBLISH that succeeds cuts it short.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 2 * time.Second
)

// run holds one dedicated pub/sub connection at a time and keeps its
// subscriptions equal to the wanted set.
func (b *Broker) run(ctx context.Context) {
	defer close(b.done)
	backoff := minBackoff
	for ctx.Err() == nil {
		dc, release := b.cfg.Client.Dedicate()
		lost := dc.SetPubSubHooks(rueidis.PubSubHooks{
			OnMessage:      b.onMessage,
			OnSubscription: b.onSubscription,
		})
		subscribed, err := b.serve(ctx, dc, lost)
		release()
		b.mu.Lock()
		b.conn++
		b.down = true
		clear(b.subscribed)
		clear(b.confirmed)
		b.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		if subscribed {
			backoff = minBackoff
		}
		select {
		case <-b.retry: // from before this loss
		default:
		}
		b.cfg.OnError("subscribe")
		b.cfg.Log.WarnContext(ctx, "redis pub/sub connection lost; resubscribing", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		case <-b.retry:
		}
		b.mu.Lock()
		b.down = false
		b.mu.Unlock()
		backoff = min(2*backoff, maxBackoff)
	}
}

// serve reconciles subscriptions on dc until the connection is lost, and
// reports whether Redis took a SUBSCRIBE there.
func (b *Broker) serve(ctx context.Context, dc rueidis.DedicatedClient, lost <-chan error) (subscribed bool, err error) {
	for {
		n, err := b.reconcile(ctx, dc)
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
		case <-b.kick:
		}
	}
}

// batch bounds the channels named in one SUBSCRIBE or UNSUBSCRIBE.
const batch = 256

// reconcile subscribes dc to the wanted sessions it lacks and unsubscribes
// it from the others. It reports how many sessions it subscribed.
func (b *Broker) reconcile(ctx context.Context, dc rueidis.DedicatedClient) (subscribed int, err error) {
	var add, drop []string
	b.mu.Lock()
	for s, sub := range b.wanted {
		switch {
		case !b.subscribed[s]:
			b.subscribed[s] = true
			add = append(add, b.channel(s))
		case b.confirmed[s]:
			sub.markLive()
		}
	}
	for s := range b.subscribed {
		if b.wanted[s] == nil {
			delete(b.subscribed, s)
			delete(b.confirmed, s)
			drop = append(drop, b.channel(s))
		}
	}
	b.mu.Unlock()

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

func (b *Broker) onSubscription(s rueidis.PubSubSubscription) {
	if s.Kind != "subscribe" {
		return
	}
	session, ok := b.sessionOf(s.Channel)
	if !ok {
		return
	}
	b.mu.Lock()
	if b.subscribed[session] {
		b.confirmed[session] = true
		if sub := b.wanted[session]; sub != nil {
			sub.markLive()
		}
	}
	b.mu.Unlock()
}

func (b *Broker) onMessage(m rueidis.PubSubMessage) {
	session, ok := b.sessionOf(m.Channel)
	if !ok || len(m.Message) < 8 {
		return
	}
	nanos := binary.BigEndian.Uint64([]byte(m.Message[:8]))
	payload := m.Message[8:]
	if nanos&originFlag != 0 {
		if len(m.Message) < headerLen {
			return // malformed
		}
		nanos &^= originFlag
		origin := binary.BigEndian.Uint64([]byte(m.Message[8:16]))
		seq := binary.BigEndian.Uint64([]byte(m.Message[16:24]))
		if origin == b.origin && !b.echoes.echo(seq) {
			return // its publication failed: the caller delivered it here
		}
		payload = m.Message[headerLen:]
	}
	b.mu.Lock()
	sub := b.wanted[session]
	b.mu.Unlock()
	if sub == nil {
		return
	}
	sent := time.Unix(0, int64(nanos)) //nolint:gosec // the top bit is clear by now (the flag was taken off): it fits
	sub.deliver(ports.Delivery{Payload: []byte(payload), Sent: sent})
}

// maxFailed bounds the failed publications remembered while their echo may
// still come. An echo comes within moments of its PUBLISH, if at all; with
// Redis away none comes, and the oldest are forgotten.
const maxFailed = 1024

// echoes tells which of this broker's publications Redis handed back.
type echoes struct {
	mu       sync.Mutex
	inFlight map[uint64]bool     // seq → echo seen, while PUBLISH has not returned
	failed   map[uint64]struct{} // failed without their echo: delivered by the caller
	order    [maxFailed]uint64   // failed, oldest first from next (a ring)
	next     int
}

// publishing notes that publication seq is being sent.
func (e *echoes) publishing(seq uint64) {
	e.mu.Lock()
	if e.inFlight == nil {
		e.inFlight = make(map[uint64]bool)
		e.failed = make(map[uint64]struct{})
	}
	e.inFlight[seq] = false
	e.mu.Unlock()
}

// published notes that PUBLISH of seq returned, and reports whether its
// echo was seen by then. When no echo is due (the PUBLISH failed, or ran
// with no confirmed subscription of this broker) and none was seen, the
// caller delivers it here: it is remembered, so that the echo is dropped
// if it comes.
func (e *echoes) published(seq uint64, echoDue bool) (echoed bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	echoed = e.inFlight[seq]
	delete(e.inFlight, seq)
	if !echoDue && !echoed {
		delete(e.failed, e.order[e.next])
		e.order[e.next] = seq
		e.next = (e.next + 1) % maxFailed
		e.failed[seq] = struct{}{}
	}
	return echoed
}

// echo reports whether the echo of this broker's publication seq is to be
// delivered: not when the publication failed and its caller delivered it.
func (e *echoes) echo(seq uint64) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.inFlight[seq]; ok {
		e.inFlight[seq] = true
		return true
	}
	if _, ok := e.failed[seq]; ok {
		delete(e.failed, seq)
		return false
	}
	return true
}
