package conversation_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"strconv"
	"testing"

	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
)

// benchModel streams n word-sized pieces, a sentence every dozen words,
// as a real adapter would hand them over.
type benchModel struct{ n int }

var benchPieces = []string{
	"Thanks", " for", " asking", " about", " your", " order", " of", " the", " blue", " kettle", " from", " Tuesday.",
	" It", " left", " our", " warehouse", " this", " morning", " and", " should", " arrive", " by", " Friday", " evening!",
	" Would", " you", " like", " me", " to", " send", " you", " the", " tracking", " link", " by", " email?",
}

func (m benchModel) Stream(ctx context.Context, req ports.ChatRequest, token func(string) error) (ports.Reply, error) {
	for i := range m.n {
		if err := ctx.Err(); err != nil {
			return ports.Reply{}, err
		}
		if err := token(benchPieces[i%len(benchPieces)]); err != nil {
			return ports.Reply{}, err
		}
	}
	return ports.Reply{Stop: ports.StopEndTurn, Usage: ports.Usage{OutputTokens: m.n}}, nil
}

func (benchModel) Complete(context.Context, ports.ChatRequest) (ports.Reply, error) {
	return ports.Reply{}, nil
}

type passGuardrail struct{}

func (passGuardrail) WholeAnswer() bool { return false }
func (passGuardrail) Check(context.Context, string) (ports.Verdict, error) {
	return ports.Verdict{Pass: true}, nil
}

// BenchmarkTokenPath measures one token from the model's callback to the
// bytes the edge queues on a socket: the graph's sentence buffering and
// guardrail release, the event, its JSON encoding, and (in "framed") the
// WebSocket frame the edge allocates per message. b.N tokens stream in one
// answer, so the per-answer costs (lock, load, checkpoints) are amortised
// away and what is left is the per-token path.
func BenchmarkTokenPath(b *testing.B) {
	for _, framed := range []bool{false, true} {
		name := "encode"
		if framed {
			name = "framed"
		}
		b.Run(name, func(b *testing.B) {
			conv, err := conversation.New(conversation.Config{
				Store:      newFakeStore(),
				Lock:       newFakeLock(),
				Model:      benchModel{n: b.N},
				Guardrail:  passGuardrail{},
				Escalation: humanDetector{},
			})
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 0, 256)
			var sent, bytes int
			emit := func(ev conversation.Event) {
				buf = conversation.AppendEvent(buf[:0], ev, "conn-1")
				if framed {
					// What socket.Frame does: header and payload in one
					// new slice that the send queue owns.
					frame := make([]byte, 0, 10+len(buf))
					frame = append(frame, 0x81, 126)
					frame = binary.BigEndian.AppendUint16(frame, uint16(len(buf)))
					frame = append(frame, buf...)
					bytes += len(frame)
				}
				sent++
			}
			b.ReportAllocs()
			b.ResetTimer()
			res, err := conv.Run(context.Background(), conversation.Request{ThreadID: "bench", Message: "Where is my kettle?", Data: json.RawMessage(`[]`)}, emit)
			b.StopTimer()
			if err != nil || res.Usage.OutputTokens != b.N || sent < b.N {
				b.Fatalf("run: %v, %+v, %d events", err, res, sent)
			}
		})
	}
}

// BenchmarkAnswer measures whole chats of 60 tokens on fakes: the graph's
// per-answer costs (lock, load, user message, checkpoints, answer) on top
// of its tokens.
func BenchmarkAnswer(b *testing.B) {
	conv, err := conversation.New(conversation.Config{
		Store:      newFakeStore(),
		Lock:       newFakeLock(),
		Model:      benchModel{n: 60},
		Guardrail:  passGuardrail{},
		Escalation: humanDetector{},
	})
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 0, 256)
	emit := func(ev conversation.Event) { buf = conversation.AppendEvent(buf[:0], ev, "conn-1") }
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		// A thread per chat keeps the fake store's threads short.
		if _, err := conv.Run(context.Background(), conversation.Request{ThreadID: "bench-" + strconv.Itoa(i), Message: "Where is my kettle?", Data: json.RawMessage(`[]`)}, emit); err != nil {
			b.Fatal(err)
		}
	}
}
