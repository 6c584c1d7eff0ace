package bedrock_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/bedrock"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/test/fakebedrock"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const (
	chatModel       = "anthropic.claude-3-5-sonnet-20240620-v1:0"
	summaryModel    = "anthropic.claude-3-haiku-20240307-v1:0"
	escalationModel = "amazon.nova-micro-v1:0"
)

// newModel starts a fake answering def and a Model on it through the real
// SDK client, with static credentials.
func newModel(t testing.TB, def fakebedrock.Script, edit func(*bedrock.Config)) (*bedrock.Model, *fakebedrock.Server) {
	t.Helper()
	fake := fakebedrock.New(def)
	t.Cleanup(fake.Close)
	cfg := bedrock.Config{
		Region:            "eu-west-1",
		EndpointURL:       fake.URL,
		Credentials:       credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", ""),
		ChatModelID:       chatModel,
		SummaryModelID:    summaryModel,
		EscalationModelID: escalationModel,
		MaxTokens:         512,
		Temperature:       aws.Float32(0.25),
		MaxBackoff:        10 * time.Millisecond,
	}
	if edit != nil {
		edit(&cfg)
	}
	m, err := bedrock.New(t.Context(), cfg)
	require.NoError(t, err)
	return m, fake
}

// collect returns a token callback that keeps the pieces.
func collect(pieces *[]string) func(string) error {
	return func(p string) error {
		*pieces = append(*pieces, p)
		return nil
	}
}

func chatRequest() ports.ChatRequest {
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

func TestStream(t *testing.T) {
	deltas := []string{"Your", " order", " ships", " today", "."}
	m, fake := newModel(t, fakebedrock.Script{Deltas: deltas, Usage: fakebedrock.Usage{InputTokens: 57, OutputTokens: 5}}, nil)

	var got []string
	reply, err := m.Stream(t.Context(), chatRequest(), collect(&got))
	require.NoError(t, err)
	assert.Equal(t, deltas, got)
	assert.Equal(t, ports.StopEndTurn, reply.Stop)
	assert.Equal(t, ports.Usage{InputTokens: 57, OutputTokens: 5}, reply.Usage)
	assert.Empty(t, reply.Text)

	reqs := fake.Requests()
	require.Len(t, reqs, 1)
	assert.Equal(t, "converse-stream", reqs[0].Op)
	assert.Equal(t, chatModel, reqs[0].ModelID)
	assert.Contains(t, reqs[0].Header.Get("Authorization"), "AKIDEXAMPLE", "the request is signed")
	golden(t, "chat_request.json", reqs[0].Body)
}

func TestStreamRewrite(t *testing.T) {
	m, fake := newModel(t, fakebedrock.Script{Text: " I can help with your order instead."}, func(c *bedrock.Config) {
		c.MaxTokens = 0
		c.Temperature = nil
	})
	req := chatRequest()
	req.Data = nil
	req.Rewrite = &ports.Rewrite{Said: "Your order ships today.", Rejected: "The warehouse manager is Bob.", Reason: "names an employee"}
	_, err := m.Stream(t.Context(), req, collect(new([]string)))
	require.NoError(t, err)
	golden(t, "rewrite_request.json", fake.Requests()[0].Body)
}

func TestStreamRetriesBeforeTheFirstToken(t *testing.T) {
	m, fake := newModel(t, fakebedrock.Script{Deltas: []string{"a", "b"}}, nil)
	fake.Push(fakebedrock.Script{HTTPError: fakebedrock.ThrottlingError()}, fakebedrock.Script{HTTPError: fakebedrock.ServerError()})

	var got []string
	reply, err := m.Stream(t.Context(), chatRequest(), collect(&got))
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, got)
	assert.Equal(t, ports.StopEndTurn, reply.Stop)
	assert.Len(t, fake.Requests(), 3)
}

func TestStreamGivesUpAfterMaxAttempts(t *testing.T) {
	m, fake := newModel(t, fakebedrock.Script{HTTPError: fakebedrock.ThrottlingError()}, func(c *bedrock.Config) { c.MaxAttempts = 2 })

	called := false
	_, err := m.Stream(t.Context(), chatRequest(), func(string) error { called = true; return nil })
	var te *types.ThrottlingException
	require.ErrorAs(t, err, &te)
	assert.False(t, called)
	assert.Len(t, fake.Requests(), 2)
}

func TestStreamExceptionAfterTokens(t *testing.T) {
	m, fake := newModel(t, fakebedrock.Script{
		Deltas:    []string{"one", " two", " three", " four"},
		Exception: &fakebedrock.Exception{After: 2, Type: "modelStreamErrorException", Message: "the model failed"},
	}, nil)

	var got []string
	_, err := m.Stream(t.Context(), chatRequest(), collect(&got))
	var me *types.ModelStreamErrorException
	require.ErrorAs(t, err, &me)
	assert.Contains(t, err.Error(), "the model failed")
	assert.Equal(t, []string{"one", " two"}, got, "the tokens before the exception were given")
	assert.Len(t, fake.Requests(), 1, "nothing is retried once the stream started")
}

func TestStreamThrottledInTheStreamIsNotRetried(t *testing.T) {
	m, fake := newModel(t, fakebedrock.Script{
		Deltas:    []string{"one", " two"},
		Exception: &fakebedrock.Exception{After: 1, Type: "throttlingException", Message: "slow down"},
	}, nil)

	var got []string
	_, err := m.Stream(t.Context(), chatRequest(), collect(&got))
	var te *types.ThrottlingException
	require.ErrorAs(t, err, &te)
	assert.Equal(t, []string{"one"}, got)
	assert.Len(t, fake.Requests(), 1)
}

func TestStreamStopReasons(t *testing.T) {
	for _, tc := range []struct {
		stop string
		want ports.StopReason
	}{
		{"end_turn", ports.StopEndTurn},
		{"stop_sequence", ports.StopEndTurn},
		{"max_tokens", ports.StopMaxTokens},
		{"model_context_window_exceeded", ports.StopMaxTokens},
		{"guardrail_intervened", ports.StopGuardrailIntervened},
		{"content_filtered", ports.StopContentFiltered},
		{"tool_use", ports.StopEndTurn},
	} {
		t.Run(tc.stop, func(t *testing.T) {
			m, _ := newModel(t, fakebedrock.Script{Deltas: []string{"Sorry", ", I"}, Stop: tc.stop}, nil)
			var got []string
			reply, err := m.Stream(t.Context(), chatRequest(), collect(&got))
			require.NoError(t, err)
			assert.Equal(t, tc.want, reply.Stop)
			assert.Equal(t, []string{"Sorry", ", I"}, got)
		})
	}
}

func TestStreamCancel(t *testing.T) {
	m, fake := newModel(t, fakebedrock.Script{Deltas: []string{"first", " second"}, Hang: true}, nil)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var got []string
	done := make(chan error, 1)
	go func() {
		_, err := m.Stream(ctx, chatRequest(), func(p string) error {
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
	case <-time.After(5 * time.Second):
		t.Fatal("Stream did not return after the cancel")
	}
	assert.Equal(t, []string{"first", " second"}, got)

	wctx, wcancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer wcancel()
	req, err := fake.WaitEnded(wctx, 0)
	require.NoError(t, err)
	assert.True(t, req.ClientGone, "the fake saw the client go away")
}

func TestStreamTokenError(t *testing.T) {
	m, fake := newModel(t, fakebedrock.Script{Deltas: []string{"a", "b", "c"}, Pace: 20 * time.Millisecond, Hang: true}, nil)

	stop := errors.New("stop")
	_, err := m.Stream(t.Context(), chatRequest(), func(string) error { return stop })
	require.ErrorIs(t, err, stop)

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, err := fake.WaitEnded(ctx, 0)
	require.NoError(t, err)
	assert.True(t, req.ClientGone)
}

func TestStreamTimeout(t *testing.T) {
	m, _ := newModel(t, fakebedrock.Script{Deltas: []string{"a"}, Hang: true}, func(c *bedrock.Config) { c.Timeout = 200 * time.Millisecond })

	start := time.Now()
	_, err := m.Stream(t.Context(), chatRequest(), collect(new([]string)))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NotErrorIs(t, err, context.Canceled)
	assert.Less(t, time.Since(start), 3*time.Second)
}

func TestStreamPaced(t *testing.T) {
	m, _ := newModel(t, fakebedrock.Script{Deltas: []string{"a", "b", "c"}, Pace: 30 * time.Millisecond}, nil)

	var at []time.Time
	_, err := m.Stream(t.Context(), chatRequest(), func(string) error { at = append(at, time.Now()); return nil })
	require.NoError(t, err)
	require.Len(t, at, 3)
	assert.GreaterOrEqual(t, at[2].Sub(at[0]), 50*time.Millisecond, "tokens come as the fake sends them")
}

func TestCompleteSummary(t *testing.T) {
	m, fake := newModel(t, fakebedrock.Script{}, nil)
	fake.Push(fakebedrock.Script{Text: "The user asked where order 1234 is.", Usage: fakebedrock.Usage{InputTokens: 80, OutputTokens: 9}})

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

	reqs := fake.Requests()
	require.Len(t, reqs, 1)
	assert.Equal(t, "converse", reqs[0].Op)
	assert.Equal(t, summaryModel, reqs[0].ModelID)
	golden(t, "summary_request.json", reqs[0].Body)
}

func TestCompleteClassify(t *testing.T) {
	m, fake := newModel(t, fakebedrock.Script{Text: "CONTINUE"}, nil)
	fake.Throttle(1)

	reply, err := m.Complete(t.Context(), ports.ChatRequest{
		Purpose:  ports.PurposeClassify,
		System:   "Answer ESCALATE or CONTINUE.",
		Messages: []ports.Message{{Role: ports.RoleUser, Content: "hello"}},
	})
	require.NoError(t, err)
	assert.Equal(t, "CONTINUE", reply.Text)
	reqs := fake.Requests()
	require.Len(t, reqs, 2, "throttled, then retried")
	assert.Equal(t, escalationModel, reqs[1].ModelID)
}

func TestModelIDDefaults(t *testing.T) {
	m, fake := newModel(t, fakebedrock.Script{Text: "ok"}, func(c *bedrock.Config) {
		c.SummaryModelID, c.EscalationModelID = "", ""
	})
	for _, p := range []ports.Purpose{ports.PurposeSummary, ports.PurposeClassify} {
		_, err := m.Complete(t.Context(), ports.ChatRequest{Purpose: p, Messages: []ports.Message{{Role: ports.RoleUser, Content: "x"}}})
		require.NoError(t, err)
	}
	for _, r := range fake.Requests() {
		assert.Equal(t, chatModel, r.ModelID)
	}
}

func TestNewValidates(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg  bedrock.Config
		want string
	}{
		"no chat model": {bedrock.Config{Region: "eu-west-1"}, "BEDROCK_MODEL_ID_CHAT"},
		"no region":     {bedrock.Config{ChatModelID: chatModel}, "AWS_BEDROCK_REGION"},
		"negative max":  {bedrock.Config{Region: "eu-west-1", ChatModelID: chatModel, MaxTokens: -1}, "max tokens"},
		"negative time": {bedrock.Config{Region: "eu-west-1", ChatModelID: chatModel, Timeout: -1}, "timeout"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := bedrock.New(t.Context(), tc.cfg)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.True(t, strings.HasPrefix(err.Error(), "bedrock: "))
		})
	}
}

// golden compares the JSON body with testdata/name, indented; -update
// rewrites the file.
func golden(t *testing.T, name string, body []byte) {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, json.Indent(&b, body, "", "  "))
	b.WriteByte('\n')
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, b.Bytes(), 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update to write the golden file")
	assert.Equal(t, string(want), b.String())
}

func TestStreamExceptionBeforeTheFirstTokenIsRetried(t *testing.T) {
	m, fake := newModel(t, fakebedrock.Script{Deltas: []string{"a", "b"}}, nil)
	fake.Push(fakebedrock.Script{Deltas: []string{"x"}, Exception: &fakebedrock.Exception{After: 0, Type: "serviceUnavailableException", Message: "busy"}})

	var got []string
	_, err := m.Stream(t.Context(), chatRequest(), collect(&got))
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, got)
	assert.Len(t, fake.Requests(), 2)
}

func TestStreamModelErrorBeforeTheFirstTokenIsNotRetried(t *testing.T) {
	m, fake := newModel(t, fakebedrock.Script{Exception: &fakebedrock.Exception{Type: "validationException", Message: "bad input"}}, nil)

	_, err := m.Stream(t.Context(), chatRequest(), collect(new([]string)))
	var ve *types.ValidationException
	require.ErrorAs(t, err, &ve)
	assert.Len(t, fake.Requests(), 1)
}

func TestInjectedClient(t *testing.T) {
	fake := fakebedrock.New(fakebedrock.Script{Deltas: []string{"hi"}})
	t.Cleanup(fake.Close)
	client := bedrockruntime.New(bedrockruntime.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(fake.URL),
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", ""),
		HTTPClient:   fake.HTTPClient(),
	})
	m, err := bedrock.New(t.Context(), bedrock.Config{Client: client, ChatModelID: chatModel})
	require.NoError(t, err)

	var got []string
	_, err = m.Stream(t.Context(), chatRequest(), collect(&got))
	require.NoError(t, err)
	assert.Equal(t, []string{"hi"}, got)
	var body struct {
		InferenceConfig json.RawMessage `json:"inferenceConfig"`
	}
	require.NoError(t, json.Unmarshal(fake.Requests()[0].Body, &body))
	assert.Nil(t, body.InferenceConfig, "no inference settings: the model's defaults")
}

func TestStreamHistoryShapes(t *testing.T) {
	m, fake := newModel(t, fakebedrock.Script{Text: "ok"}, nil)
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
	_, err := m.Stream(t.Context(), req, collect(new([]string)))
	require.NoError(t, err)

	var body struct {
		System   []json.RawMessage `json:"system"`
		Messages []struct {
			Role    string `json:"role"`
			Content []struct {
				Text string `json:"text"`
			} `json:"content"`
		} `json:"messages"`
	}
	require.NoError(t, json.Unmarshal(fake.Requests()[0].Body, &body))
	assert.Empty(t, body.System, "no system prompt and null data: no system block")
	type msg struct{ role, text string }
	var got []msg
	for _, m := range body.Messages {
		require.Len(t, m.Content, 1)
		got = append(got, msg{m.Role, m.Content[0].Text})
	}
	assert.Equal(t, []msg{
		{"user", "one\n\ntwo"},
		{"assistant", "partial answer\n\nsecond answer"},
		{"user", "three"},
	}, got)
}

func TestStreamCutIsAnError(t *testing.T) {
	m, fake := newModel(t, fakebedrock.Script{Deltas: []string{"a", "b"}, Hang: true}, nil)

	var got []string
	_, err := m.Stream(t.Context(), chatRequest(), func(p string) error {
		got = append(got, p)
		if len(got) == 2 {
			go fake.Close() // the endpoint goes away mid-answer
		}
		return nil
	})
	require.Error(t, err)
	assert.Equal(t, []string{"a", "b"}, got)
}
