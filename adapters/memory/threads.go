package memory

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
)

var _ ports.ThreadStore = (*Threads)(nil)

// Threads keeps threads in the process: the default thread store, for one
// instance. Everything is lost when the process stops. It keeps at most
// its limit of threads: past it, the thread written longest ago is
// forgotten, so that a server left running on its defaults does not grow
// without end.
type Threads struct {
	mu      sync.RWMutex
	threads map[string]*thread
	max     int
	written *list.List // thread ids, the one written longest ago first
}

type thread struct {
	elem        *list.Element // in written
	meta        ports.Thread
	messages    []ports.Message
	checkpoints []ports.Checkpoint
	escalations []ports.EscalationRecord
}

// DefaultMaxThreads is the limit of NewThreads(0).
const DefaultMaxThreads = 10000

// NewThreads returns an empty in-process thread store that keeps at most
// max threads; zero means DefaultMaxThreads.
func NewThreads(max int) *Threads {
	if max <= 0 {
		max = DefaultMaxThreads
	}
	return &Threads{threads: make(map[string]*thread), max: max, written: list.New()}
}

// touchLocked records that th was just written, adding it when new and
// forgetting the thread written longest ago when over the limit.
func (s *Threads) touchLocked(id string, th *thread) {
	if th.elem != nil {
		s.written.MoveToBack(th.elem)
		return
	}
	s.threads[id] = th
	th.elem = s.written.PushBack(id)
	for len(s.threads) > s.max {
		oldest := s.written.Front()
		s.written.Remove(oldest)
		delete(s.threads, oldest.Value.(string))
	}
}

// Load returns a copy of the thread.
func (s *Threads) Load(ctx context.Context, threadID string) (ports.Thread, error) {
	if err := ctx.Err(); err != nil {
		return ports.Thread{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	th, ok := s.threads[threadID]
	if !ok {
		return ports.Thread{}, conversation.ErrThreadNotFound
	}
	out := th.meta
	out.Messages = slices.Clone(th.messages)
	out.Escalations = slices.Clone(th.escalations)
	return out, nil
}

// Create records an empty thread unless it exists.
func (s *Threads) Create(ctx context.Context, threadID, channel string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.threads[threadID]; !ok {
		s.touchLocked(threadID, &thread{meta: ports.Thread{ID: threadID, Channel: channel, CreatedAt: time.Now()}})
	}
	return nil
}

// Append adds msgs at the end of the thread.
func (s *Threads) Append(ctx context.Context, threadID string, msgs ...ports.Message) error {
	return s.update(ctx, threadID, func(th *thread) { th.messages = append(th.messages, msgs...) })
}

// History returns a copy of the thread's messages.
func (s *Threads) History(ctx context.Context, threadID string) ([]ports.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	th, ok := s.threads[threadID]
	if !ok {
		return nil, conversation.ErrThreadNotFound
	}
	return slices.Clone(th.messages), nil
}

// SaveCheckpoint records cp.
func (s *Threads) SaveCheckpoint(ctx context.Context, threadID string, cp ports.Checkpoint) error {
	cp.State = slices.Clone(cp.State)
	return s.update(ctx, threadID, func(th *thread) { th.checkpoints = append(th.checkpoints, cp) })
}

// Checkpoints returns copies of the thread's checkpoints.
func (s *Threads) Checkpoints(ctx context.Context, threadID string) ([]ports.Checkpoint, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	th, ok := s.threads[threadID]
	if !ok {
		return nil, conversation.ErrThreadNotFound
	}
	out := slices.Clone(th.checkpoints)
	for i := range out {
		out[i].State = slices.Clone(out[i].State)
	}
	return out, nil
}

// RecordEscalation records e.
func (s *Threads) RecordEscalation(ctx context.Context, threadID string, e ports.EscalationRecord) error {
	return s.update(ctx, threadID, func(th *thread) { th.escalations = append(th.escalations, e) })
}

// SaveTurn stores t under the store's lock: all of it, or nothing when it
// is refused.
func (s *Threads) SaveTurn(ctx context.Context, t ports.Turn) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if t.ThreadID == "" {
		return errors.New("memory: save turn: the thread id is empty")
	}
	cps := slices.Clone(t.Checkpoints)
	for i := range cps {
		cps[i].State = slices.Clone(cps[i].State)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	th, ok := s.threads[t.ThreadID]
	if !ok {
		th = &thread{meta: ports.Thread{ID: t.ThreadID, Channel: t.Channel, CreatedAt: time.Now()}}
	}
	// Message ids are unique in a thread, as PostgreSQL's store enforces.
	seen := make(map[string]bool, len(th.messages)+len(t.Messages))
	for _, m := range th.messages {
		seen[m.ID] = true
	}
	for i, m := range t.Messages {
		if m.ID == "" {
			return fmt.Errorf("memory: save turn: message %d: the message id is empty", i)
		}
		if seen[m.ID] {
			return fmt.Errorf("memory: save turn: message %d: the message id %q is already in the thread", i, m.ID)
		}
		seen[m.ID] = true
	}
	s.touchLocked(t.ThreadID, th)
	th.messages = append(th.messages, t.Messages...)
	th.checkpoints = append(th.checkpoints, cps...)
	if t.Escalation != nil {
		th.escalations = append(th.escalations, *t.Escalation)
	}
	return nil
}

func (s *Threads) update(ctx context.Context, threadID string, fn func(*thread)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	th, ok := s.threads[threadID]
	if !ok {
		return conversation.ErrThreadNotFound
	}
	fn(th)
	s.touchLocked(threadID, th)
	return nil
}
