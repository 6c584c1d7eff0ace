package session

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsserver/wsserver/core/logctx"
	"github.com/wsserver/wsserver/core/protocol"
	"github.com/wsserver/wsserver/ports"
)

// Subscriber is one local connection on a session: a socket, to the hub.
type Subscriber interface {
	// Send queues wire bytes for the connection without blocking. A
	// connection that cannot keep up drops itself; the hub does not wait.
	Send(wire []byte)
}

// Observer is told about deliveries, for metrics. Its methods must be cheap.
type Observer interface {
	// Delivered reports a broadcast fanned out to n local connections,
	// latency after it was published.
	Delivered(latency time.Duration, n int)
	// BackendError reports a failed call to the broker or presence store.
	BackendError(op string)
}

// HubConfig configures a Hub.
type HubConfig struct {
	Broker   ports.Broker
	Presence ports.Presence
	// History numbers and keeps the session's broadcasts, sharing Broker's
	// subscriptions (PROTOCOL.md §4.8). Nil keeps no history: broadcasts
	// carry no offset and a hello's since is never recovered.
	History ports.History
	// Encode turns a message into the bytes written to a socket. It is
	// called once per delivery and the result shared by every local
	// subscriber. Nil keeps messages as they are.
	Encode func(payload []byte) []byte
	// Observer receives delivery figures. Nil discards them.
	Observer Observer
	// LiveWait bounds how long a join waits for the broker to confirm a new
	// subscription before answering anyway (the backend may be away).
	// Zero means 2 seconds.
	LiveWait time.Duration
	// BackendTimeout bounds each presence call. Zero means 2 seconds.
	BackendTimeout time.Duration
	// PresenceRules rule the presence events (PROTOCOL.md §4.8); zero
	// values take their defaults.
	PresenceRules PresenceRules
	// PresenceResync is how often Run reads the members of the sessions
	// that have presence-event listeners here, to mend what the events
	// missed. Zero means 10 seconds.
	PresenceResync time.Duration
	// Log is nil for no logs. Its lines name the session through the
	// context (logctx): its handler should be a logctx.Handler.
	Log *slog.Logger
}

// Hub applies the session rules on one instance: it keeps the local
// subscribers of each session, subscribes the instance to a session's
// broadcasts while it has subscribers there, records presence, and fans
// every delivery out to the local subscribers with one encoding.
type Hub struct {
	cfg    HubConfig
	seed   maphash.Seed
	shards [64]shard
}

type shard struct {
	mu     sync.Mutex
	groups map[string]*group
}

// group is the local subscribers of one session. The subscriber list is
// copied on write so that deliveries read it without a lock.
type group struct {
	id   string
	subs atomic.Pointer[[]Subscriber]
	live <-chan struct{}
	// joining makes a join's welcome and its membership one step for
	// deliveries: a delivery holds it shared, Join exclusively. Without
	// it the welcome (hello_ok) could reach the client before the socket
	// is a member, and what is published in between would be lost to a
	// client that has already been told it is in. It also guards
	// joiners.
	joining sync.RWMutex
	// events is the session's presence-event listening here, once a
	// connection asked for it; guarded by the shard's lock.
	events *listening
	// joiners are the connections catching up on the history: they are
	// sent nothing yet, and keep what is delivered meanwhile (history.go).
	joiners []*joiner
	// floors are the history positions that members which joined through
	// it read up to: a message the instance delivers itself may be older
	// than that (history.go). Guarded like joiners.
	floors map[Subscriber]ports.Position
}

type noObserver struct{}

func (noObserver) Delivered(time.Duration, int) {}
func (noObserver) BackendError(string)          {}

// NewHub returns a Hub using the given broker and presence store.
func NewHub(cfg HubConfig) (*Hub, error) {
	if cfg.Broker == nil || cfg.Presence == nil {
		return nil, errors.New("session: hub needs a broker and a presence store")
	}
	if cfg.Encode == nil {
		cfg.Encode = func(p []byte) []byte { return p }
	}
	if cfg.Observer == nil {
		cfg.Observer = noObserver{}
	}
	if cfg.LiveWait <= 0 {
		cfg.LiveWait = 2 * time.Second
	}
	if cfg.BackendTimeout <= 0 {
		cfg.BackendTimeout = 2 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.PresenceResync <= 0 {
		cfg.PresenceResync = 10 * time.Second
	}
	h := &Hub{cfg: cfg, seed: maphash.MakeSeed()}
	for i := range h.shards {
		h.shards[i].groups = make(map[string]*group)
	}
	return h, nil
}

func (h *Hub) shard(session string) *shard {
	return &h.shards[maphash.String(h.seed, session)%uint64(len(h.shards))]
}

// Join adds a connection that said hello to the session. Once the
// instance's subscription is live (or LiveWait passed because the broker's
// backend is away) and the connection is recorded in presence, welcome is
// sent to sub, and then every broadcast from that moment on: welcome is
// always the first thing the connection gets.
func (h *Hub) Join(ctx context.Context, session string, m ports.Member, sub Subscriber, welcome []byte) error {
	if err := h.enter(ctx, session, m); err != nil {
		return err
	}
	s := h.shard(session)
	s.mu.Lock()
	defer s.mu.Unlock()
	g := h.groupLocked(s, session)
	g.joining.Lock()
	defer g.joining.Unlock()
	sub.Send(h.cfg.Encode(welcome))
	g.addLocked(sub)
	return nil
}

// enter waits until the instance's subscription to session is live (or
// LiveWait passed) and records m in presence: what comes before a
// connection is welcomed.
func (h *Hub) enter(ctx context.Context, session string, m ports.Member) error {
	s := h.shard(session)
	var g *group
	for {
		s.mu.Lock()
		g = h.groupLocked(s, session)
		live := g.live
		s.mu.Unlock()
		if err := h.waitLive(ctx, session, live); err != nil {
			h.dropIfEmpty(s, g)
			return err
		}
		s.mu.Lock()
		same := s.groups[session] == g
		s.mu.Unlock()
		if same {
			break
		}
		// The group was emptied and dropped while we waited: join anew.
	}

	pctx, cancel := context.WithTimeout(ctx, h.cfg.BackendTimeout)
	defer cancel()
	if err := h.cfg.Presence.Add(pctx, session, m); err != nil {
		// The presence store re-announces local members when it returns.
		h.cfg.Observer.BackendError("presence_add")
		h.warn(ctx, session, "presence add failed", "err", err)
	}
	h.announce(ctx, session, encodeBusJoin(m))
	return nil
}

// addLocked makes sub a member of g. The caller holds g.joining.
func (g *group) addLocked(sub Subscriber) {
	old := *g.subs.Load()
	subs := make([]Subscriber, len(old), len(old)+1)
	copy(subs, old)
	subs = append(subs, sub)
	g.subs.Store(&subs)
}

// groupLocked returns the session's group, creating and subscribing it.
func (h *Hub) groupLocked(s *shard, session string) *group {
	g := s.groups[session]
	if g == nil {
		g = &group{id: session}
		g.subs.Store(&[]Subscriber{})
		s.groups[session] = g
		g.live = h.cfg.Broker.Subscribe(session, func(d ports.Delivery) { h.deliver(g, d) })
	}
	return g
}

// dropIfEmpty forgets g if nobody joined it.
func (h *Hub) dropIfEmpty(s *shard, g *group) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.groups[g.id] == g && g.empty() {
		delete(s.groups, g.id)
		h.cfg.Broker.Unsubscribe(g.id)
	}
}

func (h *Hub) waitLive(ctx context.Context, session string, live <-chan struct{}) error {
	select {
	case <-live:
		return nil
	default:
	}
	t := time.NewTimer(h.cfg.LiveWait)
	defer t.Stop()
	select {
	case <-live:
	case <-t.C:
		h.cfg.Observer.BackendError("subscribe")
		h.warn(ctx, session, "subscription not live yet; serving locally")
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// Leave removes a connection that closed cleanly from the session: it is
// gone from presence at once and, when it was the last one here, the
// instance unsubscribes. Presence-event listeners are told at once.
func (h *Hub) Leave(ctx context.Context, session string, connID string, sub Subscriber) {
	h.leave(ctx, session, connID, sub, false)
}

// Drop is Leave for a connection that ended without a clean close: it is
// gone from presence at once as well, but presence-event listeners hear
// of it only if its member does not come back within the grace.
func (h *Hub) Drop(ctx context.Context, session string, connID string, sub Subscriber) {
	h.leave(ctx, session, connID, sub, true)
}

func (h *Hub) leave(ctx context.Context, session string, connID string, sub Subscriber, abrupt bool) {
	if l := h.listeningOn(session); l != nil {
		l.unlisten(sub)
	}
	s := h.shard(session)
	s.mu.Lock()
	if g := s.groups[session]; g != nil {
		old := *g.subs.Load()
		subs := make([]Subscriber, 0, len(old))
		for _, x := range old {
			if x != sub {
				subs = append(subs, x)
			}
		}
		g.subs.Store(&subs)
		if g.floors != nil {
			g.leaveJoiner(sub)
		}
		if g.empty() {
			delete(s.groups, session)
			h.cfg.Broker.Unsubscribe(session)
		}
	}
	s.mu.Unlock()

	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.cfg.BackendTimeout)
	defer cancel()
	if err := h.cfg.Presence.Remove(pctx, session, connID); err != nil {
		h.cfg.Observer.BackendError("presence_remove")
		h.warn(ctx, session, "presence remove failed", "err", err)
	}
	h.announce(ctx, session, encodeBusLeave(connID, abrupt))
}

// Broadcast sends msg and data from member to every connection on the
// session, on every instance, the sender's included. When the broker is
// away the message still reaches this instance's connections, and
// ErrUnavailable says that the others were not reached.
//
// With a history, the message gets the session's next offset and is kept
// (PROTOCOL.md §4.8); one delivered locally because the history failed has
// none.
func (h *Hub) Broadcast(ctx context.Context, session string, from ports.Member, msg, data []byte) error {
	if h.cfg.History == nil {
		return h.Publish(ctx, session, EncodeSessionMessage(from, msg, data))
	}
	numbered := NumberSessionMessage(from, msg, data)
	pub, err := h.cfg.History.Publish(ctx, session, numbered)
	if err != nil {
		return h.deliverLocally(ctx, session, EncodeSessionMessage(from, msg, data), err)
	}
	if pub.DeliverHere {
		h.deliverHere(session, numbered.Bytes(pub.Offset), pub.Position)
	}
	return nil
}

// Publish sends an encoded message, as it is, to every connection on the
// session on every instance: what the server itself says on a session
// (the chat events of a thread, say). It fails like Broadcast. When the
// broker fails, the hub delivers locally; the broker drops the message if
// it reached the backend after all (ports.Broker), so every local
// connection gets it once.
func (h *Hub) Publish(ctx context.Context, session string, payload []byte) error {
	if err := h.cfg.Broker.Publish(ctx, session, payload); err != nil {
		return h.deliverLocally(ctx, session, payload, err)
	}
	return nil
}

// deliverLocally delivers a publication that failed with err to this
// instance's connections, and returns ErrUnavailable.
func (h *Hub) deliverLocally(ctx context.Context, session string, payload []byte, err error) error {
	h.cfg.Observer.BackendError("publish")
	h.warn(ctx, session, "publish failed; delivering locally", "err", err)
	s := h.shard(session)
	s.mu.Lock()
	g := s.groups[session]
	s.mu.Unlock()
	if g != nil {
		h.deliver(g, ports.Delivery{Payload: payload, Sent: time.Now()})
	}
	return ErrUnavailable
}

// Presence returns every connection on the session across instances.
func (h *Hub) Presence(ctx context.Context, session string) ([]ports.Member, error) {
	pctx, cancel := context.WithTimeout(ctx, h.cfg.BackendTimeout)
	defer cancel()
	members, err := h.cfg.Presence.List(pctx, session)
	if err != nil {
		h.cfg.Observer.BackendError("presence_list")
		h.warn(ctx, session, "presence list failed", "err", err)
		return nil, &protocol.Error{Code: protocol.CodeUnavailable, Message: "presence is unavailable right now; try again"}
	}
	return members, nil
}

// LocalSessions reports how many sessions have connections on this instance.
func (h *Hub) LocalSessions() int {
	n := 0
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.Lock()
		n += len(s.groups)
		s.mu.Unlock()
	}
	return n
}

func (h *Hub) deliver(g *group, d ports.Delivery) {
	g.joining.RLock()
	defer g.joining.RUnlock()
	subs := *g.subs.Load()
	if len(subs) == 0 && len(g.joiners) == 0 {
		return
	}
	wire := h.cfg.Encode(d.Payload)
	for _, s := range subs {
		s.Send(wire)
	}
	for _, j := range g.joiners {
		h.deliverJoiner(g.id, g, j, d.Payload, wire)
	}
	h.cfg.Observer.Delivered(time.Since(d.Sent), len(subs)+len(g.joiners))
}

// warn logs a failure on session at WARN. The line names the session
// once, whether ctx carries it already (a session socket's) or not (a
// thread's chat events, published here).
func (h *Hub) warn(ctx context.Context, session, msg string, args ...any) {
	h.cfg.Log.WarnContext(logctx.With(ctx, slog.String("session_id", session)), msg, args...)
}
