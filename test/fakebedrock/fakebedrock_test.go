package fakebedrock_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/test/fakebedrock"
)

// frame is one decoded event-stream message.
type frame struct {
	messageType, typ, contentType, payload string
}

func post(t *testing.T, ctx context.Context, url, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	return resp
}

func readFrames(t *testing.T, r io.Reader) []frame {
	t.Helper()
	dec := eventstream.NewDecoder()
	var out []frame
	for {
		msg, err := dec.Decode(r, nil)
		if errors.Is(err, io.EOF) {
			return out
		}
		require.NoError(t, err)
		f := frame{messageType: msg.Headers.Get(":message-type").String(), payload: string(msg.Payload)}
		if v := msg.Headers.Get(":event-type"); v != nil {
			f.typ = v.String()
		}
		if v := msg.Headers.Get(":exception-type"); v != nil {
			f.typ = v.String()
		}
		if v := msg.Headers.Get(":content-type"); v != nil {
			f.contentType = v.String()
		}
		out = append(out, f)
	}
}

func TestConverseStreamFrames(t *testing.T) {
	fake := fakebedrock.New(fakebedrock.Script{Deltas: []string{"Hel", "lo"}, Stop: "max_tokens", Usage: fakebedrock.Usage{InputTokens: 3, OutputTokens: 2}})
	defer fake.Close()

	resp := post(t, t.Context(), fake.URL+"/model/m%3A0/converse-stream", `{"messages":[]}`)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "application/vnd.amazon.eventstream", resp.Header.Get("Content-Type"))
	frames := readFrames(t, resp.Body)
	want := []frame{
		{"event", "messageStart", "application/json", `{"role":"assistant"}`},
		{"event", "contentBlockDelta", "application/json", `{"contentBlockIndex":0,"delta":{"text":"Hel"}}`},
		{"event", "contentBlockDelta", "application/json", `{"contentBlockIndex":0,"delta":{"text":"lo"}}`},
		{"event", "contentBlockStop", "application/json", `{"contentBlockIndex":0}`},
		{"event", "messageStop", "application/json", `{"stopReason":"max_tokens"}`},
		{"event", "metadata", "application/json", `{"metrics":{"latencyMs":1},"usage":{"inputTokens":3,"outputTokens":2,"totalTokens":5}}`},
	}
	assert.Equal(t, want, frames)

	reqs := fake.Requests()
	require.Len(t, reqs, 1)
	assert.Equal(t, "converse-stream", reqs[0].Op)
	assert.Equal(t, "m:0", reqs[0].ModelID)
	assert.JSONEq(t, `{"messages":[]}`, string(reqs[0].Body))
	ended, err := fake.WaitEnded(t.Context(), 0)
	require.NoError(t, err)
	assert.False(t, ended.ClientGone)
}

func TestQueueThenDefault(t *testing.T) {
	fake := fakebedrock.New(fakebedrock.Script{Text: "default"})
	defer fake.Close()
	fake.Push(
		fakebedrock.Script{Deltas: []string{"a"}, Exception: &fakebedrock.Exception{After: 1, Type: "modelStreamErrorException", Message: "boom"}},
	)
	fake.Throttle(1)

	resp := post(t, t.Context(), fake.URL+"/model/m/converse-stream", `{}`)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.Equal(t, "ThrottlingException", resp.Header.Get("X-Amzn-ErrorType"))
	assert.Contains(t, string(body), "Too many requests")

	resp = post(t, t.Context(), fake.URL+"/model/m/converse-stream", `{}`)
	frames := readFrames(t, resp.Body)
	resp.Body.Close()
	require.Len(t, frames, 3)
	assert.Equal(t, frame{"exception", "modelStreamErrorException", "application/json", `{"message":"boom"}`}, frames[2])

	resp = post(t, t.Context(), fake.URL+"/model/m/converse", `{}`)
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.JSONEq(t, `{"output":{"message":{"role":"assistant","content":[{"text":"default"}]}},"stopReason":"end_turn",
		"usage":{"inputTokens":1,"outputTokens":1,"totalTokens":2},"metrics":{"latencyMs":1}}`, string(body))
	assert.Len(t, fake.Requests(), 3)
}

func TestClientGone(t *testing.T) {
	fake := fakebedrock.New(fakebedrock.Script{Deltas: []string{"a"}, Hang: true})
	defer fake.Close()

	ctx, cancel := context.WithCancel(t.Context())
	resp := post(t, ctx, fake.URL+"/model/m/converse-stream", `{}`)
	dec := eventstream.NewDecoder()
	_, err := dec.Decode(resp.Body, nil) // messageStart
	require.NoError(t, err)
	cancel()
	resp.Body.Close()

	wctx, wcancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer wcancel()
	req, err := fake.WaitEnded(wctx, 0)
	require.NoError(t, err)
	assert.True(t, req.ClientGone)
}

func TestCloseEndsHangingCalls(t *testing.T) {
	fake := fakebedrock.New(fakebedrock.Script{Hang: true})
	resp := post(t, t.Context(), fake.URL+"/model/m/converse-stream", `{}`)
	defer resp.Body.Close()

	done := make(chan struct{})
	go func() { fake.Close(); fake.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked on a hanging call")
	}
}

func TestLightKeepsNoHeaderOrBody(t *testing.T) {
	fake := fakebedrock.New(fakebedrock.Script{Text: "ok"})
	defer fake.Close()

	resp := post(t, t.Context(), fake.URL+"/model/m/converse", `{"first":true}`)
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	fake.Light()
	resp = post(t, t.Context(), fake.URL+"/model/m/converse", `{"second":true}`)
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()

	reqs := fake.Requests()
	require.Len(t, reqs, 2)
	assert.JSONEq(t, `{"first":true}`, string(reqs[0].Body), "calls before Light keep their body")
	assert.NotEmpty(t, reqs[0].Header)
	assert.Nil(t, reqs[1].Body)
	assert.Nil(t, reqs[1].Header)
	assert.Equal(t, "converse", reqs[1].Op)
	assert.Equal(t, "m", reqs[1].ModelID)
	r, err := fake.WaitEnded(t.Context(), 1)
	require.NoError(t, err)
	assert.True(t, r.Ended)
}
