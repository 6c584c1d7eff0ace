package conversation_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
)

// SaveTurn is how the conversation writes a turn. It follows the port's
// contract: all of the turn or nothing, the thread created if need be.
func (s *fakeStore) SaveTurn(ctx context.Context, t ports.Turn) error {
	if t.ThreadID == "" {
		return errors.New("fake store: a turn names its thread")
	}
	s.mu.Lock()
	hang := s.hangSave
	s.mu.Unlock()
	if hang {
		<-ctx.Done()
		return fmt.Errorf("fake store: save turn: %w", ctx.Err())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.turns++
	if s.failTurn != nil {
		return s.failTurn
	}
	if t.Fence != 0 && t.Fence < s.fences[t.ThreadID] {
		return conversation.ErrFenced
	}
	for _, m := range t.Messages {
		if m.Role == ports.RoleAssistant && s.failAppend != nil {
			return s.failAppend
		}
	}
	th, ok := s.threads[t.ThreadID]
	if !ok {
		th = &ports.Thread{ID: t.ThreadID, Channel: t.Channel}
		s.threads[t.ThreadID] = th
	}
	s.fences[t.ThreadID] = max(s.fences[t.ThreadID], t.Fence)
	th.Messages = append(th.Messages, t.Messages...)
	s.checkpoints[t.ThreadID] = append(s.checkpoints[t.ThreadID], t.Checkpoints...)
	if t.Escalation != nil {
		th.Escalations = append(th.Escalations, *t.Escalation)
	}
	return nil
}
