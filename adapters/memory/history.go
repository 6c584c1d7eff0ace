package memory

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsserver/wsserver/ports"
)

var _ ports.History = (*History)(nil)

// HistoryConfig configures a History.
type HistoryConfig struct {
	// Broker is the in-process broker whose subscribers get the
	// publications. Required.
	Broker *Broker
	// Size is how many broadcasts are kept per session. Required (> 0).
	Size int
	// TTL is how long a session's history is kept after its last
	// broadcast or read. Required (> 0).
	TTL time.Duration
	// Now tells the time; nil means time.Now.
	Now func() time.Time
}

// History keeps the latest broadcasts of each session in a ring, in the
// process. Its epochs are the process's start id and a count of the rings
// made: a ring that expired and is made again starts a new epoch, so an
// offset of the old one is never read against the new one.
type History struct {
	cfg   HistoryConfig
	start string // random, per process
	made  atomic.Uint64

	mu        sync.Mutex
	rings     map[string]*ring
	lastSweep time.Time
}

// ring is one session's numbered broadcasts, the latest Size of them.
type ring struct {
	epoch string
	last  atomic.Int64 // UnixNano of the last broadcast or read

	mu   sync.Mutex // held while a broadcast is numbered, kept and delivered
	top  uint64
	msgs [][]byte // msgs[(top-i) % len] is offset top-i
	n    int      // how many are kept
}

// NewHistory returns an empty history publishing on cfg.Broker.
func NewHistory(cfg HistoryConfig) (*History, error) {
	switch {
	case cfg.Broker == nil:
		return nil, errors.New("memory: history needs a broker")
	case cfg.Size <= 0:
		return nil, errors.New("memory: history size must be positive")
	case cfg.TTL <= 0:
		return nil, errors.New("memory: history ttl must be positive")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var id [6]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails
	return &History{cfg: cfg, start: hex.EncodeToString(id[:]), rings: make(map[string]*ring)}, nil
}

// Publish numbers msg, keeps it and delivers it to the session's
// subscriber. It fails only when ctx is done, before numbering.
func (h *History) Publish(ctx context.Context, session string, msg ports.Numbered) (ports.Published, error) {
	if err := ctx.Err(); err != nil {
		return ports.Published{}, err
	}
	r := h.ring(session)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.top++
	b := msg.Bytes(r.top)
	r.msgs[r.top%uint64(len(r.msgs))] = b
	r.n = min(r.n+1, len(r.msgs))
	// Delivered under the ring's lock, so deliveries follow offsets. The
	// in-process broker fails only on a done context: it has none here.
	_ = h.cfg.Broker.Publish(context.WithoutCancel(ctx), session, b)
	return ports.Published{Position: ports.Position{Offset: r.top, Epoch: r.epoch}}, nil
}

// Recover returns the session's position and what was missed after from.
func (h *History) Recover(ctx context.Context, session string, from *ports.Position) (ports.Recovery, error) {
	if err := ctx.Err(); err != nil {
		return ports.Recovery{}, err
	}
	r := h.ring(session)
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := ports.Recovery{Top: ports.Position{Offset: r.top, Epoch: r.epoch}}
	if from == nil || from.Epoch != r.epoch || from.Offset > r.top || r.top-from.Offset > uint64(r.n) { //nolint:gosec // r.n is the ring's size, positive
		return rec, nil
	}
	rec.Recovered = true
	for o := from.Offset + 1; o <= r.top; o++ {
		rec.Messages = append(rec.Messages, r.msgs[o%uint64(len(r.msgs))])
	}
	return rec, nil
}

// ring returns the session's ring, making it (in a new epoch) when there is
// none or it expired, and renews it: a broadcast or a read keeps it for
// another TTL, so a connection that read a position can count on its
// epoch for that long.
func (h *History) ring(session string) *ring {
	now := h.cfg.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if now.Sub(h.lastSweep) >= h.cfg.TTL {
		h.lastSweep = now
		for s, r := range h.rings {
			if h.expired(r, now) {
				delete(h.rings, s)
			}
		}
	}
	r := h.rings[session]
	if r == nil || h.expired(r, now) {
		r = &ring{
			epoch: h.start + "-" + strconv.FormatUint(h.made.Add(1), 36),
			msgs:  make([][]byte, h.cfg.Size),
		}
		h.rings[session] = r
	}
	r.last.Store(now.UnixNano())
	return r
}

func (h *History) expired(r *ring, now time.Time) bool {
	return now.UnixNano()-r.last.Load() >= int64(h.cfg.TTL)
}

// Sessions reports how many sessions have a history kept.
func (h *History) Sessions() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.rings)
}
