package local_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/local"
	"github.com/wsserver/wsserver/ports"
)

func chat(msgs ...string) ports.ChatRequest {
	req := ports.ChatRequest{Purpose: ports.PurposeChat, System: "be nice"}
	for i, m := range msgs {
		role := ports.RoleUser
		if i%2 == 1 {
			role = ports.RoleAssistant
		}
		req.Messages = append(req.Messages, ports.Message{Role: role, Content: m})
	}
	return req
}

func stream(t *testing.T, m *local.Model, req ports.ChatRequest) ([]string, ports.Reply) {
	t.Helper()
	var pieces []string
	reply, err := m.Stream(context.Background(), req, func(p string) error {
		pieces = append(pieces, p)
		return nil
	})
	require.NoError(t, err)
	return pieces, reply
}

func TestModelAnswer(t *testing.T) {
	m, err := local.NewModel(local.ModelConfig{})
	require.NoError(t, err)

	req := chat("Where is my order?", "It is on its way.", "When will it arrive?", "Soon.", "How   soon\nexactly?")
	pieces, reply := stream(t, m, req)
	answer := strings.Join(pieces, "")
	assert.True(t, strings.HasPrefix(answer, `You asked: "How soon exactly?". This thread has 4 earlier messages. Before that you wrote: "When will it arrive?".`), answer)
	assert.Equal(t, ports.StopEndTurn, reply.Stop)
	assert.Equal(t, len(pieces), reply.Usage.OutputTokens)
	assert.Positive(t, reply.Usage.InputTokens)
	assert.GreaterOrEqual(t, strings.Count(answer, ". "), 3, "several sentences")
	for i, p := range pieces {
		assert.NotEmpty(t, strings.TrimSpace(p), "piece %d is a word", i)
		if i > 0 {
			assert.True(t, strings.HasPrefix(p, " "), "piece %d keeps its space: %q", i, p)
		}
	}

	again, _ := stream(t, m, req)
	assert.Equal(t, pieces, again, "deterministic")
	whole, err := m.Complete(context.Background(), req)
	require.NoError(t, err)
	assert.Equal(t, answer, whole.Text)

	first, _ := stream(t, m, chat("hello"))
	assert.Contains(t, strings.Join(first, ""), "This is the first message of this thread.")
	second, _ := stream(t, m, chat("hello", "hi"))
	assert.Contains(t, strings.Join(second, ""), "This thread has 1 earlier message.")
	long, _ := stream(t, m, chat(strings.Repeat("word ", 100)))
	assert.Contains(t, strings.Join(long, ""), "word…")
}

func TestModelRewrite(t *testing.T) {
	m, err := local.NewModel(local.ModelConfig{})
	require.NoError(t, err)
	req := chat("hello")
	req.Rewrite = &ports.Rewrite{Said: "Fine.", Rejected: " Bad.", Reason: "bad"}
	pieces, _ := stream(t, m, req)
	answer := strings.Join(pieces, "")
	assert.True(t, strings.HasPrefix(answer, " "), "continues after what was said")
	assert.NotContains(t, answer, "Bad")
	req.Rewrite.Said = ""
	pieces, _ = stream(t, m, req)
	assert.False(t, strings.HasPrefix(strings.Join(pieces, ""), " "))
}

func TestTokens(t *testing.T) {
	for _, s := range []string{"", "one", "  lead", "a b  c\n\nd ", "ü ö\t€", "trail  "} {
		assert.Equal(t, s, strings.Join(local.Tokens(s), ""), "%q", s)
	}
	assert.Equal(t, []string{"You", " asked:", ` "hi".`}, local.Tokens(`You asked: "hi".`))
	assert.Equal(t, []string{"a", "\n\nb", "  "}, local.Tokens("a\n\nb  "))
}

func TestModelCancel(t *testing.T) {
	// A long pace: the stream can only end early through the context.
	m, err := local.NewModel(local.ModelConfig{TokenDelay: time.Hour})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var got []string
	done := make(chan error, 1)
	go func() {
		_, err := m.Stream(ctx, chat("hello"), func(p string) error {
			got = append(got, p)
			return nil
		})
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
		assert.LessOrEqual(t, len(got), 1, "no token after the cancel")
	case <-time.After(10 * time.Second):
		t.Fatal("the stream did not stop")
	}
}

func TestModelStopsWhenTold(t *testing.T) {
	m, err := local.NewModel(local.ModelConfig{})
	require.NoError(t, err)
	stop := errors.New("enough")
	n := 0
	reply, err := m.Stream(context.Background(), chat("hello"), func(string) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop)
	assert.Equal(t, 3, n)
	assert.Equal(t, 2, reply.Usage.OutputTokens)
}

func TestModelPace(t *testing.T) {
	// With a pace, every token still comes, in order.
	m, err := local.NewModel(local.ModelConfig{TokenDelay: time.Microsecond})
	require.NoError(t, err)
	paced, _ := stream(t, m, chat("hello"))
	fast, err := local.NewModel(local.ModelConfig{})
	require.NoError(t, err)
	unpaced, _ := stream(t, fast, chat("hello"))
	assert.Equal(t, unpaced, paced)
	_, err = local.NewModel(local.ModelConfig{TokenDelay: -1})
	require.Error(t, err)
}

func TestModelSummary(t *testing.T) {
	m, err := local.NewModel(local.ModelConfig{})
	require.NoError(t, err)
	req := ports.ChatRequest{Purpose: ports.PurposeSummary, Messages: []ports.Message{
		{Role: ports.RoleUser, Content: "Where is my order?"},
		{Role: ports.RoleAssistant, Content: "On its way."},
		{Role: ports.RoleUser, Content: "Thanks!"},
		{Role: ports.RoleAssistant, Content: "You", Cancelled: true},
	}}
	a, err := m.Complete(context.Background(), req)
	require.NoError(t, err)
	b, err := m.Complete(context.Background(), req)
	require.NoError(t, err)
	assert.Equal(t, a.Text, b.Text)
	assert.Equal(t, `The thread has 4 messages: 2 from the user and 2 answers, 1 of them cancelled. The user first wrote: "Where is my order?", and last: "Thanks!".`, a.Text)
}

func TestModelClassify(t *testing.T) {
	m, err := local.NewModel(local.ModelConfig{})
	require.NoError(t, err)
	for msg, want := range map[string]string{
		"Can I talk to a human?": "ESCALATE",
		"Where is my parcel?":    "CONTINUE",
		"Agent, please!":         "ESCALATE",
	} {
		r, err := m.Complete(context.Background(), ports.ChatRequest{Purpose: ports.PurposeClassify, Messages: []ports.Message{{Role: ports.RoleUser, Content: msg}}})
		require.NoError(t, err)
		assert.True(t, strings.HasPrefix(r.Text, want), "%q → %q", msg, r.Text)
	}
}
