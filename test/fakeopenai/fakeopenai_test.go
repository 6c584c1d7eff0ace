package fakeopenai_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/test/fakeopenai"
)

func post(t *testing.T, ctx context.Context, url, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/chat/completions", strings.NewReader(body))
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, string(b)
}

func TestStreamEvents(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Script{Deltas: []string{"Hel", "lo <b>"}, Finish: "length", Usage: fakeopenai.Usage{PromptTokens: 3, CompletionTokens: 2}})
	defer fake.Close()

	status, h, body := post(t, t.Context(), fake.URL, `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`)
	require.Equal(t, http.StatusOK, status)
	assert.Equal(t, "text/event-stream", h.Get("Content-Type"))
	want := "data: " + `{"choices":[{"delta":{"content":"","role":"assistant"},"finish_reason":null,"index":0}],"created":1764770400,"id":"chatcmpl-fake","model":"m","object":"chat.completion.chunk"}` + "\n\n" +
		"data: " + `{"choices":[{"delta":{"content":"Hel"},"finish_reason":null,"index":0}],"created":1764770400,"id":"chatcmpl-fake","model":"m","object":"chat.completion.chunk"}` + "\n\n" +
		"data: " + `{"choices":[{"delta":{"content":"lo <b>"},"finish_reason":null,"index":0}],"created":1764770400,"id":"chatcmpl-fake","model":"m","object":"chat.completion.chunk"}` + "\n\n" +
		"data: " + `{"choices":[{"delta":{},"finish_reason":"length","index":0}],"created":1764770400,"id":"chatcmpl-fake","model":"m","object":"chat.completion.chunk"}` + "\n\n" +
		"data: " + `{"choices":[],"created":1764770400,"id":"chatcmpl-fake","model":"m","object":"chat.completion.chunk","usage":{"completion_tokens":2,"prompt_tokens":3,"total_tokens":5}}` + "\n\n" +
		"data: [DONE]\n\n"
	assert.Equal(t, want, body)

	reqs := fake.Requests()
	require.Len(t, reqs, 1)
	assert.Equal(t, "chat-stream", reqs[0].Op)
	assert.Equal(t, "m", reqs[0].Model)
	assert.True(t, reqs[0].StreamOptions)
	assert.True(t, reqs[0].Ended)
	assert.False(t, reqs[0].ClientGone)
}

func TestStreamWithoutUsageAsked(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Script{Text: "Hi"})
	defer fake.Close()
	_, _, body := post(t, t.Context(), fake.URL, `{"model":"m","stream":true}`)
	assert.NotContains(t, body, "usage")
	assert.True(t, strings.HasSuffix(body, `"finish_reason":"stop","index":0}],"created":1764770400,"id":"chatcmpl-fake","model":"m","object":"chat.completion.chunk"}`+"\n\ndata: [DONE]\n\n"), body)
}

func TestStreamWire(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Script{Text: "Hi", Wire: fakeopenai.Wire{CRLF: true, KeepAlive: true, UsageChoicesNull: true, NoSpace: true, NoDone: true}})
	defer fake.Close()
	_, _, body := post(t, t.Context(), fake.URL, `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`)
	assert.True(t, strings.HasPrefix(body, ": keep-alive\r\n\r\ndata:{"), body)
	assert.Contains(t, body, `data:{"choices":null,`)
	assert.NotContains(t, body, "[DONE]")
	assert.NotContains(t, strings.ReplaceAll(body, "\r\n", ""), "\n", "every line ends with CRLF")
}

func TestCompletion(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Script{Deltas: []string{"CONT", "INUE"}})
	defer fake.Close()
	status, _, body := post(t, t.Context(), fake.URL, `{"model":"judge","messages":[]}`)
	require.Equal(t, http.StatusOK, status)
	var out struct {
		Choices []struct {
			Message      struct{ Role, Content string }
			FinishReason string `json:"finish_reason"`
		}
		Usage struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
		}
	}
	require.NoError(t, json.Unmarshal([]byte(body), &out))
	require.Len(t, out.Choices, 1)
	assert.Equal(t, "CONTINUE", out.Choices[0].Message.Content)
	assert.Equal(t, "stop", out.Choices[0].FinishReason)
	assert.Equal(t, 2, out.Usage.CompletionTokens)
	assert.Equal(t, "chat", fake.Requests()[0].Op)
}

func TestQueueThrottleAndRejection(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Script{Text: "default"})
	defer fake.Close()
	fake.Push(fakeopenai.Script{Text: "queued"})
	fake.Throttle(1)

	status, _, body := post(t, t.Context(), fake.URL, `{"model":"m"}`)
	assert.Equal(t, http.StatusTooManyRequests, status)
	assert.Contains(t, body, "rate_limit_exceeded")
	_, _, body = post(t, t.Context(), fake.URL, `{"model":"m"}`)
	assert.Contains(t, body, "queued")
	_, _, body = post(t, t.Context(), fake.URL, `{"model":"m"}`)
	assert.Contains(t, body, "default")

	fake.RejectStreamOptions(http.StatusUnprocessableEntity)
	status, _, body = post(t, t.Context(), fake.URL, `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`)
	assert.Equal(t, http.StatusUnprocessableEntity, status)
	assert.Contains(t, body, "stream_options")
	status, _, _ = post(t, t.Context(), fake.URL, `{"model":"m","stream":true}`)
	assert.Equal(t, http.StatusOK, status, "without the field the call is answered")

	status, _, _ = post(t, t.Context(), fake.URL, `{not json`)
	assert.Equal(t, http.StatusBadRequest, status)
}

func TestClientGone(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Script{Deltas: []string{"a"}, Hang: true})
	defer fake.Close()
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, fake.URL+"/chat/completions", strings.NewReader(`{"model":"m","stream":true}`))
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	buf := make([]byte, 10)
	_, err = resp.Body.Read(buf) // the stream started
	require.NoError(t, err)
	cancel()
	_ = resp.Body.Close()

	wctx, wcancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer wcancel()
	r, err := fake.WaitEnded(wctx, 0)
	require.NoError(t, err)
	assert.True(t, r.ClientGone)
}
