package session

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsserver/wsserver/ports"
)

// JoinSince adds a connection that said hello to the session, as Join
// does, and answers the hello itself (PROTOCOL.md §4.1, §4.8): hello_ok,
// then, when since is given and the history still holds every broadcast
// after it, those broadcasts in order, then the live ones. No broadcast is
// given twice or skipped at the seam.
//
// The seam is closed by subscribing before reading: the connection is
// registered as a joiner, which keeps every delivery from then on without
// sending it; then the history is read up to its top; then, in one step
// for deliveries, the welcome, the history and the kept deliveries whose
// offset is beyond the top are sent. A broadcast delivered before the
// joiner was registered had its offset before the read began, so the read
// has it; one delivered after is kept.
//
// The live stream may lag behind the read, though: with Redis, the read's
// reply and the broadcasts come on different connections, and broadcasts
// the read returned can still be on their way. So the connection stays a
// joiner after its welcome, sent the deliveries beyond the top and not the
// others, until one beyond the top comes (the stream is in offset order)
// or catchUp passed; then it becomes a plain member.
func (h *Hub) JoinSince(ctx context.Context, session string, m ports.Member, sub Subscriber, since *ports.Position) error {
	if h.cfg.History == nil {
		return h.Join(ctx, session, m, sub, EncodeWelcome(session, m.ConnectionID, since != nil, nil))
	}
	if err := h.enter(ctx, session, m); err != nil {
		return err
	}
	s := h.shard(session)
	j := &joiner{}
	s.mu.Lock()
	g := h.groupLocked(s, session)
	g.joining.Lock()
	g.joiners = append(g.joiners, j)
	g.joining.Unlock()
	live := g.live
	s.mu.Unlock()
	// The group enter waited for may have been dropped since (its last
	// member left) and g made anew: what is published before g's
	// subscription is live would reach the history but not the joiner.
	// So the read waits for it; the joiner keeps g from being dropped.
	// A socket gone meanwhile joins anyway, as below.
	_ = h.waitLive(ctx, session, live)

	rctx, cancel := context.WithTimeout(ctx, h.cfg.BackendTimeout)
	rec, err := h.cfg.History.Recover(rctx, session, since)
	cancel()
	known := &rec
	if err != nil {
		// Live without a position: the connection is told it has none.
		h.cfg.Observer.BackendError("history")
		h.warn(ctx, session, "history read failed; joining without it", "err", err)
		known = nil
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	g.joining.Lock()
	defer g.joining.Unlock()
	// A group with a joiner is never dropped (empty), so g is still the
	// session's. Should the socket have gone meanwhile, it joins anyway:
	// its reader sees it closed and leaves, as after any join.
	sub.Send(h.cfg.Encode(EncodeWelcome(session, m.ConnectionID, since != nil, known)))
	if known == nil {
		for _, k := range j.kept {
			sub.Send(k.wire)
		}
		g.joiners = slices.DeleteFunc(g.joiners, func(x *joiner) bool { return x == j })
		g.addLocked(sub)
		return nil
	}
	if known.Recovered {
		for _, msg := range known.Messages {
			sub.Send(h.cfg.Encode(msg))
		}
	}
	j.sub, j.floor, j.until = sub, known.Top, time.Now().Add(catchUp)
	for _, k := range j.kept {
		if !j.behind(k.offset, k.numbered, time.Time{}) {
			sub.Send(k.wire)
		}
	}
	j.kept = nil
	if g.floors == nil {
		g.floors = make(map[Subscriber]ports.Position)
	}
	g.floors[sub] = known.Top
	return nil
}

// catchUp bounds how long a joined connection is spared the broadcasts at
// or below the top it read: longer than the live stream lags behind a read
// (a moment), far shorter than a history's TTL, so the epoch cannot have
// started again meanwhile, since the read renewed it.
const catchUp = 10 * time.Second

// promote makes a joiner that caught up with the live stream a plain
// member, unless it left meanwhile.
func (h *Hub) promote(session string, g *group, j *joiner) {
	s := h.shard(session)
	s.mu.Lock()
	defer s.mu.Unlock()
	g.joining.Lock()
	defer g.joining.Unlock()
	if !slices.Contains(g.joiners, j) {
		return
	}
	g.joiners = slices.DeleteFunc(g.joiners, func(x *joiner) bool { return x == j })
	g.addLocked(j.sub)
}

// leaveJoiner forgets the joiner whose connection is sub and sub's floor.
// The caller holds the shard's lock.
func (g *group) leaveJoiner(sub Subscriber) {
	g.joining.Lock()
	defer g.joining.Unlock()
	g.joiners = slices.DeleteFunc(g.joiners, func(x *joiner) bool { return x.sub == sub })
	delete(g.floors, sub)
}

// deliverHere delivers a numbered broadcast that the history published
// but could not count on the broker to bring back to this instance. It
// comes late: a member that read the history past it has it already.
func (h *Hub) deliverHere(session string, payload []byte, pos ports.Position) {
	s := h.shard(session)
	s.mu.Lock()
	g := s.groups[session]
	s.mu.Unlock()
	if g == nil {
		return
	}
	g.joining.RLock()
	defer g.joining.RUnlock()
	wire := h.cfg.Encode(payload)
	n := 0
	for _, sub := range *g.subs.Load() {
		if f, ok := g.floors[sub]; ok && f.Epoch == pos.Epoch && pos.Offset <= f.Offset {
			continue
		}
		sub.Send(wire)
		n++
	}
	for _, j := range g.joiners {
		h.deliverJoiner(session, g, j, payload, wire)
	}
	h.cfg.Observer.Delivered(0, n+len(g.joiners))
}

// deliverJoiner gives a joiner one delivery: kept while it reads the
// history, sent after its welcome unless the history had it. The caller
// holds g.joining shared.
func (h *Hub) deliverJoiner(session string, g *group, j *joiner, payload, wire []byte) {
	offset, numbered := offsetOf(payload)
	if j.sub == nil {
		j.mu.Lock()
		j.kept = append(j.kept, kept{wire: wire, offset: offset, numbered: numbered})
		j.mu.Unlock()
		return
	}
	now := time.Now()
	if j.behind(offset, numbered, now) {
		return
	}
	j.sub.Send(wire)
	if (numbered || now.After(j.until)) && j.promoted.CompareAndSwap(false, true) {
		go h.promote(session, g, j)
	}
}

// empty reports whether g has neither members nor joiners. The caller
// holds the shard's lock, under which joiners change.
func (g *group) empty() bool { return len(*g.subs.Load()) == 0 && len(g.joiners) == 0 }

// joiner is a connection joining through the history: until its welcome
// it keeps its deliveries; after, it is sent those beyond floor.
type joiner struct {
	mu   sync.Mutex
	kept []kept

	// Set with the welcome, under the group's joining lock.
	sub      Subscriber
	floor    ports.Position
	until    time.Time
	promoted atomic.Bool
}

// behind reports whether a delivery is one the history gave the joiner
// already: numbered at or below the top it read, while catching up (a zero
// now: at its welcome).
func (j *joiner) behind(offset uint64, numbered bool, now time.Time) bool {
	return numbered && offset <= j.floor.Offset && (now.IsZero() || now.Before(j.until))
}

type kept struct {
	wire     []byte
	offset   uint64
	numbered bool
}
