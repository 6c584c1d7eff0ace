package redis

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
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
	// Partitions is the number of sharded pub/sub channels (SSUBSCRIBE and
	// SPUBLISH, Redis 7) that carry the sessions' broadcasts; zero means
	// plain pub/sub, a channel per session. Every instance must use the
	// same number: a session's channel is chosen by it. At most
	// MaxPartitions.
	Partitions int
	// CatchUp is how long each partition's log keeps a broadcast for the
	// instances that resubscribe after losing the partition's
	// subscription (its slot moved, or the connection was lost): one away
	// for longer loses the older ones (partlog.go). Sharded pub/sub only;
	// zero means DefaultCatchUp.
	CatchUp time.Duration
	// OnError is told the operation of every failed Redis call (metrics).
	// Nil ignores them.
	OnError func(op string)
	Log     *slog.Logger
}

// MaxPartitions bounds BrokerConfig.Partitions: each is a connection.
const MaxPartitions = 1024

// Broker carries broadcasts between instances on Redis pub/sub.
//
// With plain pub/sub (no partitions): one PUBLISH per broadcast on the
// session's channel, and one SUBSCRIBE per session that this instance has
// sockets on, all on one dedicated connection. With sharded pub/sub, the
// sessions are spread over a fixed number of partitions by a hash of their
// id: one SPUBLISH per broadcast on its session's partition channel, which
// names the session inside the message, and one dedicated connection per
// partition that this instance has sockets on, subscribed (SSUBSCRIBE) to
// that one channel; each connection goes to the cluster node serving its
// channel's slot, so the channels and their traffic spread over the
// masters. Each connection is a link: a goroutine keeps its subscriptions
// at the wanted set, and restores them whenever the connection is lost
// (or, sharded, its slot moved to another node) and made again. Sharded,
// every broadcast is also kept in its partition's log for a while, and a
// link that subscribes again first delivers what it missed (partlog.go).
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
// PUBLISH, is dropped like that of a failed publication. Sharded, that
// holds only until the partition's link first caught up: from then on the
// message comes back from the partition's log if not live, in its place
// among the others.
type Broker struct {
	cfg   BrokerConfig
	links []*link // one, or one per partition
	stop  context.CancelFunc
	done  sync.WaitGroup

	origin uint64 // random, in every message this broker publishes
	seq    atomic.Uint64
	echoes echoes

	catchUpMS, logTTLMS string // the partition logs' window and TTL, in ms

	mu     sync.Mutex
	wanted map[string]*subscription // by session
	parts  []int                    // wanted sessions per partition (sharded)
}

// link is one dedicated pub/sub connection and the channels it carries.
// Its fields other than the channels are guarded by the broker's mu.
type link struct {
	part  int // the partition, or -1 for plain pub/sub
	kick  chan struct{}
	retry chan struct{} // cuts a wait before reconnecting short
	moved chan struct{} // Redis dropped a subscription itself (its slot moved)

	conn       uint64          // counts the pub/sub connections lost
	down       bool            // waiting to make a pub/sub connection again
	subscribed map[string]bool // channel: SUBSCRIBE sent on the current connection
	confirmed  map[string]bool // channel: Redis answered that SUBSCRIBE (sharded: and the link caught up)

	// Sharded. caught: every broadcast published on the partition from
	// now on reaches this instance, live or from the log once subscribed
	// again; it holds from the first catch-up while the partition is
	// wanted or subscribed. lapses counts the times it stopped holding.
	caught bool
	lapses uint64

	// Sharded: the partition's log (partlog.go). logMu is held while a
	// message is delivered, so that the log's and the live messages keep
	// their order.
	logMu    sync.Mutex
	pos      entryID   // the last entry delivered here, or the log's end when subscribed
	placed   bool      // pos holds
	catching bool      // subscribing: the messages that come wait in held
	held     []logged  // came while catching up
	lostAt   time.Time // when the subscription was lost, while placed
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
	if cfg.Partitions < 0 || cfg.Partitions > MaxPartitions {
		return nil, fmt.Errorf("redis: broker partitions must be from 0 to %d, got %d", MaxPartitions, cfg.Partitions)
	}
	if cfg.CatchUp < 0 {
		return nil, fmt.Errorf("redis: broker catch-up window must not be negative, got %v", cfg.CatchUp)
	}
	if cfg.CatchUp == 0 {
		cfg.CatchUp = DefaultCatchUp
	}
	if cfg.OnError == nil {
		cfg.OnError = func(string) {}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	ctx, stop := context.WithCancel(context.Background())
	ms := max((cfg.CatchUp+time.Millisecond-1)/time.Millisecond, 1)
	b := &Broker{
		origin:    rand.Uint64(),
		cfg:       cfg,
		stop:      stop,
		wanted:    make(map[string]*subscription),
		parts:     make([]int, cfg.Partitions),
		catchUpMS: strconv.FormatInt(int64(ms), 10),
		logTTLMS:  strconv.FormatInt(int64(2*ms), 10),
	}
	n := max(cfg.Partitions, 1)
	for i := range n {
		l := &link{
			part:       i,
			kick:       make(chan struct{}, 1),
			retry:      make(chan struct{}, 1),
			moved:      make(chan struct{}, 1),
			subscribed: make(map[string]bool),
			confirmed:  make(map[string]bool),
		}
		if cfg.Partitions == 0 {
			l.part = -1
		}
		b.links = append(b.links, l)
		b.done.Go(func() { b.run(ctx, l) })
	}
	return b, nil
}

// Close stops the subscriptions. The client stays open: its owner closes it.
func (b *Broker) Close() {
	b.stop()
	b.done.Wait()
}

// A message on a session channel is a header and the payload:
//
//	bytes 0-7    publication time, UnixNano, big-endian, with the top bit set
//	bytes 8-15   origin: the publishing broker's random id
//	bytes 16-23  the publication's sequence number at its origin
//
// On a partition channel, the header is followed by the session: its
// length in bytes as a uvarint, then its id, then the payload.
//
// An earlier version sent only the time, top bit clear, then the payload:
// such messages are still read. That version drops messages with the top
// bit set as malformed, so during a rolling upgrade the old instances miss
// the new instances' broadcasts rather than relay the header to browsers.
const (
	headerLen  = 24
	originFlag = 1 << 63
)

// sharded reports whether the broker uses sharded pub/sub.
func (b *Broker) sharded() bool { return b.cfg.Partitions > 0 }

// partition returns the partition of session.
func (b *Broker) partition(session string) int { return partitionOf(session, b.cfg.Partitions) }

// partitionOf returns session's partition of n: FNV-1a of its id, so that
// every instance agrees.
func partitionOf(session string, n int) int {
	h := uint32(2166136261)
	for i := 0; i < len(session); i++ {
		h ^= uint32(session[i])
		h *= 16777619
	}
	return int(h % uint32(n)) //nolint:gosec // n is at most MaxPartitions
}

// ChannelOf names the pub/sub channel that carries session's broadcasts
// with prefix (empty: "ws:") and partitions sharded pub/sub partitions (0:
// plain pub/sub), as a Broker so configured names it: for operators and
// tests that look at Redis.
func ChannelOf(prefix string, partitions int, session string) string {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if partitions <= 0 {
		return sessionChannel(prefix, session)
	}
	return tagged(prefix, kindPubSub, strconv.Itoa(partitionOf(session, partitions)))
}

// route returns the link and the channel that carry session's broadcasts.
func (b *Broker) route(session string) (*link, string) {
	if !b.sharded() {
		return b.links[0], b.channel(session)
	}
	p := b.partition(session)
	return b.links[p], b.partitionChannel(p)
}

// partitionChannel names partition p's channel; its hash tag puts it in one
// slot.
func (b *Broker) partitionChannel(p int) string {
	return tagged(b.cfg.Prefix, kindPubSub, strconv.Itoa(p))
}

// Publish sends payload to every instance subscribed to session. The
// publication time travels with it, so receivers can tell the latency.
// When it fails, the caller delivers payload to this instance's sockets
// itself, and the broker drops the message if Redis hands it back later.
// When it succeeds while this instance's subscription to session is not
// confirmed, it delivers payload to this instance itself, the same way.
func (b *Broker) Publish(ctx context.Context, session string, payload []byte) error {
	c := b.cfg.Client
	p, err := b.publish(ctx, session, len(payload), func(msg []byte, ch string) ([]byte, error) {
		msg = append(msg, payload...)
		if b.sharded() {
			// The script runs on the node serving the channel's slot,
			// where it logs and SPUBLISHes the message.
			return payload, b.spublish(ctx, b.partition(session), ch, msg)
		}
		// On a Redis Cluster a PUBLISH names no key, and rueidis sends it
		// to any node: the node's own subscribers get it at once, the
		// others' after a hop over the cluster bus, so two publications
		// sent through two nodes overtake one another. Pinned to the
		// channel's slot, every publication of a session goes through one
		// node, and each subscriber gets them in the order they were sent
		// (the bus keeps order).
		cmd := c.B().Publish().Channel(ch).Message(rueidis.BinaryString(msg)).Build().SetSlot(ch)
		return payload, c.Do(ctx, cmd).Error()
	})
	if err == nil && p.here {
		// Redis may have had no subscription of this instance to hand it
		// to: deliver it here; its echo is dropped if it comes after all.
		b.mu.Lock()
		sub := b.wanted[session]
		b.mu.Unlock()
		if sub != nil {
			sub.deliver(ports.Delivery{Payload: p.payload, Sent: p.sent})
		}
	}
	return err
}

// published is what publish tells of a publication that succeeded.
type published struct {
	payload []byte
	sent    time.Time
	// here is true when Redis may not have handed the message to this
	// instance's subscription: the caller delivers it here itself. Its
	// echo, should it come after all, is dropped.
	here bool
}

// publish sends one message on the session's channel ch through send,
// which gets the message's head (the header, and the session on a
// partition channel; room for size more bytes), has Redis publish it
// followed by the payload, and returns the payload as published: a
// history's script numbers it on the way. The echo of a publication that
// failed, or that succeeded with here set, is dropped.
func (b *Broker) publish(ctx context.Context, session string, size int, send func(head []byte, ch string) (payload []byte, err error)) (published, error) {
	seq := b.seq.Add(1)
	sent := time.Now()
	l, ch := b.route(session)
	size += headerLen
	if b.sharded() {
		size += binary.MaxVarintLen64 + len(session)
	}
	msg := make([]byte, headerLen, size)
	binary.BigEndian.PutUint64(msg, uint64(sent.UnixNano())|originFlag)
	binary.BigEndian.PutUint64(msg[8:], b.origin)
	binary.BigEndian.PutUint64(msg[16:], seq)
	if b.sharded() {
		msg = binary.AppendUvarint(msg, uint64(len(session)))
		msg = append(msg, session...)
	}

	// Redis hands the message back if this connection's SUBSCRIBE was
	// answered before the PUBLISH runs: counted on when it was answered
	// before the PUBLISH is sent, on a connection still up after it.
	// (A connection that Redis closed and rueidis has not yet seen closed
	// still counts; its messages are lost, at most once, to every socket
	// of this instance alike.) Sharded, the echo comes, live or from the
	// partition's log, when the link had caught up before the SPUBLISH
	// was sent and has held on since.
	b.mu.Lock()
	conn, lapses := l.conn, l.lapses
	listening := b.wanted[session] != nil
	confirmed := l.confirmed[ch]
	caught := l.caught
	b.mu.Unlock()
	b.echoes.publishing(seq)
	payload, err := send(msg, ch)
	b.mu.Lock()
	// With nobody here, there is nothing to deliver here: an echo, if a
	// socket joined meanwhile, is for it.
	echoDue := err == nil && (!listening || confirmed && l.conn == conn)
	if b.sharded() {
		echoDue = err == nil && (!listening || caught && l.lapses == lapses)
	}
	down := l.down
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
			return published{}, nil
		}
		return published{}, fmt.Errorf("redis: publish: %w", err)
	}
	if down {
		// Redis answers again: subscribe again now, not after the wait.
		select {
		case l.retry <- struct{}{}:
		default:
		}
	}
	return published{payload: payload, sent: sent, here: !echoDue && !echoed}, nil
}

// Subscribe routes the session's broadcasts to deliver.
func (b *Broker) Subscribe(session string, deliver func(ports.Delivery)) <-chan struct{} {
	s := &subscription{deliver: deliver, live: make(chan struct{})}
	l, ch := b.route(session)
	b.mu.Lock()
	if b.wanted[session] == nil && b.sharded() {
		b.parts[l.part]++
	}
	b.wanted[session] = s
	if l.subscribed[ch] && l.confirmed[ch] {
		s.markLive()
	}
	b.mu.Unlock()
	poke(l.kick)
	return s.live
}

// Unsubscribe stops the session's broadcasts to this instance.
func (b *Broker) Unsubscribe(session string) {
	l, ch := b.route(session)
	b.mu.Lock()
	if b.wanted[session] != nil && b.sharded() {
		b.parts[l.part]--
		if b.parts[l.part] == 0 && !l.subscribed[ch] {
			// Not subscribed meanwhile: what is published now is not due
			// here, and would not come.
			b.lapse(l)
		}
	}
	delete(b.wanted, session)
	b.mu.Unlock()
	poke(l.kick)
}

// channel names the session's pub/sub channel (plain pub/sub). A name
// "<id>/<more>" (the core's other channels of a session, such as its
// presence events; ids hold no '/') is the channel
// <prefix>session:{<id>}:<more>, in the session's slot.
func (b *Broker) channel(session string) string { return sessionChannel(b.cfg.Prefix, session) }

// sessionChannel names the plain pub/sub channel of session ("<id>" or
// "<id>/<more>") with prefix.
func sessionChannel(prefix, session string) string {
	if id, more, ok := strings.Cut(session, "/"); ok {
		return tagged(prefix, kindSession, id) + ":" + more
	}
	return tagged(prefix, kindSession, session)
}

// sessionOf names the session of one of this broker's channels.
func (b *Broker) sessionOf(channel string) (string, bool) {
	rest, ok := strings.CutPrefix(channel, b.cfg.Prefix+kindSession+":{")
	if !ok {
		return "", false
	}
	if id, ok := strings.CutSuffix(rest, "}"); ok {
		return id, true
	}
	id, more, ok := strings.Cut(rest, "}:")
	if !ok || strings.Contains(id, "/") {
		return "", false
	}
	return id + "/" + more, true
}

// wants reports whether this instance wants channel ch of link l. The
// caller holds mu.
func (b *Broker) wants(l *link, ch string) bool {
	if b.sharded() {
		return b.parts[l.part] > 0
	}
	s, ok := b.sessionOf(ch)
	return ok && b.wanted[s] != nil
}

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
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

// run holds one dedicated pub/sub connection of l at a time and keeps its
// subscriptions equal to the wanted set.
func (b *Broker) run(ctx context.Context, l *link) {
	backoff := minBackoff
	log := b.cfg.Log
	if l.part >= 0 {
		log = log.With("partition", l.part)
	}
	for ctx.Err() == nil {
		dc, release := b.cfg.Client.Dedicate()
		onMessage := func(m rueidis.PubSubMessage) { b.receive(m.Channel, m.Message) }
		if b.sharded() {
			onMessage = func(m rueidis.PubSubMessage) { b.onShardMessage(l, m) }
		}
		lost := dc.SetPubSubHooks(rueidis.PubSubHooks{
			OnMessage:      onMessage,
			OnSubscription: func(s rueidis.PubSubSubscription) { b.onSubscription(l, s) },
		})
		subscribed, err := b.serve(ctx, l, dc, lost)
		release()
		b.mu.Lock()
		l.conn++
		l.down = true
		clear(l.subscribed)
		clear(l.confirmed)
		if b.sharded() && b.parts[l.part] == 0 {
			b.lapse(l)
		}
		b.mu.Unlock()
		if b.sharded() {
			l.logMu.Lock()
			if l.placed && l.lostAt.IsZero() {
				l.lostAt = time.Now()
			}
			l.logMu.Unlock()
		}
		if ctx.Err() != nil {
			return
		}
		if subscribed {
			backoff = minBackoff
		}
		select {
		case <-l.retry: // from before this loss
		default:
		}
		b.cfg.OnError("subscribe")
		log.WarnContext(ctx, "redis pub/sub connection lost; resubscribing", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		case <-l.retry:
		}
		b.mu.Lock()
		l.down = false
		b.mu.Unlock()
		backoff = min(2*backoff, maxBackoff)
	}
}

// serve reconciles l's subscriptions on dc until the connection is lost,
// and reports whether Redis took a SUBSCRIBE there.
func (b *Broker) serve(ctx context.Context, l *link, dc rueidis.DedicatedClient, lost <-chan error) (subscribed bool, err error) {
	select {
	case <-l.moved: // from an earlier connection
	default:
	}
	for {
		n, err := b.reconcile(ctx, l, dc)
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
		case <-l.moved:
			return subscribed, errors.New("redis dropped the subscription: its slot moved to another node")
		case <-l.kick:
		}
	}
}

// batch bounds the channels named in one SUBSCRIBE or UNSUBSCRIBE.
const batch = 256

// reconcile subscribes dc to the wanted channels of l it lacks and
// unsubscribes it from the others. It reports how many channels it
// subscribed.
func (b *Broker) reconcile(ctx context.Context, l *link, dc rueidis.DedicatedClient) (subscribed int, err error) {
	if b.sharded() {
		return b.reconcileShard(ctx, l, dc)
	}
	var add, drop []string
	b.mu.Lock()
	for s, sub := range b.wanted {
		ch := b.channel(s)
		switch {
		case !l.subscribed[ch]:
			l.subscribed[ch] = true
			add = append(add, ch)
		case l.confirmed[ch]:
			sub.markLive()
		}
	}
	for ch := range l.subscribed {
		if !b.wants(l, ch) {
			delete(l.subscribed, ch)
			delete(l.confirmed, ch)
			drop = append(drop, ch)
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

// reconcileShard subscribes dc to l's partition channel when the partition
// is wanted here, and catches up with its log (partlog.go) before the
// subscription counts as confirmed; it unsubscribes when it is not wanted.
// It reports whether it subscribed.
func (b *Broker) reconcileShard(ctx context.Context, l *link, dc rueidis.DedicatedClient) (subscribed int, err error) {
	ch := b.partitionChannel(l.part)
	b.mu.Lock()
	want := b.parts[l.part] > 0
	switch {
	case want && !l.subscribed[ch]:
		l.subscribed[ch] = true
		fresh := !l.caught
		b.mu.Unlock()

		l.logMu.Lock()
		l.catching, l.held = true, nil
		if fresh {
			l.placed = false
		}
		l.logMu.Unlock()
		if err := dc.Do(ctx, dc.B().Ssubscribe().Channel(ch).Build()).Error(); err != nil {
			return 0, fmt.Errorf("subscribe: %w", err)
		}
		if err := b.catchUp(ctx, l, dc, fresh); err != nil {
			return 1, err
		}
		b.mu.Lock()
		if l.subscribed[ch] {
			l.caught = true
			l.confirmed[ch] = true
			b.markLive(l, ch)
		}
		b.mu.Unlock()
		return 1, nil
	case want && l.confirmed[ch]:
		b.markLive(l, ch)
	case !want && l.subscribed[ch]:
		delete(l.subscribed, ch)
		delete(l.confirmed, ch)
		b.lapse(l)
		b.mu.Unlock()
		if err := dc.Do(ctx, dc.B().Sunsubscribe().Channel(ch).Build()).Error(); err != nil {
			return 0, fmt.Errorf("unsubscribe: %w", err)
		}
		return 0, nil
	}
	b.mu.Unlock()
	return 0, nil
}

// lapse notes that the partition of l stopped being wanted while not
// subscribed: what is published on it meanwhile is not due here, so the
// next subscription starts afresh at the log's end. The caller holds mu.
func (b *Broker) lapse(l *link) {
	if l.caught {
		l.caught = false
		l.lapses++
	}
}

// markLive marks live every wanted session that channel ch of l carries.
// The caller holds mu.
func (b *Broker) markLive(l *link, ch string) {
	if !b.sharded() {
		if s, ok := b.sessionOf(ch); ok {
			if sub := b.wanted[s]; sub != nil {
				sub.markLive()
			}
		}
		return
	}
	for s, sub := range b.wanted {
		if !sub.isLive && b.partition(s) == l.part {
			sub.markLive()
		}
	}
}

func (b *Broker) onSubscription(l *link, s rueidis.PubSubSubscription) {
	switch s.Kind {
	case "subscribe": // sharded: confirmed once caught up (reconcileShard)
		b.mu.Lock()
		if l.subscribed[s.Channel] {
			l.confirmed[s.Channel] = true
			b.markLive(l, s.Channel)
		}
		b.mu.Unlock()
	case "sunsubscribe":
		// Redis drops the subscriptions of a shard channel itself when its
		// slot moves to another node (a failover, a resharding): while
		// this link still wants it, subscribe again on a new connection,
		// which goes to the slot's new node.
		b.mu.Lock()
		if l.subscribed[s.Channel] {
			delete(l.confirmed, s.Channel)
			poke(l.moved)
		}
		b.mu.Unlock()
	}
}

// onShardMessage takes a message of l's partition channel: in order with
// the log's, and once.
func (b *Broker) onShardMessage(l *link, m rueidis.PubSubMessage) {
	id, msg, ok, err := splitLogged(m.Message)
	switch {
	case err != nil:
		return // malformed
	case !ok:
		b.receive("", msg) // from the version before the log
		return
	}
	l.logMu.Lock()
	defer l.logMu.Unlock()
	if l.catching {
		l.held = append(l.held, logged{id: id, msg: msg})
		return
	}
	b.take(l, id, msg)
}

// receive delivers body, a message of channel (plain pub/sub) or of a
// partition channel as logged (sharded), to its session's subscriber here.
func (b *Broker) receive(channel, body string) {
	var session string
	if !b.sharded() {
		var ok bool
		if session, ok = b.sessionOf(channel); !ok {
			return
		}
	}
	if len(body) < 8 {
		return
	}
	nanos := binary.BigEndian.Uint64([]byte(body[:8]))
	payload := body[8:]
	if nanos&originFlag != 0 {
		if len(body) < headerLen {
			return // malformed
		}
		nanos &^= originFlag
		origin := binary.BigEndian.Uint64([]byte(body[8:16]))
		seq := binary.BigEndian.Uint64([]byte(body[16:24]))
		payload = body[headerLen:]
		if b.sharded() {
			n, k := binary.Uvarint([]byte(payload[:min(len(payload), binary.MaxVarintLen64)]))
			if k <= 0 || n > uint64(len(payload)-k) { //nolint:gosec // k <= len(payload): Uvarint read at most that much
				return // malformed
			}
			session, payload = payload[k:k+int(n)], payload[k+int(n):] //nolint:gosec // n <= len(payload)-k, checked above
		}
		if origin == b.origin && !b.echoes.echo(seq) {
			return // its publication failed: the caller delivered it here
		}
	} else if b.sharded() {
		return // partition channels carry the header always
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

// ProbeShardedPubSub checks that every node serving one of partitions'
// channels takes SPUBLISH (Redis 7 or later) from the script that logs and
// publishes a broadcast (partlog.go), by running it with an empty message
// on a probe channel and stream in the slot of each partition's channel.
// Nobody subscribes to the probe channels; the probe streams expire.
func ProbeShardedPubSub(ctx context.Context, c rueidis.Client, prefix string, partitions int) error {
	prefix, err := checkPrefix(prefix)
	if err != nil {
		return err
	}
	ms := strconv.FormatInt(DefaultCatchUp.Milliseconds(), 10)
	var calls []rueidis.LuaExec
	for p := range partitions {
		// The probe's channel, and a stream of the same name as the log.
		ch := tagged(prefix, kindPubSubProbe, strconv.Itoa(p))
		calls = append(calls, rueidis.LuaExec{Keys: []string{ch}, Args: []string{ch, "", ms, ms}})
	}
	for p, r := range spublishScript.ExecMulti(ctx, c, calls...) {
		if err := r.Error(); err != nil {
			var re *rueidis.RedisError
			if errors.As(err, &re) {
				return fmt.Errorf("redis: sharded pub/sub (SPUBLISH, Redis 7 or later) refused for partition %d: %w", p, err)
			}
			return fmt.Errorf("redis: probe sharded pub/sub: %w", err)
		}
	}
	return nil
}
