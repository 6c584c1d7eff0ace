package web_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/local"
	"github.com/wsserver/wsserver/adapters/memory"
	"github.com/wsserver/wsserver/adapters/metrics"
	"github.com/wsserver/wsserver/adapters/socket"
	"github.com/wsserver/wsserver/adapters/web"
	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/core/session"
	"github.com/wsserver/wsserver/ports"
)

const (
	apiKey     = "test-api-key"
	csrfSecret = "test-csrf-secret"
)

// apiServer is one instance serving the thread API, on the default
// adapters: memory threads and lock, the local model with no delay.
type apiServer struct {
	url   string
	conv  *conversation.Conversation
	store *memory.Threads
}

// newAPIConversation runs on store; nil means new memory threads.
func newAPIConversation(t *testing.T, store ports.ThreadStore) (*conversation.Conversation, *memory.Threads) {
	t.Helper()
	a, err := local.LoadAppdata("")
	require.NoError(t, err)
	model, err := local.NewModel(local.ModelConfig{})
	require.NoError(t, err)
	guard, err := local.NewGuardrail(local.GuardrailConfig{Rules: a.Guardrail})
	require.NoError(t, err)
	esc, err := local.NewEscalation(a.Escalation)
	require.NoError(t, err)
	threads := memory.NewThreads(0)
	if store == nil {
		store = threads
	}
	conv, err := conversation.New(conversation.Config{
		Store: store, Lock: memory.NewLock(), Model: model, Guardrail: guard, Escalation: esc,
		SystemPrompt: a.SystemPrompt, SummaryPrompt: a.SummaryPrompt, MaxGuardrailRewrites: 2,
	})
	require.NoError(t, err)
	return conv, threads
}

// newAPIServer starts an instance with secret; conv nil makes its own
// conversation.
func newAPIServer(t *testing.T, secret string, conv *conversation.Conversation, store *memory.Threads) *apiServer {
	t.Helper()
	if conv == nil {
		conv, store = newAPIConversation(t, nil)
	}
	m := metrics.New()
	hub, err := session.NewHub(session.HubConfig{
		Broker: memory.NewBroker(), Presence: memory.NewPresence(), Encode: socket.Frame, Observer: m,
	})
	require.NoError(t, err)
	srv, err := web.New(web.Config{
		InstanceID:    "api-test",
		APIKey:        apiKey,
		HostAllowed:   func(h string) bool { return strings.HasPrefix(h, "127.0.0.1") },
		OriginAllowed: func(string) bool { return false },
		Hub:           hub,
		Chat:          conv,
		CSRFSecret:    secret,
		Metrics:       m,
		Sockets:       socket.Config{ReadLimit: 4096, CloseWait: time.Second},
	})
	require.NoError(t, err)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return &apiServer{url: hs.URL, conv: conv, store: store}
}

// token gets a CSRF token from the instance.
func (s *apiServer) token(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(s.url + "/api/csrf-token/")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var body struct {
		CSRFToken string `json:"csrfToken"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.NotEmpty(t, body.CSRFToken)
	return body.CSRFToken
}

type apiCall struct {
	path        string
	key         string // the Authorization header; empty for none
	csrf        string // the X-CSRFToken header; empty for none
	contentType string // "-" for none; empty means application/json
	body        string
	length      int64 // -1 hides the length (chunked); 0 takes the body's
}

// post makes c and returns the status and the decoded JSON body.
func (s *apiServer) post(t *testing.T, c apiCall) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.url+c.path, strings.NewReader(c.body))
	require.NoError(t, err)
	if c.length != 0 {
		req.ContentLength = c.length
	}
	if c.key != "" {
		req.Header.Set("Authorization", c.key)
	}
	if c.csrf != "" {
		req.Header.Set("X-CSRFToken", c.csrf)
	}
	switch c.contentType {
	case "":
		req.Header.Set("Content-Type", "application/json")
	case "-":
	default:
		req.Header.Set("Content-Type", c.contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, "application/json", strings.Split(resp.Header.Get("Content-Type"), ";")[0])
	assert.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
	var body map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	return resp.StatusCode, body
}

// errorCode returns the code of an error body.
func errorCode(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	code, _ := e["code"].(string)
	if msg, _ := e["message"].(string); code != "" && msg == "" {
		return code + " (no message)"
	}
	return code
}

// signedAt makes a token of secret issued at.
func signedAt(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	c, err := web.NewCSRF(web.CSRFConfig{Secret: secret, Now: func() time.Time { return at }})
	require.NoError(t, err)
	tok, err := c.Issue()
	require.NoError(t, err)
	return tok
}

func TestCSRFTokenEndpoint(t *testing.T) {
	s := newAPIServer(t, csrfSecret, nil, nil)

	for _, tc := range []struct {
		name   string
		header http.Header
		secure bool
	}{
		{"plain HTTP", nil, false},
		{"TLS ended at the ALB", http.Header{"X-Forwarded-Proto": {"https"}}, true},
		{"plain HTTP at the ALB", http.Header{"X-Forwarded-Proto": {"http"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, s.url+"/api/csrf-token/", nil)
			require.NoError(t, err)
			for k, v := range tc.header {
				req.Header[k] = v
			}
			// No API key: clients ask for a token first.
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
			var body struct {
				CSRFToken string `json:"csrfToken"`
			}
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))

			require.Len(t, resp.Cookies(), 1)
			ck := resp.Cookies()[0]
			assert.Equal(t, "csrftoken", ck.Name)
			assert.Equal(t, body.CSRFToken, ck.Value)
			assert.Equal(t, "/", ck.Path)
			assert.Equal(t, http.SameSiteLaxMode, ck.SameSite)
			assert.False(t, ck.HttpOnly, "browser code reads the cookie")
			assert.Equal(t, tc.secure, ck.Secure)
			assert.Equal(t, int((12 * time.Hour).Seconds()), ck.MaxAge)

			c, err := web.NewCSRF(web.CSRFConfig{Secret: csrfSecret})
			require.NoError(t, err)
			require.NoError(t, c.Check(body.CSRFToken))
		})
	}
}

func TestAPIRefusals(t *testing.T) {
	s := newAPIServer(t, csrfSecret, nil, nil)
	good := s.token(t)
	tampered := []byte(good)
	tampered[10] = map[bool]byte{true: 'B', false: 'A'}[good[10] == 'A']
	unknown := `{"thread_id":"no-such-thread"}`
	tooBig := `{"thread_id":"t","pad":"` + strings.Repeat("x", 1<<20) + `"}`

	tests := []struct {
		name   string
		call   apiCall
		status int
		code   string
	}{
		// The key first: 401 wins over everything.
		{"no key, no token", apiCall{body: unknown}, 401, "unauthorized"},
		{"no key", apiCall{csrf: good, body: unknown}, 401, "unauthorized"},
		{"wrong key", apiCall{key: "nope", csrf: good, body: unknown}, 401, "unauthorized"},
		{"wrong bearer key", apiCall{key: "Bearer nope", csrf: good, body: unknown}, 401, "unauthorized"},
		{"wrong key, bad body", apiCall{key: "nope", body: `{`}, 401, "unauthorized"},

		// Then the CSRF token: 403.
		{"no token", apiCall{key: apiKey, body: unknown}, 403, "csrf_failed"},
		{"no token, bad body", apiCall{key: apiKey, body: `{`}, 403, "csrf_failed"},
		{"tampered token", apiCall{key: apiKey, csrf: string(tampered), body: unknown}, 403, "csrf_failed"},
		{"expired token", apiCall{key: apiKey, csrf: signedAt(t, csrfSecret, time.Now().Add(-13*time.Hour)), body: unknown}, 403, "csrf_failed"},
		{"token from the future", apiCall{key: apiKey, csrf: signedAt(t, csrfSecret, time.Now().Add(time.Hour)), body: unknown}, 403, "csrf_failed"},
		{"token of another secret", apiCall{key: apiKey, csrf: signedAt(t, "another-secret", time.Now()), body: unknown}, 403, "csrf_failed"},
		{"garbage token", apiCall{key: apiKey, csrf: "not-a-token", body: unknown}, 403, "csrf_failed"},
		{"huge token", apiCall{key: apiKey, csrf: strings.Repeat("A", 4000), body: unknown}, 403, "csrf_failed"},

		// Then the body: 415, 413, 400.
		{"XML", apiCall{key: apiKey, csrf: good, contentType: "application/xml", body: unknown}, 415, "unsupported_media_type"},
		{"multipart", apiCall{key: apiKey, csrf: good, contentType: "multipart/form-data; boundary=x", body: unknown}, 415, "unsupported_media_type"},
		{"broken content type", apiCall{key: apiKey, csrf: good, contentType: "application/json; ===", body: unknown}, 415, "unsupported_media_type"},
		{"over 1 MiB", apiCall{key: apiKey, csrf: good, body: tooBig}, 413, "payload_too_large"},
		{"over 1 MiB, no length", apiCall{key: apiKey, csrf: good, body: tooBig, length: -1}, 413, "payload_too_large"},
		{"empty body", apiCall{key: apiKey, csrf: good, body: ""}, 400, "invalid_json"},
		{"bad JSON", apiCall{key: apiKey, csrf: good, body: `{"thread_id":`}, 400, "invalid_json"},
		{"trailing garbage", apiCall{key: apiKey, csrf: good, body: unknown + `x`}, 400, "invalid_json"},
		{"array", apiCall{key: apiKey, csrf: good, body: `["t"]`}, 400, "invalid_json"},
		{"string", apiCall{key: apiKey, csrf: good, body: `"t"`}, 400, "invalid_json"},
		{"null", apiCall{key: apiKey, csrf: good, body: `null`}, 400, "invalid_json"},
		{"no thread_id", apiCall{key: apiKey, csrf: good, body: `{}`}, 400, "invalid_request"},
		{"null thread_id", apiCall{key: apiKey, csrf: good, body: `{"thread_id":null}`}, 400, "invalid_request"},
		{"empty thread_id", apiCall{key: apiKey, csrf: good, body: `{"thread_id":""}`}, 400, "invalid_request"},
		{"blank thread_id", apiCall{key: apiKey, csrf: good, body: `{"thread_id":"   "}`}, 400, "invalid_request"},
		{"number thread_id", apiCall{key: apiKey, csrf: good, body: `{"thread_id":42}`}, 400, "invalid_request"},
		{"object thread_id", apiCall{key: apiKey, csrf: good, body: `{"thread_id":{"id":"t"}}`}, 400, "invalid_request"},
		{"thread_id with a slash", apiCall{key: apiKey, csrf: good, body: `{"thread_id":"a/b"}`}, 400, "invalid_request"},
		{"thread_id too long", apiCall{key: apiKey, csrf: good, body: `{"thread_id":"` + strings.Repeat("t", 129) + `"}`}, 400, "invalid_request"},

		// A valid call for a thread nobody started: 404.
		{"unknown thread", apiCall{key: apiKey, csrf: good, body: unknown}, 404, "thread_not_found"},
		{"bearer key", apiCall{key: "Bearer " + apiKey, csrf: good, body: unknown}, 404, "thread_not_found"},
		{"no content type", apiCall{key: apiKey, csrf: good, contentType: "-", body: unknown}, 404, "thread_not_found"},
		{"JSON with charset", apiCall{key: apiKey, csrf: good, contentType: "application/json; charset=utf-8", body: unknown}, 404, "thread_not_found"},
		{"curl -d's form type", apiCall{key: apiKey, csrf: good, contentType: "application/x-www-form-urlencoded", body: unknown}, 404, "thread_not_found"},
		{"unknown fields", apiCall{key: apiKey, csrf: good, body: `{"thread_id":"nope","session_id":"nope","x":[1]}`}, 404, "thread_not_found"},
	}
	for _, path := range []string{"/api/thread/history", "/api/thread/summarize"} {
		for _, tt := range tests {
			t.Run(path+"/"+tt.name, func(t *testing.T) {
				c := tt.call
				c.path = path
				status, got := s.post(t, c)
				assert.Equal(t, tt.status, status)
				assert.Equal(t, tt.code, errorCode(got))
			})
		}
	}
}

func TestCookieAloneIsNotEnough(t *testing.T) {
	s := newAPIServer(t, csrfSecret, nil, nil)
	req, err := http.NewRequest(http.MethodPost, s.url+"/api/thread/history", strings.NewReader(`{"thread_id":"t"}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", apiKey)
	req.AddCookie(&http.Cookie{Name: "csrftoken", Value: s.token(t)})
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
}

// apiChat runs one chat on the thread, cancelled at its first token when
// cancel is set, and returns what the client was sent.
func apiChat(t *testing.T, conv *conversation.Conversation, threadID, msg string, cancel bool) (string, conversation.Result) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var sent strings.Builder
	res, err := conv.Run(ctx, conversation.Request{ThreadID: threadID, Message: msg, Data: json.RawMessage(`[]`)},
		func(ev conversation.Event) {
			if ev.Kind == conversation.EventToken {
				sent.WriteString(ev.Content)
				if cancel {
					stop()
				}
			}
		})
	require.NoError(t, err)
	return sent.String(), res
}

func TestThreadHistory(t *testing.T) {
	s := newAPIServer(t, csrfSecret, nil, nil)
	answer, _ := apiChat(t, s.conv, "thread-1", "Where is my kettle?", false)
	partial, res := apiChat(t, s.conv, "thread-1", "And my teapot?", true)
	require.True(t, res.Cancelled)

	stored, err := s.store.History(context.Background(), "thread-1")
	require.NoError(t, err)
	require.Len(t, stored, 4)

	status, body := s.post(t, apiCall{path: "/api/thread/history", key: apiKey, csrf: s.token(t), body: `{"thread_id":"thread-1"}`})
	require.Equal(t, http.StatusOK, status, body)
	assert.Equal(t, "thread-1", body["thread_id"])

	var want []any
	for _, m := range stored {
		w := map[string]any{
			"id":         m.ID,
			"role":       string(m.Role),
			"content":    m.Content,
			"created_at": m.CreatedAt.UTC().Format("2006-01-02T15:04:05.000000Z"),
		}
		if m.Cancelled {
			w["cancelled"] = true
		}
		want = append(want, w)
	}
	assert.Equal(t, want, body["messages"])

	// What was stored is what the client saw, in order.
	msgs, _ := body["messages"].([]any)
	require.Len(t, msgs, 4)
	content := func(i int) any { return msgs[i].(map[string]any)["content"] }
	cancelled := func(i int) any { return msgs[i].(map[string]any)["cancelled"] }
	assert.Equal(t, "Where is my kettle?", content(0))
	assert.Equal(t, answer, content(1))
	assert.Nil(t, cancelled(1))
	assert.Equal(t, "And my teapot?", content(2))
	assert.Equal(t, partial, content(3))
	assert.Equal(t, true, cancelled(3))
	for _, m := range msgs {
		ts := m.(map[string]any)["created_at"].(string)
		parsed, err := time.Parse(time.RFC3339Nano, ts)
		require.NoError(t, err, ts)
		assert.Equal(t, time.UTC, parsed.Location())
		assert.Regexp(t, `\.\d{6}Z$`, ts)
	}
}

func TestThreadHistoryOfEmptyThread(t *testing.T) {
	s := newAPIServer(t, csrfSecret, nil, nil)
	require.NoError(t, s.store.SaveTurn(context.Background(), ports.Turn{ThreadID: "empty", Channel: "web"}))
	status, body := s.post(t, apiCall{path: "/api/thread/history", key: apiKey, csrf: s.token(t), body: `{"thread_id":"empty"}`})
	require.Equal(t, http.StatusOK, status, body)
	assert.Equal(t, []any{}, body["messages"], "an empty list, not null")
}

func TestThreadSummarize(t *testing.T) {
	s := newAPIServer(t, csrfSecret, nil, nil)
	apiChat(t, s.conv, "thread-2", "Where is my kettle?", false)
	apiChat(t, s.conv, "thread-2", "And my teapot?", false)
	stored, err := s.store.History(context.Background(), "thread-2")
	require.NoError(t, err)

	status, body := s.post(t, apiCall{path: "/api/thread/summarize", key: "Bearer " + apiKey, csrf: s.token(t), body: `{"thread_id":"thread-2"}`})
	require.Equal(t, http.StatusOK, status, body)
	assert.Equal(t, map[string]any{"thread_id": "thread-2", "summary": local.Summary(stored)}, body)
	assert.Contains(t, body["summary"], "The thread has 4 messages")
}

func TestCSRFAcrossInstances(t *testing.T) {
	// Two instances share the secret and the threads; a third has its
	// own secret.
	a := newAPIServer(t, csrfSecret, nil, nil)
	b := newAPIServer(t, csrfSecret, a.conv, a.store)
	stranger := newAPIServer(t, "another-secret", a.conv, a.store)
	apiChat(t, a.conv, "shared", "Hello there", false)

	token := a.token(t)
	status, body := b.post(t, apiCall{path: "/api/thread/history", key: apiKey, csrf: token, body: `{"thread_id":"shared"}`})
	assert.Equal(t, http.StatusOK, status, body)
	status, body = a.post(t, apiCall{path: "/api/thread/summarize", key: apiKey, csrf: b.token(t), body: `{"thread_id":"shared"}`})
	assert.Equal(t, http.StatusOK, status, body)

	status, body = stranger.post(t, apiCall{path: "/api/thread/history", key: apiKey, csrf: token, body: `{"thread_id":"shared"}`})
	assert.Equal(t, http.StatusForbidden, status)
	assert.Equal(t, "csrf_failed", errorCode(body))
}

// A store that fails is a 500 with no detail; the error is only logged.
func TestThreadStoreFailure(t *testing.T) {
	conv, _ := newAPIConversation(t, failingStore{memory.NewThreads(0)})
	s := newAPIServer(t, csrfSecret, conv, nil)
	for _, path := range []string{"/api/thread/history", "/api/thread/summarize"} {
		status, body := s.post(t, apiCall{path: path, key: apiKey, csrf: s.token(t), body: `{"thread_id":"t"}`})
		assert.Equal(t, http.StatusInternalServerError, status)
		assert.Equal(t, "internal", errorCode(body))
		assert.NotContains(t, body["error"].(map[string]any)["message"], "password")
	}
}

// failingStore's reads fail, with a secret in the error.
type failingStore struct{ *memory.Threads }

func (failingStore) History(context.Context, string) ([]ports.Message, error) {
	return nil, errors.New("dial postgres://bot:password@db: connection refused")
}
