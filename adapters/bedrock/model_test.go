package bedrock_test

import (
	"context"
	"encoding/json"
	"net/http"
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
	"github.com/wsserver/wsserver/adapters/internal/modeltest"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/test/fakebedrock"
)

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

func TestStreamGivesUpAfterMaxAttempts(t *testing.T) {
	m, fake := newModel(t, fakebedrock.Script{HTTPError: fakebedrock.ThrottlingError()}, func(c *bedrock.Config) { c.MaxAttempts = 2 })

	called := false
	_, err := m.Stream(t.Context(), modeltest.ChatRequest(), func(string) error { called = true; return nil })
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
	_, err := m.Stream(t.Context(), modeltest.ChatRequest(), modeltest.Collect(&got))
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
	_, err := m.Stream(t.Context(), modeltest.ChatRequest(), modeltest.Collect(&got))
	var te *types.ThrottlingException
	require.ErrorAs(t, err, &te)
	assert.Equal(t, []string{"one"}, got)
	assert.Len(t, fake.Requests(), 1)
}

func TestStreamTimeout(t *testing.T) {
	m, _ := newModel(t, fakebedrock.Script{Deltas: []string{"a"}, Hang: true}, func(c *bedrock.Config) { c.Timeout = 200 * time.Millisecond })

	start := time.Now()
	_, err := m.Stream(t.Context(), modeltest.ChatRequest(), modeltest.Collect(new([]string)))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NotErrorIs(t, err, context.Canceled)
	assert.Less(t, time.Since(start), 3*time.Second)
}

func TestStreamPaced(t *testing.T) {
	m, _ := newModel(t, fakebedrock.Script{Deltas: []string{"a", "b", "c"}, Pace: 30 * time.Millisecond}, nil)

	var at []time.Time
	_, err := m.Stream(t.Context(), modeltest.ChatRequest(), func(string) error { at = append(at, time.Now()); return nil })
	require.NoError(t, err)
	require.Len(t, at, 3)
	assert.GreaterOrEqual(t, at[2].Sub(at[0]), 50*time.Millisecond, "tokens come as the fake sends them")
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

func TestStreamExceptionBeforeTheFirstTokenIsRetried(t *testing.T) {
	m, fake := newModel(t, fakebedrock.Script{Deltas: []string{"a", "b"}}, nil)
	fake.Push(fakebedrock.Script{Deltas: []string{"x"}, Exception: &fakebedrock.Exception{After: 0, Type: "serviceUnavailableException", Message: "busy"}})

	var got []string
	_, err := m.Stream(t.Context(), modeltest.ChatRequest(), modeltest.Collect(&got))
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, got)
	assert.Len(t, fake.Requests(), 2)
}

func TestStreamModelErrorBeforeTheFirstTokenIsNotRetried(t *testing.T) {
	m, fake := newModel(t, fakebedrock.Script{Exception: &fakebedrock.Exception{Type: "validationException", Message: "bad input"}}, nil)

	_, err := m.Stream(t.Context(), modeltest.ChatRequest(), modeltest.Collect(new([]string)))
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
	_, err = m.Stream(t.Context(), modeltest.ChatRequest(), modeltest.Collect(&got))
	require.NoError(t, err)
	assert.Equal(t, []string{"hi"}, got)
	var body struct {
		InferenceConfig json.RawMessage `json:"inferenceConfig"`
	}
	require.NoError(t, json.Unmarshal(fake.Requests()[0].Body, &body))
	assert.Nil(t, body.InferenceConfig, "no inference settings: the model's defaults")
}

func TestStreamCutIsAnError(t *testing.T) {
	m, fake := newModel(t, fakebedrock.Script{Deltas: []string{"a", "b"}, Hang: true}, nil)

	var got []string
	_, err := m.Stream(t.Context(), modeltest.ChatRequest(), func(p string) error {
		got = append(got, p)
		if len(got) == 2 {
			go fake.Close() // the endpoint goes away mid-answer
		}
		return nil
	})
	require.Error(t, err)
	assert.Equal(t, []string{"a", "b"}, got)
}

// TestWire runs the cases every model on a wire runs (modeltest), in
// Bedrock's words.
func TestWire(t *testing.T) {
	start := func(t *testing.T, def fakebedrock.Script, edit func(*bedrock.Config)) (ports.ChatModel, *fakebedrock.Server, modeltest.Fake) {
		t.Helper()
		m, fake := newModel(t, def, edit)
		return m, fake, modeltest.FakeOf(fake, func(r fakebedrock.Request) modeltest.Call {
			return modeltest.Call{Op: r.Op, Model: r.ModelID, Header: r.Header, Body: r.Body, ClientGone: r.ClientGone}
		})
	}
	modeltest.Run(t, modeltest.Wire{
		ChatModel: chatModel, SummaryModel: summaryModel, EscalationModel: escalationModel, StreamOp: "converse-stream", CompleteOp: "converse",
		Answering: func(t *testing.T, deltas []string, pace time.Duration, hang bool) (ports.ChatModel, modeltest.Fake) {
			t.Helper()
			m, _, f := start(t, fakebedrock.Script{Deltas: deltas, Pace: pace, Hang: hang}, nil)
			return m, f
		},
		Counting: func(t *testing.T, deltas []string, u ports.Usage) (ports.ChatModel, modeltest.Fake) {
			t.Helper()
			m, _, f := start(t, fakebedrock.Script{Deltas: deltas, Usage: fakebedrock.Usage{InputTokens: u.InputTokens, OutputTokens: u.OutputTokens}}, nil)
			return m, f
		},
		Unset: func(t *testing.T, text string) (ports.ChatModel, modeltest.Fake) {
			t.Helper()
			m, _, f := start(t, fakebedrock.Script{Text: text}, func(c *bedrock.Config) {
				c.MaxTokens = 0
				c.Temperature = nil
			})
			return m, f
		},
		CheckChat: func(t *testing.T, h http.Header) {
			t.Helper()
			assert.Contains(t, h.Get("Authorization"), "AKIDEXAMPLE", "the request is signed")
		},
		Refused: func(t *testing.T, deltas []string) (ports.ChatModel, modeltest.Fake) {
			t.Helper()
			m, fake, f := start(t, fakebedrock.Script{Deltas: deltas}, nil)
			fake.Push(fakebedrock.Script{HTTPError: fakebedrock.ThrottlingError()}, fakebedrock.Script{HTTPError: fakebedrock.ServerError()})
			return m, f
		},
		Summarizing: func(t *testing.T, text string, u ports.Usage) (ports.ChatModel, modeltest.Fake) {
			t.Helper()
			m, fake, f := start(t, fakebedrock.Script{}, nil)
			fake.Push(fakebedrock.Script{Text: text, Usage: fakebedrock.Usage{InputTokens: u.InputTokens, OutputTokens: u.OutputTokens}})
			return m, f
		},
		ChatOnly: func(t *testing.T) (ports.ChatModel, modeltest.Fake) {
			t.Helper()
			m, _, f := start(t, fakebedrock.Script{Text: "ok"}, func(c *bedrock.Config) { c.SummaryModelID, c.EscalationModelID = "", "" })
			return m, f
		},
		Stops: map[string]ports.StopReason{
			"end_turn":                      ports.StopEndTurn,
			"stop_sequence":                 ports.StopEndTurn,
			"max_tokens":                    ports.StopMaxTokens,
			"model_context_window_exceeded": ports.StopMaxTokens,
			"guardrail_intervened":          ports.StopGuardrailIntervened,
			"content_filtered":              ports.StopContentFiltered,
			"tool_use":                      ports.StopEndTurn,
		},
		Stopping: func(t *testing.T, stop string) ports.ChatModel {
			t.Helper()
			m, _ := newModel(t, fakebedrock.Script{Deltas: []string{"Sorry", ", I"}, Stop: stop}, nil)
			return m
		},
		Messages: func(t *testing.T, body []byte) []modeltest.Message {
			t.Helper()
			var b struct {
				System   []json.RawMessage `json:"system"`
				Messages []struct {
					Role    string `json:"role"`
					Content []struct {
						Text string `json:"text"`
					} `json:"content"`
				} `json:"messages"`
			}
			require.NoError(t, json.Unmarshal(body, &b))
			assert.Empty(t, b.System, "no system prompt and null data: no system block")
			var out []modeltest.Message
			for _, m := range b.Messages {
				require.Len(t, m.Content, 1)
				out = append(out, modeltest.Message{Role: m.Role, Text: m.Content[0].Text})
			}
			return out
		},
	})
}
