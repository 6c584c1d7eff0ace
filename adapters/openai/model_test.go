package openai_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/internal/modeltest"
	"github.com/wsserver/wsserver/adapters/openai"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/test/fakeopenai"
)

const (
	chatModel       = "meta-llama/Llama-3.1-8B-Instruct"
	summaryModel    = "qwen2.5:7b"
	escalationModel = "llama3.2:1b"
	apiKey          = "sk-test-0123456789abcdef"
)

// newModel starts a fake answering def and a Model on it.
func newModel(t testing.TB, def fakeopenai.Script, edit func(*openai.Config)) (*openai.Model, *fakeopenai.Server) {
	t.Helper()
	fake := fakeopenai.New(def)
	t.Cleanup(fake.Close)
	temp := float32(0.25)
	cfg := openai.Config{
		BaseURL:           fake.URL,
		APIKey:            apiKey,
		ChatModelID:       chatModel,
		SummaryModelID:    summaryModel,
		EscalationModelID: escalationModel,
		MaxTokens:         512,
		Temperature:       &temp,
		MaxBackoff:        10 * time.Millisecond,
	}
	if edit != nil {
		edit(&cfg)
	}
	m, err := openai.New(cfg)
	require.NoError(t, err)
	t.Cleanup(m.Close)
	return m, fake
}

func TestStreamWithoutKeySendsNoAuthorization(t *testing.T) {
	m, fake := newModel(t, fakeopenai.Script{Text: "hi"}, func(c *openai.Config) { c.APIKey = "" })
	_, err := m.Stream(t.Context(), modeltest.ChatRequest(), modeltest.Collect(new([]string)))
	require.NoError(t, err)
	_, ok := fake.Requests()[0].Header["Authorization"]
	assert.False(t, ok, "local servers need no key: none is sent")
}

func TestStreamWireVariants(t *testing.T) {
	deltas := []string{"Hello", " there", "!"}
	for name, wire := range map[string]fakeopenai.Wire{
		"plain":                    {},
		"CRLF line endings":        {CRLF: true},
		"keep-alive comments":      {KeepAlive: true},
		"usage chunk choices null": {UsageChoicesNull: true},
		"usage with finish_reason": {UsageWithFinish: true},
		"data: without space":      {NoSpace: true},
		"no [DONE] after finish":   {NoDone: true},
		"everything at once":       {CRLF: true, KeepAlive: true, UsageChoicesNull: true, NoSpace: true},
	} {
		t.Run(name, func(t *testing.T) {
			m, _ := newModel(t, fakeopenai.Script{Deltas: deltas, Usage: fakeopenai.Usage{PromptTokens: 19, CompletionTokens: 3}, Wire: wire}, nil)
			var got []string
			reply, err := m.Stream(t.Context(), modeltest.ChatRequest(), modeltest.Collect(&got))
			require.NoError(t, err)
			assert.Equal(t, deltas, got)
			assert.Equal(t, ports.StopEndTurn, reply.Stop)
			assert.Equal(t, ports.Usage{InputTokens: 19, OutputTokens: 3}, reply.Usage)
		})
	}
}

// TestStreamRecordedAnswers replays the streams of servers in the wild,
// as they write them (testdata/*.sse): each answers "Hello there!" with
// 19 prompt and 3 completion tokens.
func TestStreamRecordedAnswers(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.sse"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			require.NoError(t, err)
			m, _ := newModel(t, fakeopenai.Script{Raw: string(raw)}, nil)
			var got []string
			reply, err := m.Stream(t.Context(), modeltest.ChatRequest(), modeltest.Collect(&got))
			require.NoError(t, err)
			assert.Equal(t, "Hello there!", strings.Join(got, ""))
			assert.Equal(t, ports.StopEndTurn, reply.Stop)
			assert.Equal(t, ports.Usage{InputTokens: 19, OutputTokens: 3}, reply.Usage)
		})
	}
}

func TestStreamOptionsRefused(t *testing.T) {
	for _, status := range []int{http.StatusBadRequest, http.StatusUnprocessableEntity} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			m, fake := newModel(t, fakeopenai.Script{Deltas: []string{"a", "b"}}, nil)
			fake.RejectStreamOptions(status)

			var got []string
			reply, err := m.Stream(t.Context(), modeltest.ChatRequest(), modeltest.Collect(&got))
			require.NoError(t, err)
			assert.Equal(t, []string{"a", "b"}, got)
			assert.Equal(t, ports.Usage{OutputTokens: 2}, reply.Usage, "no usage chunk: the chunks are counted")
			reqs := fake.Requests()
			require.Len(t, reqs, 2, "refused, then asked again without stream_options")
			assert.True(t, reqs[0].StreamOptions)
			assert.False(t, reqs[1].StreamOptions)

			_, err = m.Stream(t.Context(), modeltest.ChatRequest(), modeltest.Collect(new([]string)))
			require.NoError(t, err)
			reqs = fake.Requests()
			require.Len(t, reqs, 3, "remembered: the next stream asks once")
			assert.False(t, reqs[2].StreamOptions)
		})
	}
}

func TestStreamUsageOff(t *testing.T) {
	m, fake := newModel(t, fakeopenai.Script{Deltas: []string{"a", "b", "c"}}, func(c *openai.Config) { c.NoStreamUsage = true })
	reply, err := m.Stream(t.Context(), modeltest.ChatRequest(), modeltest.Collect(new([]string)))
	require.NoError(t, err)
	assert.Equal(t, ports.Usage{OutputTokens: 3}, reply.Usage)
	assert.NotContains(t, string(fake.Requests()[0].Body), "stream_options")
}

func TestStreamOtherBadRequestIsNotRetried(t *testing.T) {
	m, fake := newModel(t, fakeopenai.Script{HTTPError: &fakeopenai.HTTPError{Status: http.StatusBadRequest,
		Body: `{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","param":"messages"}}`}}, nil)
	_, err := m.Stream(t.Context(), modeltest.ChatRequest(), modeltest.Collect(new([]string)))
	var se *openai.StatusError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, http.StatusBadRequest, se.Status)
	assert.Contains(t, err.Error(), "maximum context length")
	assert.Len(t, fake.Requests(), 1)
}

func TestStreamRetriesACutBeforeTheFirstToken(t *testing.T) {
	m, fake := newModel(t, fakeopenai.Script{Deltas: []string{"a", "b"}}, nil)
	fake.Push(fakeopenai.Script{Deltas: []string{"x"}, Cut: &fakeopenai.Cut{After: 0}})

	var got []string
	_, err := m.Stream(t.Context(), modeltest.ChatRequest(), modeltest.Collect(&got))
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, got)
	assert.Len(t, fake.Requests(), 2)
}

func TestStreamRetriesAResetConnection(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Script{Deltas: []string{"a", "b"}})
	t.Cleanup(fake.Close)
	// A front that resets the first connection, as a restarting server or
	// a proxy does, then lets the calls through.
	var resets atomic.Int32
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if resets.Add(1) == 1 {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				if tc, ok := conn.(interface{ SetLinger(int) error }); ok {
					_ = tc.SetLinger(0) // close with RST
				}
				_ = conn.Close()
			}
			return
		}
		proxy(t, w, r, fake.URL)
	}))
	t.Cleanup(front.Close)
	m, err := openai.New(openai.Config{BaseURL: front.URL + "/v1", ChatModelID: chatModel, MaxBackoff: time.Millisecond})
	require.NoError(t, err)

	var got []string
	_, err = m.Stream(t.Context(), modeltest.ChatRequest(), modeltest.Collect(&got))
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, got)
	assert.Len(t, fake.Requests(), 1, "the reset call never reached the server; the retry did")
}

// proxy forwards r to base (a fake's URL) and copies the answer.
func proxy(t *testing.T, w http.ResponseWriter, r *http.Request, base string) {
	t.Helper()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		t.Error(err)
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, strings.TrimSuffix(base, "/v1")+r.URL.Path, bytes.NewReader(body))
	if err != nil {
		t.Error(err)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

func TestStreamGivesUpAfterMaxAttempts(t *testing.T) {
	m, fake := newModel(t, fakeopenai.Script{HTTPError: fakeopenai.ThrottlingError()}, func(c *openai.Config) { c.MaxAttempts = 2 })

	called := false
	_, err := m.Stream(t.Context(), modeltest.ChatRequest(), func(string) error { called = true; return nil })
	var se *openai.StatusError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, http.StatusTooManyRequests, se.Status)
	assert.Contains(t, err.Error(), "Rate limit reached")
	assert.False(t, called)
	assert.Len(t, fake.Requests(), 2)
}

func TestStreamHonoursRetryAfterUpToMaxBackoff(t *testing.T) {
	// Retry-After: 3600 would stall the test for an hour; MaxBackoff caps it.
	m, fake := newModel(t, fakeopenai.Script{Deltas: []string{"a"}}, func(c *openai.Config) { c.MaxBackoff = 20 * time.Millisecond })
	fake.Push(fakeopenai.Script{HTTPError: &fakeopenai.HTTPError{Status: http.StatusServiceUnavailable, RetryAfter: "3600"}})
	_, err := m.Stream(t.Context(), modeltest.ChatRequest(), modeltest.Collect(new([]string)))
	require.NoError(t, err)
	assert.Len(t, fake.Requests(), 2)
}

func TestStreamCutAfterTokens(t *testing.T) {
	for name, cut := range map[string]*fakeopenai.Cut{
		"connection dropped": {After: 2},
		"error event":        {After: 2, Error: &fakeopenai.APIError{Message: "the engine died", Type: "server_error"}},
	} {
		t.Run(name, func(t *testing.T) {
			m, fake := newModel(t, fakeopenai.Script{Deltas: []string{"one", " two", " three", " four"}, Cut: cut}, nil)
			var got []string
			_, err := m.Stream(t.Context(), modeltest.ChatRequest(), modeltest.Collect(&got))
			require.Error(t, err)
			assert.True(t, strings.HasPrefix(err.Error(), "openai: chat completion stream: "), err.Error())
			if cut.Error != nil {
				var se *openai.StreamError
				require.ErrorAs(t, err, &se)
				assert.Equal(t, "the engine died", se.Message)
			} else {
				assert.Contains(t, err.Error(), "the stream was cut")
			}
			assert.Equal(t, []string{"one", " two"}, got, "the tokens before the cut were given")
			assert.Len(t, fake.Requests(), 1, "nothing is retried once the stream started")
		})
	}
}

func TestStreamWithoutFinishIsAnError(t *testing.T) {
	raw := "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Half an\"}}]}\n\ndata: [DONE]\n\n"
	m, fake := newModel(t, fakeopenai.Script{Raw: raw}, func(c *openai.Config) { c.MaxAttempts = 1 })
	var got []string
	_, err := m.Stream(t.Context(), modeltest.ChatRequest(), modeltest.Collect(&got))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no finish_reason")
	assert.Equal(t, []string{"Half an"}, got)
	assert.Len(t, fake.Requests(), 1)
}

func TestStreamUnreadableChunk(t *testing.T) {
	m, _ := newModel(t, fakeopenai.Script{Raw: "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\ndata: {not json\n\n"}, nil)
	_, err := m.Stream(t.Context(), modeltest.ChatRequest(), modeltest.Collect(new([]string)))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "unreadable chunk")
}

func TestStreamLineTooLong(t *testing.T) {
	raw := "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" + strings.Repeat("a", openai.MaxLineBytes) + "\"}}]}\n\n"
	m, fake := newModel(t, fakeopenai.Script{Raw: raw}, nil)
	called := false
	_, err := m.Stream(t.Context(), modeltest.ChatRequest(), func(string) error { called = true; return nil })
	require.Error(t, err)
	assert.Contains(t, err.Error(), "larger than the adapter accepts")
	assert.False(t, called)
	assert.Len(t, fake.Requests(), 1, "a too large answer is not asked again")
}

func TestStreamServerIgnoringStream(t *testing.T) {
	// A server that answers a whole completion to a streamed request.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_, _ = io.WriteString(w, `{"choices":[{"index":0,"message":{"role":"assistant","content":"All at once."},"finish_reason":"length"}],"usage":{"prompt_tokens":7,"completion_tokens":3}}`)
	}))
	t.Cleanup(srv.Close)
	m, err := openai.New(openai.Config{BaseURL: srv.URL, ChatModelID: chatModel})
	require.NoError(t, err)
	var got []string
	reply, err := m.Stream(t.Context(), modeltest.ChatRequest(), modeltest.Collect(&got))
	require.NoError(t, err)
	assert.Equal(t, []string{"All at once."}, got)
	assert.Equal(t, ports.StopMaxTokens, reply.Stop)
	assert.Equal(t, ports.Usage{InputTokens: 7, OutputTokens: 3}, reply.Usage)
	assert.Empty(t, reply.Text)
}

func TestStreamTimeout(t *testing.T) {
	m, _ := newModel(t, fakeopenai.Script{Deltas: []string{"a"}, Hang: true}, func(c *openai.Config) { c.Timeout = 200 * time.Millisecond })
	_, err := m.Stream(t.Context(), modeltest.ChatRequest(), modeltest.Collect(new([]string)))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NotErrorIs(t, err, context.Canceled)
	assert.Contains(t, err.Error(), "no answer within 200ms")
}

func TestErrorsNeverCarryTheKey(t *testing.T) {
	// A server that echoes the key, as some proxies' 401 do.
	m, _ := newModel(t, fakeopenai.Script{HTTPError: &fakeopenai.HTTPError{Status: http.StatusUnauthorized,
		Body: `{"error":{"message":"Incorrect API key provided: ` + apiKey + `.","type":"invalid_request_error","code":"invalid_api_key"}}`}}, nil)
	var logs bytes.Buffer
	_, err := m.Stream(t.Context(), modeltest.ChatRequest(), modeltest.Collect(new([]string)))
	require.Error(t, err)
	assert.NotContains(t, err.Error(), apiKey)
	assert.Contains(t, err.Error(), "HTTP 401: Incorrect API key provided: [redacted].")

	m2, _ := newModel(t, fakeopenai.Script{Deltas: []string{"a"}, Cut: &fakeopenai.Cut{After: 1, Error: &fakeopenai.APIError{Message: "bad key " + apiKey}}},
		func(c *openai.Config) { c.Log = slog.New(slog.NewTextHandler(&logs, nil)) })
	_, err = m2.Stream(t.Context(), modeltest.ChatRequest(), modeltest.Collect(new([]string)))
	require.Error(t, err)
	assert.NotContains(t, err.Error(), apiKey)
	assert.Contains(t, logs.String(), "stream failed after its first token")
	assert.NotContains(t, logs.String(), apiKey)
}

func TestCompleteFinishLength(t *testing.T) {
	m, _ := newModel(t, fakeopenai.Script{Text: "The user", Finish: "length"}, nil)
	reply, err := m.Complete(t.Context(), ports.ChatRequest{Purpose: ports.PurposeSummary})
	require.NoError(t, err)
	assert.Equal(t, ports.StopMaxTokens, reply.Stop)
}

func TestCompleteUnreadable(t *testing.T) {
	for name, body := range map[string]string{
		"not JSON":   `<html>Bad gateway</html>`,
		"no choices": `{"choices":[]}`,
		"error":      `{"error":{"message":"model not loaded"}}`,
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, body)
			}))
			t.Cleanup(srv.Close)
			m, err := openai.New(openai.Config{BaseURL: srv.URL, ChatModelID: chatModel})
			require.NoError(t, err)
			_, err = m.Complete(t.Context(), ports.ChatRequest{Purpose: ports.PurposeSummary})
			require.Error(t, err)
			assert.True(t, strings.HasPrefix(err.Error(), "openai: chat completion: "), err.Error())
		})
	}
}

func TestNewValidates(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg  openai.Config
		want string
	}{
		"no base URL":      {openai.Config{ChatModelID: chatModel}, "OPENAI_BASE_URL"},
		"base URL no host": {openai.Config{BaseURL: "http:///v1", ChatModelID: chatModel}, "OPENAI_BASE_URL"},
		"base URL scheme":  {openai.Config{BaseURL: "ftp://h/v1", ChatModelID: chatModel}, "OPENAI_BASE_URL"},
		"no chat model":    {openai.Config{BaseURL: "http://localhost:11434/v1"}, "OPENAI_MODEL_ID_CHAT"},
		"negative max":     {openai.Config{BaseURL: "http://h/v1", ChatModelID: chatModel, MaxTokens: -1}, "max tokens"},
		"negative time":    {openai.Config{BaseURL: "http://h/v1", ChatModelID: chatModel, Timeout: -1}, "timeout"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := openai.New(tc.cfg)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.True(t, strings.HasPrefix(err.Error(), "openai: "))
		})
	}
}

func TestBaseURLWithTrailingSlash(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Script{Text: "ok"})
	t.Cleanup(fake.Close)
	m, err := openai.New(openai.Config{BaseURL: fake.URL + "/", ChatModelID: chatModel})
	require.NoError(t, err)
	reply, err := m.Complete(t.Context(), ports.ChatRequest{})
	require.NoError(t, err)
	assert.Equal(t, "ok", reply.Text)
}

// TestWire runs the cases every model on a wire runs (modeltest), in the
// words of an OpenAI-compatible endpoint.
func TestWire(t *testing.T) {
	start := func(t *testing.T, def fakeopenai.Script, edit func(*openai.Config)) (ports.ChatModel, *fakeopenai.Server, modeltest.Fake) {
		t.Helper()
		m, fake := newModel(t, def, edit)
		return m, fake, modeltest.FakeOf(fake, func(r fakeopenai.Request) modeltest.Call {
			return modeltest.Call{Op: r.Op, Model: r.Model, Header: r.Header, Body: r.Body, ClientGone: r.ClientGone}
		})
	}
	modeltest.Run(t, modeltest.Wire{
		ChatModel: chatModel, SummaryModel: summaryModel, EscalationModel: escalationModel, StreamOp: "chat-stream", CompleteOp: "chat",
		Answering: func(t *testing.T, deltas []string, pace time.Duration, hang bool) (ports.ChatModel, modeltest.Fake) {
			t.Helper()
			m, _, f := start(t, fakeopenai.Script{Deltas: deltas, Pace: pace, Hang: hang}, nil)
			return m, f
		},
		Counting: func(t *testing.T, deltas []string, u ports.Usage) (ports.ChatModel, modeltest.Fake) {
			t.Helper()
			m, _, f := start(t, fakeopenai.Script{Deltas: deltas, Usage: fakeopenai.Usage{PromptTokens: u.InputTokens, CompletionTokens: u.OutputTokens}}, nil)
			return m, f
		},
		Unset: func(t *testing.T, text string) (ports.ChatModel, modeltest.Fake) {
			t.Helper()
			m, _, f := start(t, fakeopenai.Script{Text: text}, func(c *openai.Config) {
				c.MaxTokens = 0
				c.Temperature = nil
			})
			return m, f
		},
		CheckChat: func(t *testing.T, h http.Header) {
			t.Helper()
			assert.Equal(t, "Bearer "+apiKey, h.Get("Authorization"))
			assert.Equal(t, "application/json", h.Get("Content-Type"))
		},
		Refused: func(t *testing.T, deltas []string) (ports.ChatModel, modeltest.Fake) {
			t.Helper()
			m, fake, f := start(t, fakeopenai.Script{Deltas: deltas}, nil)
			fake.Push(fakeopenai.Script{HTTPError: fakeopenai.ThrottlingError()}, fakeopenai.Script{HTTPError: fakeopenai.ServerError()})
			return m, f
		},
		Summarizing: func(t *testing.T, text string, u ports.Usage) (ports.ChatModel, modeltest.Fake) {
			t.Helper()
			m, fake, f := start(t, fakeopenai.Script{}, nil)
			fake.Push(fakeopenai.Script{Text: text, Usage: fakeopenai.Usage{PromptTokens: u.InputTokens, CompletionTokens: u.OutputTokens}})
			return m, f
		},
		ChatOnly: func(t *testing.T) (ports.ChatModel, modeltest.Fake) {
			t.Helper()
			m, _, f := start(t, fakeopenai.Script{Text: "ok"}, func(c *openai.Config) { c.SummaryModelID, c.EscalationModelID = "", "" })
			return m, f
		},
		Stops: map[string]ports.StopReason{
			"stop":           ports.StopEndTurn,
			"length":         ports.StopMaxTokens,
			"content_filter": ports.StopGuardrailIntervened,
			"tool_calls":     ports.StopEndTurn,
			"eos":            ports.StopEndTurn,
		},
		Stopping: func(t *testing.T, finish string) ports.ChatModel {
			t.Helper()
			m, _ := newModel(t, fakeopenai.Script{Deltas: []string{"Sorry", ", I"}, Finish: finish}, nil)
			return m
		},
		Messages: func(t *testing.T, body []byte) []modeltest.Message {
			t.Helper()
			var b struct {
				Messages []struct {
					Role    string `json:"role"`
					Content string `json:"content"`
				} `json:"messages"`
			}
			require.NoError(t, json.Unmarshal(body, &b))
			var out []modeltest.Message
			for _, m := range b.Messages {
				out = append(out, modeltest.Message{Role: m.Role, Text: m.Content})
			}
			return out
		},
	})
}
