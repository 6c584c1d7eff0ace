package memory_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/memory"
	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/ports/porttest"
)

func TestThreadStoreContract(t *testing.T) {
	porttest.ThreadStore(t, func(t *testing.T) (ports.ThreadStore, ports.ThreadStore) {
		t.Helper()
		return memory.NewThreads(0), nil
	})
}

func TestThreadLockContract(t *testing.T) {
	porttest.ThreadLock(t, func(t *testing.T) (ports.ThreadLock, ports.ThreadLock) {
		t.Helper()
		return memory.NewLock(), nil
	})
}

func TestThreadsForgetTheOldestPastTheLimit(t *testing.T) {
	ctx := context.Background()
	s := memory.NewThreads(2)
	turn := func(id, msg string) {
		require.NoError(t, s.SaveTurn(ctx, ports.Turn{ThreadID: id, Messages: []ports.Message{{ID: msg, Role: ports.RoleUser, Content: "hi"}}}))
	}
	turn("a", "1")
	turn("b", "2")
	turn("a", "3") // a is now the thread written last
	turn("c", "4") // over the limit: b goes
	_, err := s.Load(ctx, "b")
	require.ErrorIs(t, err, conversation.ErrThreadNotFound)
	for _, id := range []string{"a", "c"} {
		_, err := s.Load(ctx, id)
		require.NoError(t, err, id)
	}
}
