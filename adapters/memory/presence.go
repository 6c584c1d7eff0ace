package memory

import (
	"context"
	"sync"

	"github.com/wsserver/wsserver/ports"
)

var _ ports.Presence = (*Presence)(nil)

// Presence keeps the members of each session in the process.
type Presence struct {
	mu       sync.RWMutex
	sessions map[string]map[string]ports.Member
}

// NewPresence returns an empty in-process presence store.
func NewPresence() *Presence {
	return &Presence{sessions: make(map[string]map[string]ports.Member)}
}

// Add records m on session.
func (p *Presence) Add(ctx context.Context, session string, m ports.Member) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.sessions[session]
	if s == nil {
		s = make(map[string]ports.Member)
		p.sessions[session] = s
	}
	s[m.ConnectionID] = m
	return nil
}

// Remove forgets connID on session.
func (p *Presence) Remove(ctx context.Context, session, connID string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if s := p.sessions[session]; s != nil {
		delete(s, connID)
		if len(s) == 0 {
			delete(p.sessions, session)
		}
	}
	return nil
}

// List returns the members of session.
func (p *Presence) List(ctx context.Context, session string) ([]ports.Member, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	s := p.sessions[session]
	out := make([]ports.Member, 0, len(s))
	for _, m := range s {
		out = append(out, m)
	}
	return out, nil
}
