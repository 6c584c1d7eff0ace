package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/config"
	"github.com/wsserver/wsserver/adapters/postgres"
	"github.com/wsserver/wsserver/cmd/wsserver/app"
	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/test/fakebedrock"
)

// bedrockInstance starts a fake Bedrock endpoint and an instance whose
// chat model runs on it, through the real SDK client and its default
// credential chain. The static credentials come from the environment, so
// the test must not be parallel (t.Setenv refuses it anyway).
func bedrockInstance(t *testing.T, def fakebedrock.Script) (*instance, *fakebedrock.Server) {
	t.Helper()
	return bedrockInstanceWith(t, def, nil)
}

// bedrockInstanceWith is bedrockInstance with edit applied to the
// configuration before the instance starts.
func bedrockInstanceWith(t *testing.T, def fakebedrock.Script, edit func(*config.Config)) (*instance, *fakebedrock.Server) {
	t.Helper()
	fake := fakebedrock.New(def)
	t.Cleanup(fake.Close)

	// Only the environment's credentials: no shared files, no instance
	// metadata service.
	dir := t.TempDir()
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDE2ETEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "e2e-secret")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")

	cfg := defaults(t)
	cfg.InstanceID = "bedrock"
	cfg.Bedrock.Region = "us-east-1"
	cfg.Bedrock.ChatModelID = e2eChatModel
	cfg.Bedrock.EndpointURL = fake.URL
	if edit != nil {
		edit(&cfg)
	}
	in := start(t, cfg)
	eventually(t, "the instance serves", func() bool { return get(t, in, "/health/") == 200 })
	return in, fake
}

func sendChat(t *testing.T, c *client, message, thread string) {
	t.Helper()
	m := map[string]any{"type": "chat", "message": message, "channel": "web", "data": []any{}}
	if thread != "" {
		m["thread_id"] = thread
	}
	raw, err := json.Marshal(m)
	require.NoError(t, err)
	c.send(string(raw))
}

func TestChatOnBedrock(t *testing.T) {
	deltas := []string{"Hello", " from", " the", " fake", " Bedrock", "."}
	in, fake := bedrockInstance(t, fakebedrock.Script{
		Deltas: deltas,
		Usage:  fakebedrock.Usage{InputTokens: 42, OutputTokens: 6},
	})
	c := dial(t, in, "/ws/chat/")
	sendChat(t, c, "Hello, who are you?", "")

	var tokens []string
	var end map[string]any
	for end == nil {
		ev := c.next()
		switch ev["type"] {
		case "token":
			tokens = append(tokens, ev["content"].(string))
		case "end":
			end = ev
		case "error":
			t.Fatalf("error event: %v", ev)
		}
	}
	assert.Equal(t, deltas, tokens, "the tokens are the model's deltas, in order")
	assert.Equal(t, false, end["cancelled"])
	assert.Equal(t, map[string]any{"input_tokens": float64(42), "output_tokens": float64(6)}, end["usage"])

	reqs := fake.Requests()
	require.Len(t, reqs, 1)
	assert.Equal(t, "converse-stream", reqs[0].Op)
	assert.Equal(t, "anthropic.claude-e2e-v1:0", reqs[0].ModelID)
	assert.Contains(t, reqs[0].Header.Get("Authorization"), "Credential=AKIDE2ETEST/", "signed with the environment's credentials")
	assert.Contains(t, string(reqs[0].Body), "Hello, who are you?")

	assert.Equal(t, map[string]any{"chat": "bedrock", "guardrail": "local", "escalation": "local"}, readyModel(t, in),
		"/ready/ names the adapters")
}

func TestChatOnBedrockCancelled(t *testing.T) {
	in, fake := bedrockInstance(t, fakebedrock.Script{
		// Tokens are held until their sentence passes the guardrail: the
		// first is sent when the second sentence starts.
		Deltas: []string{"One.", " Two.", " Three"},
		Hang:   true, // no messageStop: only the cancel ends the call
	})
	c := dial(t, in, "/ws/chat/")
	sendChat(t, c, "Count for me", "")
	thread, _ := c.nextOf("session_started")["thread_id"].(string)
	require.NotEmpty(t, thread)
	c.nextOf("token")
	c.send(`{"type":"cancel"}`)
	end := c.nextOf("end")
	assert.Equal(t, true, end["cancelled"])

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	req, err := fake.WaitEnded(ctx, 0)
	require.NoError(t, err, "the fake sees the call end")
	assert.True(t, req.ClientGone, "the stream was closed by the client, not finished by the fake")

	// The thread's lock is released: its next message is answered.
	fake.Push(fakebedrock.Script{Deltas: []string{"Done", "."}})
	sendChat(t, c, "Again", thread)
	for {
		ev := c.next()
		require.NotEqual(t, "error", ev["type"], "%v", ev)
		if ev["type"] == "end" {
			assert.Equal(t, false, ev["cancelled"])
			break
		}
	}
	assert.Len(t, fake.Requests(), 2)
}

// turn is what one chat message brought back.
type turn struct {
	thread     string
	tokens     []string
	escalation string // the escalation's reason; empty when none
	errCode    string // the error event's code; empty when none
	end        map[string]any
}

func (tr turn) text() string { return strings.Join(tr.tokens, "") }

// talk sends a chat message and reads its events up to end or error.
func talk(t *testing.T, c *client, message, thread string) turn {
	t.Helper()
	sendChat(t, c, message, thread)
	tr := turn{thread: thread}
	for {
		ev := c.next()
		switch ev["type"] {
		case "session_started":
			tr.thread, _ = ev["thread_id"].(string)
		case "token":
			tr.tokens = append(tr.tokens, ev["content"].(string))
		case "escalation":
			tr.escalation, _ = ev["reason"].(string)
		case "end":
			tr.end = ev
			return tr
		case "error":
			tr.errCode, _ = ev["code"].(string)
			return tr
		}
	}
}

// readyModel returns the "model" part of in's /ready/.
func readyModel(t *testing.T, in *instance) map[string]any {
	t.Helper()
	resp, err := http.Get("http://" + in.addr + "/ready/")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	checkHTTP(t, http.MethodGet, "/ready/", resp.StatusCode, raw) // the names are documented
	var body map[string]any
	require.NoError(t, json.Unmarshal(raw, &body))
	m, _ := body["model"].(map[string]any)
	return m
}

// threadHistory returns the thread's messages through the API, each as
// "role: content".
func threadHistory(t *testing.T, in *instance, thread string) []string {
	t.Helper()
	status, body := api(t, in, "/api/thread/history", "", csrfToken(t, in), fmt.Sprintf(`{"thread_id":%q}`, thread))
	require.Equal(t, http.StatusOK, status, "%v", body)
	var out []string
	for _, m := range body["messages"].([]any) {
		m := m.(map[string]any)
		out = append(out, fmt.Sprintf("%s: %s", m["role"], m["content"]))
	}
	return out
}

// ops lists the fake's calls as "op model".
func ops(fake *fakebedrock.Server) []string {
	var out []string
	for _, r := range fake.Requests() {
		out = append(out, r.Op+" "+r.ModelID)
	}
	return out
}

const e2eChatModel = "anthropic.claude-e2e-v1:0"

func TestBedrockThrottledBeforeTheFirstToken(t *testing.T) {
	deltas := []string{"Sorry", " for", " the", " wait", "."}
	in, fake := bedrockInstance(t, fakebedrock.Script{Deltas: deltas})
	fake.Throttle(2) // the adapter makes 3 attempts

	tr := talk(t, dial(t, in, "/ws/chat/"), "Are you there?", "")
	require.Empty(t, tr.errCode)
	assert.Equal(t, deltas, tr.tokens, "the retries are invisible: each token once, in order")
	assert.Equal(t, false, tr.end["cancelled"])
	assert.Len(t, fake.Requests(), 3, "two throttled calls, then the answer")
}

func TestBedrockExceptionMidStream(t *testing.T) {
	in, fake := bedrockInstance(t, fakebedrock.Script{Deltas: []string{"Fine", " now", "."}})
	fake.Push(fakebedrock.Script{
		Deltas:    []string{"Once upon a time.", " There", " was"},
		Exception: &fakebedrock.Exception{After: 2, Type: "modelStreamErrorException", Message: "the model failed"},
	})
	c := dial(t, in, "/ws/chat/")

	first := talk(t, c, "Tell me a story", "")
	require.NotEmpty(t, first.thread)
	assert.Equal(t, "internal", first.errCode, "the client gets an error event, not end")
	assert.Equal(t, "Once upon a time.", first.text(), "the sentence that passed before the exception was sent")
	assert.Equal(t, []string{"user: Tell me a story"}, threadHistory(t, in, first.thread),
		"the partial answer is not stored as an answer")

	// The thread's lock was released: the same thread answers again.
	second := talk(t, c, "Try again", first.thread)
	require.Empty(t, second.errCode)
	assert.Equal(t, "Fine now.", second.text())
	assert.Equal(t, []string{"user: Tell me a story", "user: Try again", "assistant: Fine now."}, threadHistory(t, in, first.thread))
	assert.Len(t, fake.Requests(), 2, "nothing is retried once a token was sent")
}

func TestBedrockStopGuardrailIntervened(t *testing.T) {
	t.Run("the rewrite passes", func(t *testing.T) {
		in, fake := bedrockInstance(t, fakebedrock.Script{Deltas: []string{"Please ask", " the front desk."}})
		fake.Push(fakebedrock.Script{Deltas: []string{"The manager", " is Bob"}, Stop: "guardrail_intervened"})

		tr := talk(t, dial(t, in, "/ws/chat/"), "Who runs the store?", "")
		require.Empty(t, tr.errCode)
		assert.Empty(t, tr.escalation)
		assert.Equal(t, "Please ask the front desk.", tr.text(), "nothing of the stopped answer is sent")
		reqs := fake.Requests()
		require.Len(t, reqs, 2)
		assert.Contains(t, string(reqs[1].Body), "guardrail_intervened", "the rewrite is told why")
	})
	t.Run("every rewrite stopped: fallback and escalation", func(t *testing.T) {
		in, fake := bedrockInstance(t, fakebedrock.Script{Deltas: []string{"The manager", " is Bob"}, Stop: "guardrail_intervened"})
		c := dial(t, in, "/ws/chat/")

		tr := talk(t, c, "Who runs the store?", "")
		require.Empty(t, tr.errCode)
		assert.Equal(t, "guardrail", tr.escalation)
		assert.NotContains(t, tr.text(), "Bob")
		assert.Equal(t, conversation.DefaultFallbackAnswer, tr.text())
		assert.Len(t, fake.Requests(), 3, "the answer and MAXIMUM_GUARDRAIL_REWRITES=2 rewrites")
		assert.Equal(t, websocket.CloseNormalClosure, c.closed())
	})
}

func TestBedrockMaxTokens(t *testing.T) {
	dsn := servers.Postgres.NewDatabase(context.Background(), t)
	in, fake := bedrockInstanceWith(t, fakebedrock.Script{Deltas: []string{"The first step is", " to open the"}, Stop: "max_tokens"},
		func(c *config.Config) { c.Store.DatabaseURL = dsn })

	tr := talk(t, dial(t, in, "/ws/chat/"), "How do I return a parcel?", "")
	require.Empty(t, tr.errCode)
	assert.Equal(t, false, tr.end["cancelled"], "the answer ends")
	assert.Equal(t, "The first step is to open the", tr.text(), "the cut answer is sent as it came")
	assert.Len(t, fake.Requests(), 1, "a cut answer is not rewritten")
	assert.Equal(t, []string{"user: How do I return a parcel?", "assistant: The first step is to open the"}, threadHistory(t, in, tr.thread))

	// The stop reason is noted in the run's checkpoints.
	store, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn})
	require.NoError(t, err)
	defer store.Close()
	cps, err := store.Checkpoints(context.Background(), tr.thread)
	require.NoError(t, err)
	require.NotEmpty(t, cps)
	var last struct {
		Stop string `json:"stop"`
	}
	require.NoError(t, json.Unmarshal(cps[len(cps)-1].State, &last))
	assert.Equal(t, "max_tokens", last.Stop)
}

// intervened is an ApplyGuardrail answer that blocks the topic Staff.
func intervened() *fakebedrock.GuardrailAnswer {
	return &fakebedrock.GuardrailAnswer{
		Action:      "GUARDRAIL_INTERVENED",
		Outputs:     []string{"Sorry, I cannot talk about that."},
		Assessments: json.RawMessage(`[{"topicPolicy":{"topics":[{"name":"Staff","type":"DENY","action":"BLOCKED","detected":true}]}}]`),
	}
}

func TestBedrockApplyGuardrail(t *testing.T) {
	withGuardrail := func(c *config.Config) {
		c.Bedrock.GuardrailID, c.Bedrock.GuardrailVersion = "gr-e2e", "7"
	}
	t.Run("NONE", func(t *testing.T) {
		in, fake := bedrockInstanceWith(t, fakebedrock.Script{Deltas: []string{"Your order", " ships today."}}, withGuardrail)
		assert.Equal(t, map[string]any{"chat": "bedrock", "guardrail": "bedrock-guardrail", "escalation": "local"}, readyModel(t, in))

		tr := talk(t, dial(t, in, "/ws/chat/"), "Where is my order?", "")
		require.Empty(t, tr.errCode)
		assert.Equal(t, "Your order ships today.", tr.text())
		assert.Equal(t, []string{"converse-stream " + e2eChatModel, "apply-guardrail gr-e2e"}, ops(fake))
		check := fake.Requests()[1]
		assert.Equal(t, "7", check.GuardrailVersion)
		assert.JSONEq(t, `{"source":"OUTPUT","content":[{"text":{"text":"Your order ships today."}}]}`, string(check.Body))
	})
	t.Run("GUARDRAIL_INTERVENED, then the rewrite passes", func(t *testing.T) {
		in, fake := bedrockInstanceWith(t, fakebedrock.Script{}, withGuardrail)
		fake.Push(
			fakebedrock.Script{Deltas: []string{"The manager", " is Bob."}},        // the answer
			fakebedrock.Script{Guardrail: intervened()},                            // its check
			fakebedrock.Script{Deltas: []string{"Please ask", " the front desk."}}, // the rewrite
			fakebedrock.Script{Guardrail: &fakebedrock.GuardrailAnswer{Action: "NONE"}},
		)
		tr := talk(t, dial(t, in, "/ws/chat/"), "Who runs the store?", "")
		require.Empty(t, tr.errCode)
		assert.Empty(t, tr.escalation)
		assert.Equal(t, "Please ask the front desk.", tr.text(), "the failing sentence is never sent")
		assert.Equal(t, []string{
			"converse-stream " + e2eChatModel, "apply-guardrail gr-e2e",
			"converse-stream " + e2eChatModel, "apply-guardrail gr-e2e",
		}, ops(fake))
		rewrite := string(fake.Requests()[2].Body)
		assert.Contains(t, rewrite, `denied topic \"Staff\"`, "the assessment's reason feeds the rewrite")
		assert.Contains(t, rewrite, "The manager is Bob.", "the rewrite is told what was rejected")
	})
	t.Run("GUARDRAIL_INTERVENED until the rewrites run out", func(t *testing.T) {
		in, fake := bedrockInstanceWith(t, fakebedrock.Script{Deltas: []string{"The manager", " is Bob."}, Guardrail: intervened()}, withGuardrail)
		c := dial(t, in, "/ws/chat/")
		tr := talk(t, c, "Who runs the store?", "")
		require.Empty(t, tr.errCode)
		assert.Equal(t, "guardrail", tr.escalation)
		assert.Equal(t, conversation.DefaultFallbackAnswer, tr.text())
		assert.Len(t, fake.Requests(), 6, "three answers, each checked")
		assert.Equal(t, websocket.CloseNormalClosure, c.closed())
	})
	t.Run("ApplyGuardrail keeps failing", func(t *testing.T) {
		in, fake := bedrockInstanceWith(t, fakebedrock.Script{HTTPError: fakebedrock.ServerError()}, withGuardrail)
		fake.Push(fakebedrock.Script{Deltas: []string{"Your order", " ships today."}})
		c := dial(t, in, "/ws/chat/")
		tr := talk(t, c, "Where is my order?", "")
		assert.Equal(t, "internal", tr.errCode, "no decision: the chat fails")
		assert.Empty(t, tr.tokens, "the unchecked text is not sent")
		assert.Equal(t, []string{"user: Where is my order?"}, threadHistory(t, in, tr.thread))
		assert.Len(t, fake.Requests(), 4, "the answer, then three attempts at its check")
	})
}

func TestBedrockJudge(t *testing.T) {
	in, fake := bedrockInstanceWith(t, fakebedrock.Script{}, func(c *config.Config) { c.Bedrock.GuardrailModelID = "judge-e2e" })
	assert.Equal(t, "bedrock-judge", readyModel(t, in)["guardrail"])
	fake.Push(
		fakebedrock.Script{Deltas: []string{"The manager", " is Bob."}},
		fakebedrock.Script{Text: "FAIL: it names an employee"},
		fakebedrock.Script{Deltas: []string{"Please ask", " the front desk."}},
		fakebedrock.Script{Text: "PASS"},
	)
	tr := talk(t, dial(t, in, "/ws/chat/"), "Who runs the store?", "")
	require.Empty(t, tr.errCode)
	assert.Equal(t, "Please ask the front desk.", tr.text(), "neither the failing sentence nor the judge's words are sent")
	assert.Equal(t, []string{
		"converse-stream " + e2eChatModel, "converse judge-e2e",
		"converse-stream " + e2eChatModel, "converse judge-e2e",
	}, ops(fake))
	assert.Contains(t, string(fake.Requests()[2].Body), "it names an employee", "the judge's reason feeds the rewrite")
}

func TestBedrockSummary(t *testing.T) {
	in, fake := bedrockInstanceWith(t, fakebedrock.Script{Deltas: []string{"It ships", " today."}},
		func(c *config.Config) { c.Bedrock.SummaryModelID = "summary-e2e" })
	tr := talk(t, dial(t, in, "/ws/chat/"), "Where is order 1234?", "")
	require.Empty(t, tr.errCode)

	fake.Push(fakebedrock.Script{Text: "  The user asked about order 1234; it ships today.\n"})
	status, body := api(t, in, "/api/thread/summarize", "", csrfToken(t, in), fmt.Sprintf(`{"thread_id":%q}`, tr.thread))
	require.Equal(t, http.StatusOK, status, "%v", body)
	assert.Equal(t, "The user asked about order 1234; it ships today.", body["summary"])

	reqs := fake.Requests()
	require.Len(t, reqs, 2)
	assert.Equal(t, "converse summary-e2e", reqs[1].Op+" "+reqs[1].ModelID)
	assert.Contains(t, string(reqs[1].Body), "Where is order 1234?")
	assert.Contains(t, string(reqs[1].Body), "It ships today.")
}

func TestBedrockClassifier(t *testing.T) {
	withClassifier := func(c *config.Config) { c.Bedrock.EscalationModelID = "classifier-e2e" }
	t.Run("ESCALATE", func(t *testing.T) {
		in, fake := bedrockInstanceWith(t, fakebedrock.Script{Deltas: []string{"Never", " sent."}}, withClassifier)
		assert.Equal(t, "local+bedrock-classifier", readyModel(t, in)["escalation"])
		fake.Push(fakebedrock.Script{Text: "ESCALATE the user wants a refund approved"})

		c := dial(t, in, "/ws/chat/")
		tr := talk(t, c, "Can you approve my refund today?", "")
		require.Empty(t, tr.errCode)
		assert.Equal(t, "classifier", tr.escalation)
		assert.Empty(t, tr.tokens, "no answer once escalated")
		assert.Equal(t, []string{"converse classifier-e2e"}, ops(fake))
		assert.Contains(t, string(fake.Requests()[0].Body), "Can you approve my refund today?")
		assert.Equal(t, websocket.CloseNormalClosure, c.closed())
	})
	for name, answer := range map[string]string{
		"CONTINUE":              "CONTINUE",
		"unparseable":           "Well, the user seems calm, so probably no need.",
		"ESCALATED is not read": "ESCALATED",
	} {
		t.Run(name, func(t *testing.T) {
			in, fake := bedrockInstanceWith(t, fakebedrock.Script{Deltas: []string{"It ships", " today."}}, withClassifier)
			fake.Push(fakebedrock.Script{Text: answer})

			tr := talk(t, dial(t, in, "/ws/chat/"), "Where is my order?", "")
			require.Empty(t, tr.errCode)
			assert.Empty(t, tr.escalation, "no escalation")
			assert.Equal(t, "It ships today.", tr.text())
			assert.Equal(t, []string{"converse classifier-e2e", "converse-stream " + e2eChatModel}, ops(fake))
		})
	}
	t.Run("the local rules first", func(t *testing.T) {
		in, fake := bedrockInstanceWith(t, fakebedrock.Script{Text: "CONTINUE"}, withClassifier)
		tr := talk(t, dial(t, in, "/ws/chat/"), "Let me talk to a real person", "")
		assert.Equal(t, "user_requested", tr.escalation)
		assert.Empty(t, fake.Requests(), "a rule decided: the classifier is not asked")
	})
}

func TestBedrockSettingWithoutBedrockStopsStart(t *testing.T) {
	for name, edit := range map[string]func(*config.Config){
		"BEDROCK_GUARDRAIL_ID":        func(c *config.Config) { c.Bedrock.GuardrailID, c.Bedrock.GuardrailVersion = "gr", "1" },
		"BEDROCK_MODEL_ID_GUARDRAIL":  func(c *config.Config) { c.Bedrock.GuardrailModelID = "judge" },
		"BEDROCK_MODEL_ID_ESCALATION": func(c *config.Config) { c.Bedrock.EscalationModelID = "classifier" },
		"BEDROCK_MODEL_ID_SUMMARY":    func(c *config.Config) { c.Bedrock.SummaryModelID = "summary" },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := defaults(t)
			edit(&cfg)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			defer ln.Close()
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			err = app.Run(ctx, cfg, slog.New(slog.DiscardHandler), ln)
			require.Error(t, err, "start-up stops: the setting would be ignored on the local model")
			assert.Contains(t, err.Error(), name+": needs AWS_BEDROCK_REGION and BEDROCK_MODEL_ID_CHAT")
		})
	}
}
