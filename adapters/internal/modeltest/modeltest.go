// Package modeltest holds the tests the adapters of the model port on a
// wire (adapters/bedrock, adapters/openai) run alike against their fakes
// (test/fakebedrock, test/fakeopenai): the request of their golden files,
// the golden files themselves, and the cases whose only difference is the
// wire's words. What ports/porttest checks of every model, local ones too,
// is not repeated here: these cases look at the wire's side, what the
// fake received and whether the client went away.
package modeltest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/ports"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// wait bounds every wait of the cases; a passing run never comes close.
const wait = 10 * time.Second

// ChatRequest is the chat request of the adapters' golden files.
func ChatRequest() ports.ChatRequest {
	return ports.ChatRequest{
		Purpose: ports.PurposeChat,
		System:  "You are a helpful assistant for ACME.",
		Messages: []ports.Message{
			{Role: ports.RoleUser, Content: "Hi, I need help with my order."},
			{Role: ports.RoleAssistant, Content: "Of course. What is the order number?"},
			{Role: ports.RoleUser, Content: "It is 1234."},
			{Role: ports.RoleUser, Content: "Where is it?"},
		},
		Data: json.RawMessage(`{ "customer": "c-42", "orders": [1234] }`),
	}
}

// Collect returns a token callback that keeps the pieces.
func Collect(pieces *[]string) func(string) error {
	return func(p string) error {
		*pieces = append(*pieces, p)
		return nil
	}
}

// Golden compares the JSON body with testdata/name, indented; -update
// rewrites the file.
func Golden(t *testing.T, name string, body []byte) {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, json.Indent(&b, body, "", "  "))
	b.WriteByte('\n')
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o750))
		require.NoError(t, os.WriteFile(path, b.Bytes(), 0o644)) //nolint:gosec // a golden file, read by its tests
		return
	}
	want, err := os.ReadFile(path) //nolint:gosec // the test's own testdata
	require.NoError(t, err, "run go test -update to write the golden file")
	assert.Equal(t, string(want), b.String())
}

// Call is one call a fake received, as the cases read it.
type Call struct {
	Op, Model  string
	Header     http.Header
	Body       []byte
	ClientGone bool
}

// Fake is a wire's fake, as the cases read it.
type Fake interface {
	Calls() []Call
	WaitEnded(ctx context.Context, i int) (Call, error)
}

// FakeOf is a fake of R requests as a Fake: call reads a request.
func FakeOf[R any](fake interface {
	Requests() []R
	WaitEnded(ctx context.Context, i int) (R, error)
}, call func(R) Call) Fake {
	return fakeOf[R]{fake: fake, call: call}
}

type fakeOf[R any] struct {
	fake interface {
		Requests() []R
		WaitEnded(ctx context.Context, i int) (R, error)
	}
	call func(R) Call
}

func (f fakeOf[R]) Calls() []Call {
	var out []Call
	for _, r := range f.fake.Requests() {
		out = append(out, f.call(r))
	}
	return out
}

func (f fakeOf[R]) WaitEnded(ctx context.Context, i int) (Call, error) {
	r, err := f.fake.WaitEnded(ctx, i)
	return f.call(r), err
}

// Message is a message of a request's body: its role and its text.
type Message struct{ Role, Text string }

// Wire is an adapter of the model port on a wire, with its fake. Each
// function starts a fresh fake and a model on it, configured with
// ChatModel, SummaryModel and EscalationModel, and says what the case
// needs in the wire's words.
type Wire struct {
	// ChatModel, SummaryModel and EscalationModel are the models' IDs;
	// StreamOp and CompleteOp are the fake's ops of a streamed and of a
	// whole answer.
	ChatModel, SummaryModel, EscalationModel, StreamOp, CompleteOp string
	// Answering answers deltas to every call, pace apart, and keeps the
	// stream open after them when hang (only the client ends the call).
	Answering func(t *testing.T, deltas []string, pace time.Duration, hang bool) (ports.ChatModel, Fake)
	// Counting answers deltas to every call, with usage.
	Counting func(t *testing.T, deltas []string, usage ports.Usage) (ports.ChatModel, Fake)
	// Unset has neither max tokens nor a temperature set, and answers
	// text in one piece.
	Unset func(t *testing.T, text string) (ports.ChatModel, Fake)
	// CheckChat checks the headers of a chat's call: its authentication,
	// its content type.
	CheckChat func(t *testing.T, h http.Header)
	// Refused refuses the first call with HTTP 429 and the second with
	// HTTP 500, then answers deltas.
	Refused func(t *testing.T, deltas []string) (ports.ChatModel, Fake)
	// Summarizing answers text in one piece with usage.
	Summarizing func(t *testing.T, text string, usage ports.Usage) (ports.ChatModel, Fake)
	// ChatOnly has no summary or escalation model ID, and answers "ok".
	ChatOnly func(t *testing.T) (ports.ChatModel, Fake)
	// Stops are the wire's stop reasons, each with the port's.
	Stops map[string]ports.StopReason
	// Stopping answers two deltas, then stops for stop, in the wire's
	// words.
	Stopping func(t *testing.T, stop string) ports.ChatModel
	// Messages reads the messages of a chat's request body, checking
	// what else the wire says of them (no system block, say).
	Messages func(t *testing.T, body []byte) []Message
}

// waitEnded waits for the fake to be done with call i.
func waitEnded(t *testing.T, fake Fake, i int) Call {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	c, err := fake.WaitEnded(ctx, i)
	require.NoError(t, err)
	return c
}

// Run runs the cases on w.
func Run(t *testing.T, w Wire) {
	t.Run("a stream", func(t *testing.T) {
		deltas := []string{"Your", " order", " ships", " today", "."}
		m, fake := w.Counting(t, deltas, ports.Usage{InputTokens: 57, OutputTokens: 5})
		var got []string
		reply, err := m.Stream(t.Context(), ChatRequest(), Collect(&got))
		require.NoError(t, err)
		assert.Equal(t, deltas, got)
		assert.Equal(t, ports.StopEndTurn, reply.Stop)
		assert.Equal(t, ports.Usage{InputTokens: 57, OutputTokens: 5}, reply.Usage)
		assert.Empty(t, reply.Text)

		calls := fake.Calls()
		require.Len(t, calls, 1)
		assert.Equal(t, w.StreamOp, calls[0].Op)
		assert.Equal(t, w.ChatModel, calls[0].Model)
		w.CheckChat(t, calls[0].Header)
		Golden(t, "chat_request.json", calls[0].Body)
	})

	t.Run("a rewrite", func(t *testing.T) {
		m, fake := w.Unset(t, " I can help with your order instead.")
		req := ChatRequest()
		req.Data = nil
		req.Rewrite = &ports.Rewrite{Said: "Your order ships today.", Rejected: "The warehouse manager is Bob.", Reason: "names an employee"}
		_, err := m.Stream(t.Context(), req, Collect(new([]string)))
		require.NoError(t, err)
		calls := fake.Calls()
		require.Len(t, calls, 1)
		Golden(t, "rewrite_request.json", calls[0].Body)
	})

	t.Run("refusals before the first token are retried", func(t *testing.T) {
		m, fake := w.Refused(t, []string{"a", "b"})
		var got []string
		reply, err := m.Stream(t.Context(), ChatRequest(), Collect(&got))
		require.NoError(t, err)
		assert.Equal(t, []string{"a", "b"}, got)
		assert.Equal(t, ports.StopEndTurn, reply.Stop)
		assert.Len(t, fake.Calls(), 3)
	})

	t.Run("stop reasons", func(t *testing.T) {
		require.NotEmpty(t, w.Stops)
		for stop, want := range w.Stops {
			t.Run(stop, func(t *testing.T) {
				var got []string
				reply, err := w.Stopping(t, stop).Stream(t.Context(), ChatRequest(), Collect(&got))
				require.NoError(t, err)
				assert.Equal(t, want, reply.Stop)
				assert.Equal(t, []string{"Sorry", ", I"}, got)
			})
		}
	})

	t.Run("refusals before a classification are retried", func(t *testing.T) {
		m, fake := w.Refused(t, []string{"CONTINUE"})
		reply, err := m.Complete(t.Context(), ports.ChatRequest{
			Purpose:  ports.PurposeClassify,
			System:   "Answer ESCALATE or CONTINUE.",
			Messages: []ports.Message{{Role: ports.RoleUser, Content: "hello"}},
		})
		require.NoError(t, err)
		assert.Equal(t, "CONTINUE", reply.Text)
		calls := fake.Calls()
		require.Len(t, calls, 3, "throttled, a server error, then answered")
		assert.Equal(t, w.EscalationModel, calls[2].Model)
	})

	t.Run("a cancel closes the call", func(t *testing.T) {
		m, fake := w.Answering(t, []string{"first", " second"}, 0, true)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var got []string
		done := make(chan error, 1)
		go func() {
			_, err := m.Stream(ctx, ChatRequest(), func(p string) error {
				got = append(got, p)
				if len(got) == 2 {
					cancel()
				}
				return nil
			})
			done <- err
		}()
		select {
		case err := <-done:
			require.ErrorIs(t, err, context.Canceled)
		case <-time.After(wait):
			t.Fatal("Stream did not return after the cancel")
		}
		assert.Equal(t, []string{"first", " second"}, got)
		assert.True(t, waitEnded(t, fake, 0).ClientGone, "the fake saw the client go away")
	})

	t.Run("a token error closes the call", func(t *testing.T) {
		m, fake := w.Answering(t, []string{"a", "b", "c"}, 20*time.Millisecond, true)
		stop := errors.New("stop")
		calls := 0
		_, err := m.Stream(t.Context(), ChatRequest(), func(string) error { calls++; return stop })
		require.ErrorIs(t, err, stop)
		assert.Equal(t, 1, calls, "no token after the error")
		assert.True(t, waitEnded(t, fake, 0).ClientGone)
	})

	t.Run("a summary", func(t *testing.T) {
		m, fake := w.Summarizing(t, "The user asked where order 1234 is.", ports.Usage{InputTokens: 80, OutputTokens: 9})
		req := ports.ChatRequest{
			Purpose: ports.PurposeSummary,
			System:  "Summarise the conversation in two sentences.",
			Messages: []ports.Message{
				{Role: ports.RoleUser, Content: "Where is order 1234?"},
				{Role: ports.RoleAssistant, Content: "It ships today."},
			},
		}
		reply, err := m.Complete(t.Context(), req)
		require.NoError(t, err)
		assert.Equal(t, "The user asked where order 1234 is.", reply.Text)
		assert.Equal(t, ports.StopEndTurn, reply.Stop)
		assert.Equal(t, ports.Usage{InputTokens: 80, OutputTokens: 9}, reply.Usage)

		calls := fake.Calls()
		require.Len(t, calls, 1)
		assert.Equal(t, w.CompleteOp, calls[0].Op)
		assert.Equal(t, w.SummaryModel, calls[0].Model)
		Golden(t, "summary_request.json", calls[0].Body)
	})

	t.Run("the chat model when a purpose has none", func(t *testing.T) {
		m, fake := w.ChatOnly(t)
		for _, p := range []ports.Purpose{ports.PurposeSummary, ports.PurposeClassify} {
			_, err := m.Complete(t.Context(), ports.ChatRequest{Purpose: p, Messages: []ports.Message{{Role: ports.RoleUser, Content: "x"}}})
			require.NoError(t, err)
		}
		calls := fake.Calls()
		require.Len(t, calls, 2)
		for _, c := range calls {
			assert.Equal(t, w.ChatModel, c.Model)
		}
	})

	t.Run("the history's shapes", func(t *testing.T) {
		m, fake := w.ChatOnly(t)
		req := ports.ChatRequest{
			Purpose: ports.PurposeChat,
			Messages: []ports.Message{
				{Role: ports.RoleAssistant, Content: "Welcome! How can I help?"},
				{Role: ports.RoleUser, Content: "one"},
				{Role: ports.RoleAssistant, Content: "  "},
				{Role: ports.RoleUser, Content: "two"},
				{Role: ports.RoleAssistant, Content: "partial answer", Cancelled: true},
				{Role: ports.RoleAssistant, Content: "second answer"},
				{Role: ports.RoleUser, Content: "three"},
			},
			Data: json.RawMessage("null"),
		}
		_, err := m.Stream(t.Context(), req, Collect(new([]string)))
		require.NoError(t, err)
		assert.Equal(t, []Message{
			{"user", "one\n\ntwo"},
			{"assistant", "partial answer\n\nsecond answer"},
			{"user", "three"},
		}, w.Messages(t, fake.Calls()[0].Body), "no system prompt and null data: no system message; alternating roles from the user's")
	})
}

// BenchmarkStream is one answer of 60 deltas of word streamed from the
// fake (no pacing) through m, which answers deltas: the adapter's cost
// per chat, with the fake's on the same machine. Divide by 60 for a
// token.
func BenchmarkStream(b *testing.B, word string, model func(b *testing.B, deltas []string) ports.ChatModel) {
	deltas := make([]string, 60)
	for i := range deltas {
		deltas[i] = word
	}
	m := model(b, deltas)
	req := ChatRequest()
	want := len(strings.Join(deltas, ""))
	b.ReportAllocs()
	for b.Loop() {
		var n int
		_, err := m.Stream(b.Context(), req, func(p string) error {
			n += len(p)
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		if n != want {
			b.Fatalf("got %d bytes", n)
		}
	}
}
