package postgres_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsserver/wsserver/ports"
)

// BenchmarkThreads measures the store's share of a chat on a real database
// (here: a container on this machine): saving a turn of one message, and
// loading a thread of 20 messages, as each chat message does.
func BenchmarkThreads(b *testing.B) {
	ctx := context.Background()
	s := open(b, newDatabase(b))
	content := strings.Repeat("A sentence of a realistic answer. ", 6) // ~200 bytes
	msg := func(i int) ports.Message {
		role := ports.RoleUser
		if i%2 == 1 {
			role = ports.RoleAssistant
		}
		return ports.Message{ID: fmt.Sprintf("m%d", i), Role: role, Content: content, CreatedAt: time.Now()}
	}
	threads := 0
	newThread := func(b *testing.B, messages int) string {
		b.Helper()
		threads++
		id := fmt.Sprintf("bench-%d", threads)
		if err := s.SaveTurn(ctx, ports.Turn{ThreadID: id, Channel: "web"}); err != nil {
			b.Fatal(err)
		}
		for i := range messages {
			if err := s.SaveTurn(ctx, ports.Turn{ThreadID: id, Messages: []ports.Message{msg(i)}}); err != nil {
				b.Fatal(err)
			}
		}
		return id
	}

	b.Run("message", func(b *testing.B) {
		b.ReportAllocs()
		id, n := newThread(b, 0), 0
		for b.Loop() {
			if n == 20 {
				id, n = newThread(b, 0), 0
			}
			if err := s.SaveTurn(ctx, ports.Turn{ThreadID: id, Messages: []ports.Message{msg(n)}}); err != nil {
				b.Fatal(err)
			}
			n++
		}
	})
	b.Run("load-20", func(b *testing.B) {
		b.ReportAllocs()
		id := newThread(b, 20)
		for b.Loop() {
			th, err := s.Load(ctx, id)
			if err != nil || len(th.Messages) != 20 {
				b.Fatal(err, len(th.Messages))
			}
		}
	})
	// A whole thread of 20 messages: created, saved one by one, loaded.
	b.Run("thread-20", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			id := newThread(b, 20)
			if _, err := s.Load(ctx, id); err != nil {
				b.Fatal(err)
			}
		}
	})
	// Messages from many goroutines to threads of their own, through the
	// pool's 4 connections.
	b.Run("message-parallel", func(b *testing.B) {
		b.ReportAllocs()
		ids := make(chan string, 64)
		for range cap(ids) {
			ids <- newThread(b, 0)
		}
		var seq atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			id := <-ids
			for pb.Next() {
				if err := s.SaveTurn(ctx, ports.Turn{ThreadID: id, Messages: []ports.Message{msg(int(seq.Add(1)))}}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkSaveTurn measures what a chat turn writes — a question, its
// answer and six checkpoints of the core's size — stored by SaveTurn at
// once. Each thread takes 10 turns; SaveTurn creates it on the first.
func BenchmarkSaveTurn(b *testing.B) {
	ctx := context.Background()
	s := open(b, newDatabase(b))
	content := strings.Repeat("A sentence of a realistic answer. ", 6) // ~200 bytes
	state := json.RawMessage(fmt.Sprintf(`{"run_id":"r","node":"generate","message":%q,"released":%q,"usage":{"input_tokens":120,"output_tokens":60}}`, content, content))
	var threads atomic.Int64
	// next returns turn n of a chat: a new thread every 10 turns.
	next := func(id *string, n int) ports.Turn {
		if n%10 == 0 {
			*id = fmt.Sprintf("bench-%d", threads.Add(1))
		}
		t := ports.Turn{
			ThreadID: *id,
			Channel:  "web",
			Messages: []ports.Message{
				{ID: fmt.Sprintf("q%d", n), Role: ports.RoleUser, Content: "Where is my order?", CreatedAt: time.Now()},
				{ID: fmt.Sprintf("a%d", n), Role: ports.RoleAssistant, Content: content, CreatedAt: time.Now()},
			},
		}
		for i, node := range []string{"load", "escalation_check", "generate", "guardrail", "respond", "done"} {
			t.Checkpoints = append(t.Checkpoints, ports.Checkpoint{RunID: fmt.Sprintf("r%d", n), Step: i, Node: node, State: state, CreatedAt: time.Now()})
		}
		return t
	}
	b.Run("turn", func(b *testing.B) {
		b.ReportAllocs()
		var id string
		n := 0
		for b.Loop() {
			if err := s.SaveTurn(ctx, next(&id, n)); err != nil {
				b.Fatal(err)
			}
			n++
		}
	})
	// Chats from many goroutines, through the pool's 4 connections.
	b.Run("turn-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(4) // 4×GOMAXPROCS goroutines
		b.RunParallel(func(pb *testing.PB) {
			var id string
			n := 0
			for pb.Next() {
				if err := s.SaveTurn(ctx, next(&id, n)); err != nil {
					b.Error(err)
					return
				}
				n++
			}
		})
	})
}
