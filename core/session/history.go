package session

import (
	"context"
	"slices"
	"sync"

	"github.com/wsserver/wsserver/ports"
)

// JoinSince adds a connection that said hello to the session, as Join
// does, and answers the hello itself (PROTOCOL.md §4.1, §4.7): hello_ok,
// then, when since is given and the history still holds every broadcast
// after it, those broadcasts in order, then the live ones. No broadcast is
// given twice or skipped at the seam.
//
// The seam is closed by subscribing before reading: the connection is
// registered as a joiner, which keeps every delivery from then on without
// sending it; then the history is read up to its top; then, in one step
// for deliveries, the welcome, the history and the kept deliveries whose
// offset is beyond the top are sent and the joiner becomes a member. A
// broadcast delivered before the joiner was registered had its offset
// before the read began, so the read has it; one delivered after is kept.
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
	s.mu.Unlock()

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
	g.joiners = slices.DeleteFunc(g.joiners, func(x *joiner) bool { return x == j })
	// A group with a joiner is never dropped (empty), so g is still the
	// session's. Should the socket have gone meanwhile, it joins anyway:
	// its reader sees it closed and leaves, as after any join.
	sub.Send(h.cfg.Encode(EncodeWelcome(session, m.ConnectionID, since != nil, known)))
	if known != nil && known.Recovered {
		for _, msg := range known.Messages {
			sub.Send(h.cfg.Encode(msg))
		}
	}
	for _, k := range j.kept {
		if known != nil && k.numbered && k.offset <= known.Top.Offset {
			continue // the history had it
		}
		sub.Send(k.wire)
	}
	g.addLocked(sub)
	return nil
}

// empty reports whether g has neither members nor joiners. The caller
// holds the shard's lock, under which joiners change.
func (g *group) empty() bool { return len(*g.subs.Load()) == 0 && len(g.joiners) == 0 }

// joiner keeps the deliveries to a connection that is reading the history.
type joiner struct {
	mu   sync.Mutex
	kept []kept
}

type kept struct {
	wire     []byte
	offset   uint64
	numbered bool
}

// keep records one delivery. Deliveries may come from several goroutines.
func (j *joiner) keep(payload, wire []byte) {
	offset, numbered := offsetOf(payload)
	j.mu.Lock()
	j.kept = append(j.kept, kept{wire: wire, offset: offset, numbered: numbered})
	j.mu.Unlock()
}
