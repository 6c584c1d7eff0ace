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
// instance. Everything is lost when the process stops. It is bounded, so
// that a server left running on its defaults does not grow without end:
// past its limit of threads, the thread written longest ago is forgotten;
// past its limits per thread, a thread's oldest messages, checkpoints and
// escalations are (the conversation shows the model only the last 50
// messages; the history endpoint then shows the last MaxMessages).
//
// It refuses, with conversation.ErrUnstorable, whatever PostgreSQL's store
// refuses (ports.CheckTurn), and fences turns as it does.
type Threads struct {
	mu      sync.RWMutex
	threads map[string]*thread
	cfg     ThreadsConfig
	written *list.List // thread ids, the one written longest ago first
}

type thread struct {
	elem        *list.Element // in written
	meta        ports.Thread
	messages    []ports.Message
	checkpoints []ports.Checkpoint
	escalations []ports.EscalationRecord
	fence       int64 // the highest fence of a saved turn
}

// Defaults of ThreadsConfig.
const (
	DefaultMaxThreads     = 10000
	DefaultMaxMessages    = 1000
	DefaultMaxCheckpoints = 200 // some 30 turns of six or so steps
)

// ThreadsConfig bounds a Threads. Zero fields mean their defaults.
type ThreadsConfig struct {
	// MaxThreads is how many threads are kept (MEMORY_MAX_THREADS).
	MaxThreads int
	// MaxMessages is how many messages are kept per thread, the newest;
	// it also bounds the escalations kept.
	MaxMessages int
	// MaxCheckpoints is how many checkpoints are kept per thread, the
	// newest.
	MaxCheckpoints int
}

// NewThreads returns an empty in-process thread store that keeps at most
// max threads; zero means DefaultMaxThreads. The other bounds are their
// defaults.
func NewThreads(max int) *Threads {
	return NewThreadsConfig(ThreadsConfig{MaxThreads: max})
}

// NewThreadsConfig returns an empty in-process thread store bounded by
// cfg.
func NewThreadsConfig(cfg ThreadsConfig) *Threads {
	if cfg.MaxThreads <= 0 {
		cfg.MaxThreads = DefaultMaxThreads
	}
	if cfg.MaxMessages <= 0 {
		cfg.MaxMessages = DefaultMaxMessages
	}
	if cfg.MaxCheckpoints <= 0 {
		cfg.MaxCheckpoints = DefaultMaxCheckpoints
	}
	return &Threads{threads: make(map[string]*thread), cfg: cfg, written: list.New()}
}

// unstorable wraps why a value cannot be stored.
func unstorable(op string, err error) error {
	return fmt.Errorf("memory: %s: %w: %w", op, conversation.ErrUnstorable, err)
}

// trimLocked drops the thread's oldest rows past the limits.
func (s *Threads) trimLocked(th *thread) {
	th.messages = keepLast(th.messages, s.cfg.MaxMessages)
	th.checkpoints = keepLast(th.checkpoints, s.cfg.MaxCheckpoints)
	th.escalations = keepLast(th.escalations, s.cfg.MaxMessages)
}

// keepLast returns the last n of xs, in a new array when it drops some,
// so that the dropped ones can be collected.
func keepLast[T any](xs []T, n int) []T {
	if len(xs) <= n {
		return xs
	}
	return slices.Clone(xs[len(xs)-n:])
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
	for len(s.threads) > s.cfg.MaxThreads {
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

// Checkpoints returns copies of the thread's checkpoints, in the order
// saved, or conversation.ErrThreadNotFound. It is not part of
// ports.ThreadStore: the conversation never reads checkpoints back; tests
// and diagnostics do.
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

// SaveTurn stores t under the store's lock: all of it, or nothing when it
// is refused (conversation.ErrUnstorable, ErrFenced, a message id already
// in the thread).
func (s *Threads) SaveTurn(ctx context.Context, t ports.Turn) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if t.ThreadID == "" {
		return errors.New("memory: save turn: the thread id is empty")
	}
	if err := ports.CheckTurn(t); err != nil {
		return unstorable("save turn", err)
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
	if t.Fence != 0 && t.Fence < th.fence {
		return fmt.Errorf("memory: save turn: fence %d, the thread's is %d: %w", t.Fence, th.fence, conversation.ErrFenced)
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
	th.fence = max(th.fence, t.Fence)
	th.messages = append(th.messages, t.Messages...)
	th.checkpoints = append(th.checkpoints, cps...)
	if t.Escalation != nil {
		th.escalations = append(th.escalations, *t.Escalation)
	}
	s.trimLocked(th)
	return nil
}
