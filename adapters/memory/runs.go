package memory

import (
	"context"
	"fmt"
	"sync"

	"github.com/wsserver/wsserver/ports"
)

var _ ports.RunControl = (*Runs)(nil)

// Runs routes stop requests to the runs of this process: what one
// instance uses when there is no Redis.
type Runs struct {
	mu   sync.Mutex
	next uint64
	runs map[string]map[uint64]func(ports.StopMode) // thread → registration → stop
}

// NewRuns returns an empty in-process run control.
func NewRuns() *Runs {
	return &Runs{runs: make(map[string]map[uint64]func(ports.StopMode))}
}

// Register routes the stops of threadID to stop until unregister.
func (r *Runs) Register(threadID string, stop func(ports.StopMode)) (<-chan struct{}, func()) {
	r.mu.Lock()
	r.next++
	id := r.next
	regs := r.runs[threadID]
	if regs == nil {
		regs = make(map[uint64]func(ports.StopMode))
		r.runs[threadID] = regs
	}
	regs[id] = stop
	r.mu.Unlock()
	var once sync.Once
	return closed, func() {
		once.Do(func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			delete(r.runs[threadID], id)
			if len(r.runs[threadID]) == 0 {
				delete(r.runs, threadID)
			}
		})
	}
}

// Stop calls the stop function of every run registered on threadID, on
// the caller's goroutine.
func (r *Runs) Stop(ctx context.Context, threadID string, mode ports.StopMode) (bool, error) {
	if !mode.Valid() {
		return false, fmt.Errorf("memory: stop %q: %w", mode, ports.ErrInvalidStopMode)
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	r.mu.Lock()
	stops := make([]func(ports.StopMode), 0, len(r.runs[threadID]))
	for _, stop := range r.runs[threadID] {
		stops = append(stops, stop)
	}
	r.mu.Unlock()
	for _, stop := range stops {
		stop(mode)
	}
	return len(stops) > 0, nil
}
