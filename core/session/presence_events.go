package session

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/wsserver/wsserver/core/protocol"
	"github.com/wsserver/wsserver/ports"
)

// Presence events (PROTOCOL.md §4.7) travel between instances on a
// broker channel of their own beside the session's, so that instances
// without listeners on a session, and the broadcasts of every session,
// pay nothing for them. Every instance announces the joins and leaves of
// its connections there; an instance with listeners on the session
// subscribes, keeps a PresenceView fed by it, and flushes the view's
// diffs to its listeners.

// presenceTopic is the broker channel of a session's presence events.
// Session ids have no '/', so it never names a session.
func presenceTopic(session string) string { return session + "/presence" }

// busEvent is a join or a leave as instances tell each other.
type busEvent struct {
	Event      string `json:"e"` // "j" or "l"
	Conn       string `json:"c"`
	UserType   string `json:"u,omitempty"`
	ClientType string `json:"t,omitempty"`
	Key        string `json:"k,omitempty"`
	Abrupt     bool   `json:"a,omitempty"`
}

const (
	busJoin  = "j"
	busLeave = "l"
)

func encodeBusJoin(m ports.Member) []byte {
	b, _ := json.Marshal(busEvent{Event: busJoin, Conn: m.ConnectionID, UserType: m.UserType, ClientType: m.ClientType, Key: m.PresenceKey})
	return b
}

func encodeBusLeave(connID string, abrupt bool) []byte {
	b, _ := json.Marshal(busEvent{Event: busLeave, Conn: connID, Abrupt: abrupt})
	return b
}

// decodeBusEvent reads what another instance published; anything else is
// refused.
func decodeBusEvent(p []byte) (busEvent, bool) {
	var e busEvent
	if json.Unmarshal(p, &e) != nil || e.Conn == "" || (e.Event != busJoin && e.Event != busLeave) {
		return busEvent{}, false
	}
	return e, true
}

// apply feeds e to v at now.
func (e busEvent) apply(v *PresenceView, now time.Time) {
	if e.Event == busJoin {
		v.Join(ports.Member{ConnectionID: e.Conn, UserType: e.UserType, ClientType: e.ClientType, PresenceKey: e.Key})
		return
	}
	v.Leave(e.Conn, e.Abrupt, now)
}

// listening is the presence-event side of one session on this instance:
// its listeners, its view and the timer of its next flush.
type listening struct {
	hub     *Hub
	session string

	mu        sync.Mutex
	listeners []Subscriber
	view      *PresenceView // nil until loaded, and once nobody listens
	loading   chan struct{} // closed when a load ends; nil when none runs
	pending   []busEvent    // events received while loading
	timer     *time.Timer
	due       time.Time // when timer fires; zero when it is not armed
}

// ErrNotMember means Listen was called for a connection that has not joined.
var ErrNotMember = errors.New("session: the connection has not joined the session")

// Listen makes sub, a connection that joined session, a presence-event
// listener: it gets the session's presence_state now, and presence_diff
// batches after (PROTOCOL.md §4.7). When the members cannot be read it
// returns ErrUnavailable's kind of error and sub is no listener.
func (h *Hub) Listen(ctx context.Context, session string, sub Subscriber) error {
	s := h.shard(session)
	s.mu.Lock()
	g := s.groups[session]
	if g == nil || !slices.Contains(*g.subs.Load(), sub) {
		s.mu.Unlock()
		return ErrNotMember
	}
	if g.events == nil {
		g.events = &listening{hub: h, session: session}
	}
	l := g.events
	s.mu.Unlock()

	l.mu.Lock()
	defer l.mu.Unlock()
	for l.view == nil {
		if l.loading != nil {
			wait := l.loading
			l.mu.Unlock()
			select {
			case <-wait:
			case <-ctx.Done():
				l.mu.Lock()
				return ctx.Err()
			}
			l.mu.Lock()
			continue
		}
		if err := l.loadLocked(ctx); err != nil {
			return err
		}
	}
	members, count, countOnly := l.view.State()
	sub.Send(h.cfg.Encode(EncodePresenceState(session, members, count, countOnly)))
	l.listeners = append(l.listeners, sub)
	l.armLocked()
	return nil
}

// loadLocked subscribes to the session's presence events and then reads
// its members, keeping the events that arrive meanwhile to apply after:
// each is applied once whether the list saw it or not (PresenceView's
// joins and leaves are idempotent), so nothing falls between the two.
func (l *listening) loadLocked(ctx context.Context) error {
	h := l.hub
	done := make(chan struct{})
	l.loading = done
	l.pending = nil
	live := h.cfg.Broker.Subscribe(presenceTopic(l.session), l.receive)
	l.mu.Unlock()
	err := h.waitLive(ctx, l.session, live)
	var members []ports.Member
	if err == nil {
		pctx, cancel := context.WithTimeout(ctx, h.cfg.BackendTimeout)
		members, err = h.cfg.Presence.List(pctx, l.session)
		cancel()
		if err != nil {
			h.cfg.Observer.BackendError("presence_list")
			h.warn(ctx, l.session, "presence list failed; no presence events", "err", err)
			err = &protocol.Error{Code: protocol.CodeUnavailable, Message: "presence is unavailable right now; presence events are off for this connection"}
		}
	}
	l.mu.Lock()
	l.loading = nil
	close(done)
	if err != nil {
		l.pending = nil
		if len(l.listeners) == 0 {
			h.cfg.Broker.Unsubscribe(presenceTopic(l.session))
		}
		return err
	}
	now := time.Now()
	l.view = NewPresenceView(h.cfg.PresenceRules, members, now)
	for _, e := range l.pending {
		e.apply(l.view, now)
	}
	l.pending = nil
	return nil
}

// receive takes a presence event from the broker.
func (l *listening) receive(d ports.Delivery) {
	e, ok := decodeBusEvent(d.Payload)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.view != nil:
		e.apply(l.view, time.Now())
		l.armLocked()
	case l.loading != nil:
		l.pending = append(l.pending, e)
	}
}

// armLocked sets the timer to the view's next flush.
func (l *listening) armLocked() {
	if l.view == nil {
		return
	}
	next := l.view.Next()
	if next.IsZero() || (!l.due.IsZero() && !next.Before(l.due)) {
		return
	}
	l.due = next
	wait := time.Until(next)
	if l.timer == nil {
		l.timer = time.AfterFunc(wait, l.fire)
		return
	}
	l.timer.Reset(wait)
}

// fire flushes the view to the listeners.
func (l *listening) fire() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.due = time.Time{}
	if l.view == nil {
		return
	}
	if d, ok := l.view.Flush(time.Now()); ok {
		wire := l.hub.cfg.Encode(EncodePresenceDiff(l.session, d))
		for _, s := range l.listeners {
			s.Send(wire)
		}
	}
	l.armLocked()
}

// unlisten removes sub from the listeners; the last one out stops the
// events of the session on this instance.
func (l *listening) unlisten(sub Subscriber) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := slices.Index(l.listeners, sub)
	if i < 0 {
		return
	}
	l.listeners = slices.Delete(l.listeners, i, i+1)
	if len(l.listeners) > 0 || l.loading != nil {
		return
	}
	l.view = nil
	if l.timer != nil {
		l.timer.Stop()
		l.due = time.Time{}
	}
	l.hub.cfg.Broker.Unsubscribe(presenceTopic(l.session))
}

// announce publishes a join or a leave to every instance's listeners.
// When the broker fails, this instance's listeners still learn it.
func (h *Hub) announce(ctx context.Context, session string, payload []byte) {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.cfg.BackendTimeout)
	defer cancel()
	if err := h.cfg.Broker.Publish(pctx, presenceTopic(session), payload); err != nil {
		h.cfg.Observer.BackendError("publish")
		h.warn(ctx, session, "presence event publish failed; telling local listeners only", "err", err)
		if l := h.listeningOn(session); l != nil {
			l.receive(ports.Delivery{Payload: payload, Sent: time.Now()})
		}
	}
}

func (h *Hub) listeningOn(session string) *listening {
	s := h.shard(session)
	s.mu.Lock()
	defer s.mu.Unlock()
	if g := s.groups[session]; g != nil {
		return g.events
	}
	return nil
}

// Run does the hub's periodic work until ctx ends: every PresenceResync
// it reads the members of each session that has listeners here, to mend
// the views that missed events (pub/sub delivers at most once), and, when
// the presence store finds dead instances (ports.PresenceReaper), it
// announces the leaves of their members: each dead instance's, once, by
// the one instance whose reaper claimed it.
func (h *Hub) Run(ctx context.Context) {
	t := time.NewTicker(h.cfg.PresenceResync)
	defer t.Stop()
	reaper, _ := h.cfg.Presence.(ports.PresenceReaper)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if reaper != nil {
			h.reap(ctx, reaper)
		}
		h.resync(ctx)
	}
}

func (h *Hub) reap(ctx context.Context, reaper ports.PresenceReaper) {
	rctx, cancel := context.WithTimeout(ctx, h.cfg.BackendTimeout)
	lost, err := reaper.Reap(rctx)
	cancel()
	if err != nil {
		h.cfg.Observer.BackendError("presence_reap")
		h.cfg.Log.WarnContext(ctx, "presence reap failed", "err", err)
	}
	for session, members := range lost {
		h.cfg.Log.InfoContext(ctx, "announcing the leaves of a dead instance", "session_id", session, "members", len(members))
		for _, m := range members {
			h.announce(ctx, session, encodeBusLeave(m.ConnectionID, true))
		}
	}
}

// resync mends every listened view with a fresh list of its members.
func (h *Hub) resync(ctx context.Context) {
	var ls []*listening
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.Lock()
		for _, g := range s.groups {
			if g.events != nil {
				ls = append(ls, g.events)
			}
		}
		s.mu.Unlock()
	}
	for _, l := range ls {
		if ctx.Err() != nil {
			return
		}
		l.mu.Lock()
		v := l.view
		if v == nil {
			l.mu.Unlock()
			continue
		}
		mark := v.Mark()
		l.mu.Unlock()
		pctx, cancel := context.WithTimeout(ctx, h.cfg.BackendTimeout)
		members, err := h.cfg.Presence.List(pctx, l.session)
		cancel()
		if err != nil {
			h.cfg.Observer.BackendError("presence_list")
			h.warn(ctx, l.session, "presence resync failed", "err", err)
			continue
		}
		l.mu.Lock()
		if l.view == v { // not dropped and loaded anew meanwhile
			v.Sync(members, mark, time.Now())
			l.armLocked()
		}
		l.mu.Unlock()
	}
}
