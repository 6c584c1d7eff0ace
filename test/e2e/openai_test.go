package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/config"
	"github.com/wsserver/wsserver/adapters/postgres"
	"github.com/wsserver/wsserver/cmd/wsserver/app"
	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/test/fakeopenai"
)

// The chat suite of bedrock_test.go, on an OpenAI-compatible endpoint
// (test/fakeopenai) through the openai adapters, as OPENAI_* select them.

const (
	e2eOpenAIModel = "meta-llama/Llama-3.1-8B-Instruct"
	e2eOpenAIKey   = "sk-e2e-not-a-real-key"
)

// openaiInstance starts a fake OpenAI-compatible endpoint and an instance
// whose chat model runs on it.
func openaiInstance(t *testing.T, def fakeopenai.Script) (*instance, *fakeopenai.Server) {
	t.Helper()
	return openaiInstanceWith(t, def, nil)
}

// openaiInstanceWith is openaiInstance with edit applied to the
// configuration before the instance starts.
func openaiInstanceWith(t *testing.T, def fakeopenai.Script, edit func(*config.Config)) (*instance, *fakeopenai.Server) {
	t.Helper()
	fake := fakeopenai.New(def)
	t.Cleanup(fake.Close)
	cfg := defaults(t)
	cfg.InstanceID = "openai"
	cfg.OpenAI.BaseURL = fake.URL
	cfg.OpenAI.ChatModelID = e2eOpenAIModel
	cfg.OpenAI.APIKey = e2eOpenAIKey
	if edit != nil {
		edit(&cfg)
	}
	in := start(t, cfg)
	eventually(t, "the instance serves", func() bool { return get(t, in, "/health/") == 200 })
	return in, fake
}

// openaiOps lists the fake's calls as "op model".
func openaiOps(fake *fakeopenai.Server) []string {
	var out []string
	for _, r := range fake.Requests() {
		out = append(out, r.Op+" "+r.Model)
	}
	return out
}

func TestChatOnOpenAI(t *testing.T) {
	deltas := []string{"Hello", " from", " the", " fake", " endpoint", "."}
	in, fake := openaiInstance(t, fakeopenai.Script{
		Deltas: deltas,
		Usage:  fakeopenai.Usage{PromptTokens: 42, CompletionTokens: 6},
	})
	c := dial(t, in, "/ws/chat/")
	tr := talk(t, c, "Hello, who are you?", "")
	require.Empty(t, tr.errCode)
	assert.Equal(t, deltas, tr.tokens, "the tokens are the model's deltas, in order")
	assert.Equal(t, false, tr.end["cancelled"])
	assert.Equal(t, map[string]any{"input_tokens": float64(42), "output_tokens": float64(6)}, tr.end["usage"])
	assert.Equal(t, []string{"user: Hello, who are you?", "assistant: Hello from the fake endpoint."}, threadHistory(t, in, tr.thread))

	reqs := fake.Requests()
	require.Len(t, reqs, 1)
	assert.Equal(t, "chat-stream", reqs[0].Op)
	assert.Equal(t, e2eOpenAIModel, reqs[0].Model)
	assert.Equal(t, "Bearer "+e2eOpenAIKey, reqs[0].Header.Get("Authorization"))
	assert.True(t, reqs[0].StreamOptions, "OPENAI_STREAM_USAGE is on by default")
	assert.Contains(t, string(reqs[0].Body), "Hello, who are you?")

	assert.Equal(t, map[string]any{"chat": "openai", "guardrail": "local", "escalation": "local"}, readyModel(t, in),
		"/ready/ names the adapters")
}

func TestChatOnOpenAICancelled(t *testing.T) {
	in, fake := openaiInstance(t, fakeopenai.Script{
		// Tokens are held until their sentence passes the guardrail: the
		// first is sent when the second sentence starts.
		Deltas: []string{"One.", " Two.", " Three"},
		Hang:   true, // no finish_reason: only the cancel ends the call
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
	assert.True(t, req.ClientGone, "the request was closed by the client, not finished by the fake")

	// The thread's lock is released: its next message is answered.
	fake.Push(fakeopenai.Script{Deltas: []string{"Done", "."}})
	tr := talk(t, c, "Again", thread)
	require.Empty(t, tr.errCode)
	assert.Equal(t, false, tr.end["cancelled"])
	assert.Len(t, fake.Requests(), 2)
}

func TestOpenAIThrottledBeforeTheFirstToken(t *testing.T) {
	deltas := []string{"Sorry", " for", " the", " wait", "."}
	in, fake := openaiInstance(t, fakeopenai.Script{Deltas: deltas})
	fake.Throttle(1)
	fake.Push(fakeopenai.Script{HTTPError: fakeopenai.ServerError()}) // the adapter makes 3 attempts

	tr := talk(t, dial(t, in, "/ws/chat/"), "Are you there?", "")
	require.Empty(t, tr.errCode)
	assert.Equal(t, deltas, tr.tokens, "the retries are invisible: each token once, in order")
	assert.Equal(t, false, tr.end["cancelled"])
	assert.Len(t, fake.Requests(), 3, "a 429 and a 500, then the answer")
}

func TestOpenAIStreamCutMidAnswer(t *testing.T) {
	for name, cut := range map[string]*fakeopenai.Cut{
		"connection dropped": {After: 2},
		"error event":        {After: 2, Error: &fakeopenai.APIError{Message: "the engine died", Type: "server_error"}},
	} {
		t.Run(name, func(t *testing.T) {
			in, fake := openaiInstance(t, fakeopenai.Script{Deltas: []string{"Fine", " now", "."}})
			fake.Push(fakeopenai.Script{Deltas: []string{"Once upon a time.", " There", " was"}, Cut: cut})
			c := dial(t, in, "/ws/chat/")

			first := talk(t, c, "Tell me a story", "")
			require.NotEmpty(t, first.thread)
			assert.Equal(t, "internal", first.errCode, "the client gets an error event, not end")
			assert.Equal(t, "Once upon a time.", first.text(), "the sentence that passed before the cut was sent")
			assert.Equal(t, []string{"user: Tell me a story"}, threadHistory(t, in, first.thread),
				"the partial answer is not stored as an answer")

			// The thread's lock was released: the same thread answers again.
			second := talk(t, c, "Try again", first.thread)
			require.Empty(t, second.errCode)
			assert.Equal(t, "Fine now.", second.text())
			assert.Equal(t, []string{"user: Tell me a story", "user: Try again", "assistant: Fine now."}, threadHistory(t, in, first.thread))
			assert.Len(t, fake.Requests(), 2, "nothing is retried once a token was sent")
		})
	}
}

func TestOpenAIStreamOptionsRefused(t *testing.T) {
	in, fake := openaiInstance(t, fakeopenai.Script{Deltas: []string{"It", " works", "."}})
	fake.RejectStreamOptions(http.StatusBadRequest)
	c := dial(t, in, "/ws/chat/")

	tr := talk(t, c, "Hello?", "")
	require.Empty(t, tr.errCode)
	assert.Equal(t, "It works.", tr.text())
	assert.Equal(t, map[string]any{"input_tokens": float64(0), "output_tokens": float64(3)}, tr.end["usage"],
		"no usage chunk: the output tokens are the chunks")
	tr = talk(t, c, "Again?", tr.thread)
	require.Empty(t, tr.errCode)

	var with []bool
	for _, r := range fake.Requests() {
		with = append(with, r.StreamOptions)
	}
	assert.Equal(t, []bool{true, false, false}, with, "refused once, then never asked again")
}

func TestOpenAIFinishContentFilter(t *testing.T) {
	t.Run("the rewrite passes", func(t *testing.T) {
		in, fake := openaiInstance(t, fakeopenai.Script{Deltas: []string{"Please ask", " the front desk."}})
		fake.Push(fakeopenai.Script{Deltas: []string{"The manager", " is Bob"}, Finish: "content_filter"})

		tr := talk(t, dial(t, in, "/ws/chat/"), "Who runs the store?", "")
		require.Empty(t, tr.errCode)
		assert.Empty(t, tr.escalation)
		assert.Equal(t, "Please ask the front desk.", tr.text(), "nothing of the filtered answer is sent")
		reqs := fake.Requests()
		require.Len(t, reqs, 2)
		assert.Contains(t, string(reqs[1].Body), "guardrail_intervened", "the rewrite is told why, as on Bedrock")
	})
	t.Run("every rewrite filtered: fallback and escalation", func(t *testing.T) {
		in, fake := openaiInstance(t, fakeopenai.Script{Deltas: []string{"The manager", " is Bob"}, Finish: "content_filter"})
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

func TestOpenAIFinishLength(t *testing.T) {
	dsn := servers.Postgres.NewDatabase(context.Background(), t)
	in, fake := openaiInstanceWith(t, fakeopenai.Script{Deltas: []string{"The first step is", " to open the"}, Finish: "length"},
		func(c *config.Config) { c.Store.DatabaseURL = dsn })

	tr := talk(t, dial(t, in, "/ws/chat/"), "How do I return a parcel?", "")
	require.Empty(t, tr.errCode)
	assert.Equal(t, false, tr.end["cancelled"], "the answer ends")
	assert.Equal(t, "The first step is to open the", tr.text(), "the cut answer is sent as it came")
	assert.Len(t, fake.Requests(), 1, "a cut answer is not rewritten")
	assert.Equal(t, []string{"user: How do I return a parcel?", "assistant: The first step is to open the"}, threadHistory(t, in, tr.thread))

	// The stop reason is noted in the run's checkpoints, as Bedrock's
	// max_tokens is.
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

func TestOpenAIJudge(t *testing.T) {
	in, fake := openaiInstanceWith(t, fakeopenai.Script{}, func(c *config.Config) { c.OpenAI.GuardrailModelID = "judge-e2e" })
	assert.Equal(t, "openai-judge", readyModel(t, in)["guardrail"])
	fake.Push(
		fakeopenai.Script{Deltas: []string{"The manager", " is Bob."}},
		fakeopenai.Script{Text: "FAIL: it names an employee"},
		fakeopenai.Script{Deltas: []string{"Please ask", " the front desk."}},
		fakeopenai.Script{Text: "PASS"},
	)
	tr := talk(t, dial(t, in, "/ws/chat/"), "Who runs the store?", "")
	require.Empty(t, tr.errCode)
	assert.Equal(t, "Please ask the front desk.", tr.text(), "neither the failing sentence nor the judge's words are sent")
	assert.Equal(t, []string{
		"chat-stream " + e2eOpenAIModel, "chat judge-e2e",
		"chat-stream " + e2eOpenAIModel, "chat judge-e2e",
	}, openaiOps(fake))
	assert.Contains(t, string(fake.Requests()[2].Body), "it names an employee", "the judge's reason feeds the rewrite")
}

func TestOpenAIJudgeKeepsFailing(t *testing.T) {
	in, fake := openaiInstanceWith(t, fakeopenai.Script{HTTPError: fakeopenai.ServerError()}, func(c *config.Config) { c.OpenAI.GuardrailModelID = "judge-e2e" })
	fake.Push(fakeopenai.Script{Deltas: []string{"Your order", " ships today."}})
	tr := talk(t, dial(t, in, "/ws/chat/"), "Where is my order?", "")
	assert.Equal(t, "internal", tr.errCode, "no decision: the chat fails")
	assert.Empty(t, tr.tokens, "the unchecked text is not sent")
	assert.Equal(t, []string{"user: Where is my order?"}, threadHistory(t, in, tr.thread))
	assert.Len(t, fake.Requests(), 4, "the answer, then three attempts at its check")
}

func TestOpenAISummary(t *testing.T) {
	in, fake := openaiInstanceWith(t, fakeopenai.Script{Deltas: []string{"It ships", " today."}},
		func(c *config.Config) { c.OpenAI.SummaryModelID = "summary-e2e" })
	tr := talk(t, dial(t, in, "/ws/chat/"), "Where is order 1234?", "")
	require.Empty(t, tr.errCode)

	fake.Push(fakeopenai.Script{Text: "  The user asked about order 1234; it ships today.\n"})
	status, body := api(t, in, "/api/thread/summarize", "", csrfToken(t, in), fmt.Sprintf(`{"thread_id":%q}`, tr.thread))
	require.Equal(t, http.StatusOK, status, "%v", body)
	assert.Equal(t, "The user asked about order 1234; it ships today.", body["summary"])

	reqs := fake.Requests()
	require.Len(t, reqs, 2)
	assert.Equal(t, "chat summary-e2e", reqs[1].Op+" "+reqs[1].Model)
	assert.Contains(t, string(reqs[1].Body), "Where is order 1234?")
	assert.Contains(t, string(reqs[1].Body), "It ships today.")
}

func TestOpenAIClassifier(t *testing.T) {
	withClassifier := func(c *config.Config) { c.OpenAI.EscalationModelID = "classifier-e2e" }
	t.Run("ESCALATE", func(t *testing.T) {
		in, fake := openaiInstanceWith(t, fakeopenai.Script{Deltas: []string{"Never", " sent."}}, withClassifier)
		assert.Equal(t, "local+openai-classifier", readyModel(t, in)["escalation"])
		fake.Push(fakeopenai.Script{Text: "ESCALATE the user wants a refund approved"})

		c := dial(t, in, "/ws/chat/")
		tr := talk(t, c, "Can you approve my refund today?", "")
		require.Empty(t, tr.errCode)
		assert.Equal(t, "classifier", tr.escalation)
		assert.Empty(t, tr.tokens, "no answer once escalated")
		assert.Equal(t, []string{"chat classifier-e2e"}, openaiOps(fake))
		assert.Contains(t, string(fake.Requests()[0].Body), "Can you approve my refund today?")
		assert.Equal(t, websocket.CloseNormalClosure, c.closed())
	})
	for name, answer := range map[string]string{
		"CONTINUE":    "CONTINUE",
		"unparseable": "Well, the user seems calm, so probably no need.",
	} {
		t.Run(name, func(t *testing.T) {
			in, fake := openaiInstanceWith(t, fakeopenai.Script{Deltas: []string{"It ships", " today."}}, withClassifier)
			fake.Push(fakeopenai.Script{Text: answer})

			tr := talk(t, dial(t, in, "/ws/chat/"), "Where is my order?", "")
			require.Empty(t, tr.errCode)
			assert.Empty(t, tr.escalation, "no escalation")
			assert.Equal(t, "It ships today.", tr.text())
			assert.Equal(t, []string{"chat classifier-e2e", "chat-stream " + e2eOpenAIModel}, openaiOps(fake))
		})
	}
	t.Run("the classifier failing is skipped", func(t *testing.T) {
		in, fake := openaiInstanceWith(t, fakeopenai.Script{Deltas: []string{"It ships", " today."}}, withClassifier)
		fake.Push(fakeopenai.Script{HTTPError: &fakeopenai.HTTPError{Status: http.StatusNotFound, Body: `{"error":"model 'classifier-e2e' not found"}`}})
		tr := talk(t, dial(t, in, "/ws/chat/"), "Where is my order?", "")
		require.Empty(t, tr.errCode)
		assert.Equal(t, "It ships today.", tr.text())
	})
}

// runErr starts an instance with cfg and returns why start-up stopped.
func runErr(t *testing.T, cfg config.Config) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	return app.Run(ctx, cfg, slog.New(slog.DiscardHandler), ln)
}

func TestOpenAISettingWithoutOpenAIStopsStart(t *testing.T) {
	for name, edit := range map[string]func(*config.Config){
		"OPENAI_API_KEY":             func(c *config.Config) { c.OpenAI.APIKey = "sk-x" },
		"OPENAI_MODEL_ID_GUARDRAIL":  func(c *config.Config) { c.OpenAI.GuardrailModelID = "judge" },
		"OPENAI_MODEL_ID_ESCALATION": func(c *config.Config) { c.OpenAI.EscalationModelID = "classifier" },
		"OPENAI_MODEL_ID_SUMMARY":    func(c *config.Config) { c.OpenAI.SummaryModelID = "summary" },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := defaults(t)
			edit(&cfg)
			err := runErr(t, cfg)
			require.Error(t, err, "start-up stops: the setting would be ignored on the local model")
			assert.Contains(t, err.Error(), name+": needs OPENAI_BASE_URL and OPENAI_MODEL_ID_CHAT")
			assert.NotContains(t, err.Error(), "sk-x")
		})
	}
}

func TestTwoModelProvidersStopStart(t *testing.T) {
	cfg := defaults(t)
	cfg.Bedrock.Region, cfg.Bedrock.ChatModelID = "us-east-1", e2eChatModel
	cfg.OpenAI.BaseURL, cfg.OpenAI.ChatModelID = "http://127.0.0.1:1/v1", e2eOpenAIModel
	err := runErr(t, cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "select bedrock")
	assert.Contains(t, err.Error(), "select openai")
}

// TestOpenAIAcrossInstances: a thread answered on one instance continues on
// another, whose request to the model carries the thread as the first
// instance stored it.
func TestOpenAIAcrossInstances(t *testing.T) {
	fake := fakeopenai.New(fakeopenai.Script{Deltas: []string{"Hello", " Ada."}})
	t.Cleanup(fake.Close)
	dsn := servers.Postgres.NewDatabase(context.Background(), t)
	mk := func(id string) config.Config {
		c := defaults(t)
		c.InstanceID = id
		useRedis(&c, redisURL())
		c.Store.DatabaseURL = dsn
		c.OpenAI.BaseURL, c.OpenAI.ChatModelID = fake.URL, e2eOpenAIModel
		return c
	}
	a, b := start(t, mk("a")), start(t, mk("b"))
	eventually(t, "the instances serve", func() bool { return get(t, a, "/health/") == 200 && get(t, b, "/health/") == 200 })

	first := talk(t, dial(t, a, "/ws/chat/"), "My name is Ada.", "")
	require.Empty(t, first.errCode)
	fake.Push(fakeopenai.Script{Deltas: []string{"Yes", ", Ada."}})
	second := talk(t, dial(t, b, "/ws/chat/"), "Do you remember me?", first.thread)
	require.Empty(t, second.errCode)
	assert.Equal(t, "Yes, Ada.", second.text())

	var body struct {
		Messages []struct{ Role, Content string } `json:"messages"`
	}
	reqs := fake.Requests()
	require.Len(t, reqs, 2)
	require.NoError(t, json.Unmarshal(reqs[1].Body, &body))
	var convo []string
	for _, m := range body.Messages {
		if m.Role != "system" {
			convo = append(convo, m.Role+": "+m.Content)
		}
	}
	assert.Equal(t, []string{"user: My name is Ada.", "assistant: Hello Ada.", "user: Do you remember me?"}, convo)
}
