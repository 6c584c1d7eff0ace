package porttest

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
)

// threadStoreRefusals holds every store to what PostgreSQL refuses, and to
// fencing: a value one store refuses, every store refuses, with
// ErrUnstorable, and stores nothing of it.
func threadStoreRefusals(t *testing.T, newStores Instances[CheckpointStore]) {
	t.Helper()
	ctx := context.Background()
	user := func(id, content string) ports.Message {
		return ports.Message{ID: id, Role: ports.RoleUser, Content: content, CreatedAt: stamp(0)}
	}
	state := func(s string) ports.Checkpoint {
		return ports.Checkpoint{RunID: "run-1", Step: 0, Node: "load", State: json.RawMessage(s), CreatedAt: stamp(0)}
	}
	turn := func(id string, mod func(*ports.Turn)) ports.Turn {
		tr := ports.Turn{
			ThreadID:    id,
			Channel:     "web",
			Messages:    []ports.Message{user("m1", "hi")},
			Checkpoints: []ports.Checkpoint{state(`{"node":"load"}`)},
		}
		mod(&tr)
		return tr
	}
	long := strings.Repeat("é", ports.MaxStoredKey+1)

	t.Run("refuses what cannot be stored", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			mod  func(*ports.Turn)
		}{
			{"a lone high surrogate escape in a state", func(tr *ports.Turn) { tr.Checkpoints[0] = state(`{"data":"\ud800"}`) }},
			{"a lone low surrogate escape in a state", func(tr *ports.Turn) { tr.Checkpoints[0] = state(`{"data":["x\udc00y"]}`) }},
			{"a high surrogate escape before another escape", func(tr *ports.Turn) { tr.Checkpoints[0] = state(`{"data":"\uD800\u0041"}`) }},
			{"two high surrogate escapes", func(tr *ports.Turn) { tr.Checkpoints[0] = state(`{"data":"\ud800\ud800"}`) }},
			{"a surrogate escape at the end of a key", func(tr *ports.Turn) { tr.Checkpoints[0] = state(`{"k\ud83d":1}`) }},
			{"the escape \\u0000 in a state", func(tr *ports.Turn) { tr.Checkpoints[0] = state(`{"data":"a\u0000b"}`) }},
			{"invalid UTF-8 in a state", func(tr *ports.Turn) { tr.Checkpoints[0] = state("{\"data\":\"a\xffb\"}") }},
			{"a state that is not JSON", func(tr *ports.Turn) { tr.Checkpoints[0] = state(`{"data":`) }},
			{"a number beyond numeric's range", func(tr *ports.Turn) { tr.Checkpoints[0] = state(`{"data":1e200000}`) }},
			{"a NUL in a message", func(tr *ports.Turn) { tr.Messages[0].Content = "a\x00b" }},
			{"invalid UTF-8 in a message", func(tr *ports.Turn) { tr.Messages[0].Content = "a\xffb" }},
			{"a message id too long", func(tr *ports.Turn) { tr.Messages[0].ID = long }},
			{"invalid UTF-8 in the channel", func(tr *ports.Turn) { tr.Channel = "w\xffb" }},
			{"a NUL in an escalation's detail", func(tr *ports.Turn) {
				tr.Escalation = &ports.EscalationRecord{RunID: "run-1", Reason: ports.ReasonRule, Detail: "a\x00", CreatedAt: stamp(0)}
			}},
			{"an escalation reason too long", func(tr *ports.Turn) {
				tr.Escalation = &ports.EscalationRecord{RunID: "run-1", Reason: ports.EscalationReason(strings.Repeat("r", ports.MaxStoredReason+1)), CreatedAt: stamp(0)}
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s, _ := newStores(t)
				old, fresh := session(t), session(t)
				require.NoError(t, s.SaveTurn(ctx, ports.Turn{ThreadID: old, Channel: "web", Messages: []ports.Message{user("m0", "before")}}))
				for _, id := range []string{old, fresh} {
					err := s.SaveTurn(ctx, turn(id, tc.mod))
					require.ErrorIs(t, err, conversation.ErrUnstorable)
				}
				msgs, err := s.History(ctx, old)
				require.NoError(t, err)
				sameMessages(t, []ports.Message{user("m0", "before")}, msgs)
				cps, err := s.Checkpoints(ctx, old)
				require.NoError(t, err)
				assert.Empty(t, cps)
				_, err = s.Load(ctx, fresh)
				require.ErrorIs(t, err, conversation.ErrThreadNotFound, "no thread was created")
			})
		}
	})

	t.Run("keeps what only looks like a bad escape", func(t *testing.T) {
		s, _ := newStores(t)
		id := session(t)
		// A surrogate pair, escaped backslashes before u, and the characters
		// themselves.
		states := []string{
			`{"data":"\ud83d\ude00 \uD83D\uDE00"}`,
			`{"data":"\\ud800 \\u0000 \\\\"}`,
			`{"data":"😀 é \u00e9 \u2028"}`,
		}
		tr := ports.Turn{ThreadID: id, Channel: "web", Messages: []ports.Message{user("m1", "😀 \\ud800")}}
		for i, st := range states {
			cp := state(st)
			cp.Step = i
			tr.Checkpoints = append(tr.Checkpoints, cp)
		}
		require.NoError(t, s.SaveTurn(ctx, tr))
		cps, err := s.Checkpoints(ctx, id)
		require.NoError(t, err)
		sameCheckpoints(t, tr.Checkpoints, cps)
		msgs, err := s.History(ctx, id)
		require.NoError(t, err)
		sameMessages(t, tr.Messages, msgs)
	})

	t.Run("a turn of an older fence is refused", func(t *testing.T) {
		a, b := newStores(t)
		if b == nil {
			b = a
		}
		id := session(t)
		fenced := func(msg string, fence int64) ports.Turn {
			return ports.Turn{ThreadID: id, Channel: "web", Messages: []ports.Message{user(msg, msg)},
				Checkpoints: []ports.Checkpoint{{RunID: msg, Node: "load", State: json.RawMessage(`{}`), CreatedAt: stamp(0)}}, Fence: fence}
		}
		require.NoError(t, a.SaveTurn(ctx, fenced("f5", 5)), "a fenced turn creates its thread")
		require.NoError(t, b.SaveTurn(ctx, fenced("f5-again", 5)), "the same fence again")
		require.NoError(t, a.SaveTurn(ctx, fenced("unfenced", 0)), "zero is unfenced")
		err := b.SaveTurn(ctx, fenced("f3", 3))
		require.ErrorIs(t, err, conversation.ErrFenced)
		require.NotErrorIs(t, err, conversation.ErrUnstorable)
		require.NoError(t, a.SaveTurn(ctx, fenced("f9", 9)))
		require.ErrorIs(t, a.SaveTurn(ctx, fenced("f6", 6)), conversation.ErrFenced, "the unfenced turn did not lower it, f9 raised it")
		for _, s := range []CheckpointStore{a, b} {
			msgs, err := s.History(ctx, id)
			require.NoError(t, err)
			var ids []string
			for _, m := range msgs {
				ids = append(ids, m.ID)
			}
			assert.Equal(t, []string{"f5", "f5-again", "unfenced", "f9"}, ids, "nothing of the refused turns")
			cps, err := s.Checkpoints(ctx, id)
			require.NoError(t, err)
			assert.Len(t, cps, 4)
		}
	})

	t.Run("a fence never outlives a cancelled save", func(t *testing.T) {
		s, _ := newStores(t)
		id := session(t)
		cctx, cancel := context.WithTimeout(ctx, time.Nanosecond)
		defer cancel()
		<-cctx.Done()
		require.Error(t, s.SaveTurn(cctx, ports.Turn{ThreadID: id, Messages: []ports.Message{user("m1", "x")}, Fence: 9}))
		require.NoError(t, s.SaveTurn(ctx, ports.Turn{ThreadID: id, Messages: []ports.Message{user("m2", "y")}, Fence: 4}),
			"the failed save raised no fence")
	})
}
