package web_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/local"
	"github.com/wsserver/wsserver/adapters/memory"
	"github.com/wsserver/wsserver/adapters/web"
	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/test/schema"
)

// httpAnswer is one HTTP answer of the server, with the request it answers.
type httpAnswer struct {
	method, path string
	status       int
	body         []byte
}

// TestEveryDocumentedHTTPErrorCodeIsSent provokes every HTTP error code
// docs/openapi.yaml documents (and so PROTOCOL.md §6.2, which the docs
// test keeps equal to it), checks its status, and validates the body: an
// answer on a path openapi.yaml describes must be a status listed there
// with the body its schema says; any other (a refused WebSocket upgrade,
// an unknown path or method) must match the Error schema. The table's
// codes must be exactly the documented ones: a code documented without a
// way to see it, or sent here without being documented, fails.
func TestEveryDocumentedHTTPErrorCodeIsSent(t *testing.T) {
	api, err := schema.OpenAPI()
	require.NoError(t, err, "docs/openapi.yaml")

	withKey := func(c *web.Config) { c.APIKey = apiKey }
	thread := `{"thread_id":"t"}`
	stalling := newStalling()
	tests := map[string]httpCase{
		"bad_host": {400, nil, func(t *testing.T, f *fixture) httpAnswer {
			t.Helper()
			return f.do(t, "GET", "/api/csrf-token/", http.Header{"Host": {"evil.example"}}, "")
		}},
		"invalid_session_id": {400, nil, func(t *testing.T, f *fixture) httpAnswer {
			t.Helper()
			return f.do(t, "GET", "/ws/session/a%20b/", upgrade(), "")
		}},
		"bad_handshake": {400, nil, func(t *testing.T, f *fixture) httpAnswer {
			t.Helper()
			return f.do(t, "GET", "/ws/chat/", nil, "") // no Upgrade headers
		}},
		"draining": {503, nil, func(t *testing.T, f *fixture) httpAnswer {
			t.Helper()
			f.srv.Drain()
			for _, probe := range []string{"/health/", "/ready/"} {
				a := f.do(t, "GET", probe, nil, "")
				assert.Equal(t, 503, a.status, "%s: %s", probe, a.body)
				assert.Contains(t, string(a.body), `"status":"draining"`)
				checkAnswer(t, api, a)
			}
			return f.do(t, "GET", "/ws/chat/", upgrade(), "")
		}},
		"unauthorized": {401, withKey, func(t *testing.T, f *fixture) httpAnswer {
			t.Helper()
			return f.do(t, "POST", "/api/thread/history", f.csrf(t), thread)
		}},
		"forbidden_origin": {403, nil, func(t *testing.T, f *fixture) httpAnswer {
			t.Helper()
			h := upgrade()
			h.Set("Origin", "http://evil.example")
			return f.do(t, "GET", "/ws/chat/", h, "")
		}},
		"max_connections": {503, func(c *web.Config) { c.MaxConnections = 1 }, func(t *testing.T, f *fixture) httpAnswer {
			t.Helper()
			f.join(t, "s", "agent")
			return f.do(t, "GET", "/ws/chat/", upgrade(), "")
		}},
		"too_many_connections": {429, func(c *web.Config) { c.MaxConnectionsPerIP = 1 }, func(t *testing.T, f *fixture) httpAnswer {
			t.Helper()
			f.join(t, "s", "agent")
			return f.do(t, "GET", "/ws/chat/", upgrade(), "")
		}},
		"csrf_failed": {403, withKey, func(t *testing.T, f *fixture) httpAnswer {
			t.Helper()
			return f.do(t, "POST", "/api/thread/history", http.Header{"Authorization": {apiKey}}, thread)
		}},
		"unsupported_media_type": {415, withKey, func(t *testing.T, f *fixture) httpAnswer {
			t.Helper()
			h := f.api(t)
			h.Set("Content-Type", "application/xml")
			return f.do(t, "POST", "/api/thread/history", h, thread)
		}},
		"payload_too_large": {413, withKey, func(t *testing.T, f *fixture) httpAnswer {
			t.Helper()
			return f.do(t, "POST", "/api/thread/history", f.api(t), `{"thread_id":"t","pad":"`+strings.Repeat("x", 1<<20)+`"}`)
		}},
		"invalid_json": {400, withKey, func(t *testing.T, f *fixture) httpAnswer {
			t.Helper()
			return f.do(t, "POST", "/api/thread/history", f.api(t), `{`)
		}},
		"invalid_request": {400, withKey, func(t *testing.T, f *fixture) httpAnswer {
			t.Helper()
			return f.do(t, "POST", "/api/thread/history", f.api(t), `{}`)
		}},
		"thread_not_found": {404, withKey, func(t *testing.T, f *fixture) httpAnswer {
			t.Helper()
			return f.do(t, "POST", "/api/thread/summarize", f.api(t), `{"thread_id":"no-such-thread"}`)
		}},
		"timeout": {504, onStore(newStalling(), time.Millisecond), func(t *testing.T, f *fixture) httpAnswer {
			t.Helper()
			// The store never answers; its read is bounded by StoreTimeout.
			return f.do(t, "POST", "/api/thread/summarize", f.api(t), thread)
		}},
		"client_closed": {499, onStore(stalling, time.Hour), func(t *testing.T, f *fixture) httpAnswer {
			t.Helper()
			return f.abandoned(t, stalling, "/api/thread/history", thread)
		}},
		"not_found": {404, nil, func(t *testing.T, f *fixture) httpAnswer {
			t.Helper()
			return f.do(t, "GET", "/api/nothing/", nil, "")
		}},
		"method_not_allowed": {405, nil, func(t *testing.T, f *fixture) httpAnswer {
			t.Helper()
			return f.do(t, "DELETE", "/api/csrf-token/", nil, "")
		}},
		"internal": {500, onStore(failingStore{memory.NewThreads(0)}, 0), func(t *testing.T, f *fixture) httpAnswer {
			t.Helper()
			return f.do(t, "POST", "/api/thread/history", f.api(t), thread)
		}},
	}
	var provoked []string
	for code := range tests {
		provoked = append(provoked, code)
	}
	slices.Sort(provoked)
	assert.Equal(t, api.ErrorCodes(), provoked, "the HTTP codes provoked here are the documented ones")
	for _, code := range provoked {
		t.Run(code, func(t *testing.T) {
			tt := tests[code]
			a := tt.provoke(t, newFixture(t, tt.change))
			assert.Equal(t, tt.status, a.status, "%s %s: %s", a.method, a.path, a.body)
			_, got := errorBodyOf(t, a.body)
			assert.Equal(t, code, got, "%s", a.body)
			checkAnswer(t, api, a)
		})
	}
}

// httpCase provokes one error code: the fixture is made with change, and
// provoke makes the request whose answer must carry the code with status.
type httpCase struct {
	status  int
	change  func(*web.Config)
	provoke func(t *testing.T, f *fixture) httpAnswer
}

// abandoned posts body to path and goes away while store reads: net/http
// cancels a request's context when its client leaves, as here. The answer
// goes nowhere, so it is recorded where the handler writes it.
func (f *fixture) abandoned(t *testing.T, store stallingStore, path, body string) httpAnswer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req := httptest.NewRequestWithContext(ctx, "POST", "http://127.0.0.1"+path, strings.NewReader(body))
	for k, v := range f.api(t) {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	served := make(chan struct{})
	go func() { defer close(served); f.srv.Handler().ServeHTTP(rec, req) }()
	select {
	case <-store.entered:
	case <-time.After(wait):
		t.Fatal("the store was never read")
	}
	cancel()
	<-served
	return httpAnswer{method: "POST", path: path, status: rec.Code, body: rec.Body.Bytes()}
}

// checkAnswer fails t when a is not what docs/openapi.yaml says.
func checkAnswer(t *testing.T, api *schema.API, a httpAnswer) {
	t.Helper()
	var err error
	if api.Documents(a.method, a.path) {
		err = api.ValidateResponse(a.method, a.path, a.status, a.body)
	} else {
		err = api.ValidateError(a.body)
	}
	if err != nil {
		t.Errorf("%s %s %d is not what docs/openapi.yaml says: %v; body %.300s", a.method, a.path, a.status, err, a.body)
	}
}

// errorBodyOf returns the message and code of an error body.
func errorBodyOf(t *testing.T, body []byte) (string, string) {
	t.Helper()
	var b map[string]any
	require.NoError(t, json.Unmarshal(body, &b), "%s", body)
	e, _ := b["error"].(map[string]any)
	msg, _ := e["message"].(string)
	code, _ := e["code"].(string)
	return msg, code
}

// do sends one request to the fixture and returns its answer; a "Host"
// in h replaces the request's Host.
func (f *fixture) do(t *testing.T, method, path string, h http.Header, body string) httpAnswer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, f.http.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	for k, v := range h {
		if k == "Host" {
			req.Host = v[0]
			continue
		}
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return httpAnswer{method: method, path: path, status: resp.StatusCode, body: raw}
}

// csrf returns the header of a fresh CSRF token of the fixture.
func (f *fixture) csrf(t *testing.T) http.Header {
	t.Helper()
	a := f.do(t, "GET", "/api/csrf-token/", nil, "")
	require.Equal(t, http.StatusOK, a.status, "%s", a.body)
	var b struct {
		CSRFToken string `json:"csrfToken"`
	}
	require.NoError(t, json.Unmarshal(a.body, &b))
	return http.Header{"X-Csrftoken": {b.CSRFToken}}
}

// api returns the headers of a thread API call that passes every check
// before the body's.
func (f *fixture) api(t *testing.T) http.Header {
	t.Helper()
	h := f.csrf(t)
	h.Set("Authorization", apiKey)
	h.Set("Content-Type", "application/json")
	return h
}

// upgrade returns the headers of a valid WebSocket handshake.
func upgrade() http.Header {
	return http.Header{
		"Connection":            {"Upgrade"},
		"Upgrade":               {"websocket"},
		"Sec-Websocket-Version": {"13"},
		"Sec-Websocket-Key":     {"dGhlIHNhbXBsZSBub25jZQ=="},
	}
}

// onStore makes the fixture's conversation read store, each read bounded
// by storeTimeout (0 for the default), behind the API key.
func onStore(store ports.ThreadStore, storeTimeout time.Duration) func(*web.Config) {
	return func(c *web.Config) {
		a, err := local.LoadAppdata("")
		must(err)
		model, err := local.NewModel(local.ModelConfig{})
		must(err)
		guard, err := local.NewGuardrail(local.GuardrailConfig{Rules: a.Guardrail})
		must(err)
		esc, err := local.NewEscalation(a.Escalation)
		must(err)
		c.Chat, err = conversation.New(conversation.Config{
			Store: store, Lock: memory.NewLock(), Model: model, Guardrail: guard, Escalation: esc,
			SystemPrompt: a.SystemPrompt, SummaryPrompt: a.SummaryPrompt, MaxGuardrailRewrites: 2,
			StoreTimeout: storeTimeout,
		})
		must(err)
		c.APIKey = apiKey
	}
}

// stallingStore's reads never answer: they end only when their context
// does. entered is closed at the first read.
type stallingStore struct {
	*memory.Threads
	entered chan struct{}
	once    *sync.Once
}

func newStalling() stallingStore {
	return stallingStore{Threads: memory.NewThreads(0), entered: make(chan struct{}), once: new(sync.Once)}
}

func (s stallingStore) History(ctx context.Context, _ string) ([]ports.Message, error) {
	s.once.Do(func() { close(s.entered) })
	<-ctx.Done()
	return nil, ctx.Err()
}
