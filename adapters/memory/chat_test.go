package memory_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/memory"
	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/ports/porttest"
)

func TestThreadStoreContract(t *testing.T) {
	porttest.ThreadStore(t, func(t *testing.T) (porttest.CheckpointStore, porttest.CheckpointStore) {
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

func TestThreadsKeepTheNewestRowsPerThread(t *testing.T) {
	ctx := context.Background()
	s := memory.NewThreadsConfig(memory.ThreadsConfig{MaxMessages: 4, MaxCheckpoints: 3})
	const turns = 50
	for i := range turns {
		run := fmt.Sprintf("run-%d", i)
		require.NoError(t, s.SaveTurn(ctx, ports.Turn{
			ThreadID: "t",
			Messages: []ports.Message{
				{ID: fmt.Sprintf("q%d", i), Role: ports.RoleUser, Content: "question"},
				{ID: fmt.Sprintf("a%d", i), Role: ports.RoleAssistant, Content: "answer"},
			},
			Checkpoints: []ports.Checkpoint{
				{RunID: run, Step: 0, Node: "load", State: json.RawMessage(`{}`)},
				{RunID: run, Step: 1, Node: "respond", State: json.RawMessage(`{}`)},
			},
			Escalation: &ports.EscalationRecord{RunID: run, Reason: ports.ReasonRule},
		}))
	}
	require.NoError(t, s.SaveTurn(ctx, ports.Turn{
		ThreadID:    "t",
		Messages:    []ports.Message{{ID: "late", Role: ports.RoleUser, Content: "appended"}},
		Checkpoints: []ports.Checkpoint{{RunID: "late", Node: "load", State: json.RawMessage(`{}`)}},
	}))

	msgs, err := s.History(ctx, "t")
	require.NoError(t, err)
	var ids []string
	for _, m := range msgs {
		ids = append(ids, m.ID)
	}
	assert.Equal(t, []string{"a48", "q49", "a49", "late"}, ids, "the newest messages, in order")
	cps, err := s.Checkpoints(ctx, "t")
	require.NoError(t, err)
	require.Len(t, cps, 3)
	assert.Equal(t, "run-49", cps[0].RunID)
	assert.Equal(t, "late", cps[2].RunID)
	th, err := s.Load(ctx, "t")
	require.NoError(t, err)
	assert.Len(t, th.Escalations, 4)
	assert.Equal(t, fmt.Sprintf("run-%d", turns-1), th.Escalations[3].RunID)
}

func TestThreadsDefaultBounds(t *testing.T) {
	ctx := context.Background()
	s := memory.NewThreads(0)
	for i := range memory.DefaultMaxMessages + 10 {
		require.NoError(t, s.SaveTurn(ctx, ports.Turn{ThreadID: "t", Messages: []ports.Message{{ID: fmt.Sprint(i), Role: ports.RoleUser}},
			Checkpoints: []ports.Checkpoint{{RunID: fmt.Sprint(i), Node: "load", State: json.RawMessage(`{}`)}}}))
	}
	msgs, err := s.History(ctx, "t")
	require.NoError(t, err)
	assert.Len(t, msgs, memory.DefaultMaxMessages)
	cps, err := s.Checkpoints(ctx, "t")
	require.NoError(t, err)
	assert.Len(t, cps, memory.DefaultMaxCheckpoints)
}
