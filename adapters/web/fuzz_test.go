package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/wsserver/wsserver/adapters/local"
	"github.com/wsserver/wsserver/adapters/memory"
	"github.com/wsserver/wsserver/adapters/metrics"
	"github.com/wsserver/wsserver/adapters/socket"
	"github.com/wsserver/wsserver/adapters/web"
	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/core/session"
	"github.com/wsserver/wsserver/ports"
)

// fuzzThread is the one thread the fuzzed API server knows.
const fuzzThread = "fuzz-thread"

// newFuzzHandler is an API server on memory threads holding fuzzThread,
// served without a network, and a valid CSRF token of it.
func newFuzzHandler(f *testing.F) (http.Handler, string) {
	f.Helper()
	must := func(err error) {
		if err != nil {
			f.Fatal(err)
		}
	}
	a, err := local.LoadAppdata("")
	must(err)
	model, err := local.NewModel(local.ModelConfig{})
	must(err)
	guard, err := local.NewGuardrail(local.GuardrailConfig{Rules: a.Guardrail})
	must(err)
	esc, err := local.NewEscalation(a.Escalation)
	must(err)
	store := memory.NewThreads(0)
	ctx := context.Background()
	must(store.SaveTurn(ctx, ports.Turn{ThreadID: fuzzThread, Channel: "web",
		Messages: []ports.Message{{ID: "m1", Role: ports.RoleUser, Content: "hello", CreatedAt: time.Now()}}}))
	conv, err := conversation.New(conversation.Config{
		Store: store, Lock: memory.NewLock(), Model: model, Guardrail: guard, Escalation: esc,
		SystemPrompt: a.SystemPrompt, SummaryPrompt: a.SummaryPrompt, MaxGuardrailRewrites: 2,
	})
	must(err)
	m := metrics.New()
	hub, err := session.NewHub(session.HubConfig{Broker: memory.NewBroker(), Presence: memory.NewPresence(), Encode: socket.Frame, Observer: m})
	must(err)
	srv, err := web.New(web.Config{
		InstanceID: "api-fuzz", APIKey: apiKey,
		HostAllowed:   func(string) bool { return true },
		OriginAllowed: func(string) bool { return false },
		Hub:           hub, Chat: conv, CSRFSecret: csrfSecret, Metrics: m,
		Sockets: socket.Config{ReadLimit: 4096, CloseWait: time.Second},
	})
	must(err)
	signer, err := web.NewCSRF(web.CSRFConfig{Secret: csrfSecret})
	must(err)
	token, err := signer.Issue()
	must(err)
	return srv.Handler(), token
}

// FuzzThreadAPI posts any body to /api/thread/history and
// /api/thread/summarize. Whatever the body, the answer is a JSON object,
// never a 5xx: 200 for the known thread named exactly, 404 for a valid id
// of another, else a 400 invalid_json (not a JSON object) or
// invalid_request (thread_id absent, not a string, or not a valid id).
func FuzzThreadAPI(f *testing.F) {
	for _, s := range []string{
		`{"thread_id":"` + fuzzThread + `"}`, `{"thread_id":"other"}`, ``, `null`, `[]`, `{}`,
		`{"thread_id":null}`, `{"thread_id":5}`, `{"thread_id":"a/b"}`, `{"thread_id":"\ud800"}`,
		"{\"thread_id\":\"t\xff\"}", `{"THREAD_ID":"t"}`, `{"thread_id":"t","thread_id":7}`,
		`{"thread_id":"t"} x`, ` {"thread_id":"` + strings.Repeat("t", 129) + `"} `,
	} {
		f.Add([]byte(s), false)
	}
	f.Add([]byte(`{"thread_id":"`+fuzzThread+`"}`), true)
	h, token := newFuzzHandler(f)
	f.Fuzz(func(t *testing.T, body []byte, summarize bool) {
		path := "/api/thread/history"
		if summarize {
			path = "/api/thread/summarize"
		}
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		req.Host = "127.0.0.1"
		req.Header.Set("Authorization", apiKey)
		req.Header.Set("X-CSRFToken", token)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		out := rec.Body.Bytes()
		var got map[string]json.RawMessage
		if err := json.Unmarshal(out, &got); err != nil || !utf8.Valid(out) {
			t.Fatalf("%q: %d %q is not a JSON object", body, rec.Code, out)
		}
		// What a server that reads the body the plain way makes of it.
		var plain struct {
			ThreadID json.RawMessage `json:"thread_id"`
		}
		object := json.Unmarshal(body, &plain) == nil && bytes.HasPrefix(bytes.TrimLeft(body, " \t\r\n"), []byte("{"))
		var id string
		named := object && json.Unmarshal(plain.ThreadID, &id) == nil && conversation.ValidThreadID(id)
		switch rec.Code {
		case http.StatusOK:
			var ok struct {
				ThreadID string `json:"thread_id"`
			}
			if json.Unmarshal(out, &ok) != nil || ok.ThreadID != fuzzThread || !named || id != fuzzThread {
				t.Fatalf("%q: 200 %q", body, out)
			}
		case http.StatusNotFound:
			if !named || id == fuzzThread {
				t.Fatalf("%q: 404 %q", body, out)
			}
		case http.StatusBadRequest:
			var e struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			if json.Unmarshal(out, &e) != nil || e.Error.Message == "" {
				t.Fatalf("%q: 400 %q", body, out)
			}
			want := "invalid_request"
			if !object {
				want = "invalid_json"
			}
			if e.Error.Code != want || named {
				t.Fatalf("%q: 400 %s, want %s (a valid id: %v)", body, e.Error.Code, want, named)
			}
		default:
			t.Fatalf("%q: %d %q", body, rec.Code, out)
		}
	})
}
