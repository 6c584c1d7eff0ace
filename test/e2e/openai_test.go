package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/config"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/test/fakeopenai"
)

// The chat suite (models_test.go) on an OpenAI-compatible endpoint
// (test/fakeopenai) through the openai adapters, as OPENAI_* select them,
// and what only this wire has.

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

// openaiProvider runs the chat suite (models_test.go) on the openai
// adapters against test/fakeopenai.
var openaiProvider = provider{
	name:      "openai",
	chat:      "openai",
	guardrail: "local",
	start: func(t *testing.T, def modelAnswer, edit func(*config.Config)) (*instance, modelFake) {
		t.Helper()
		in, fake := openaiInstanceWith(t, openaiScript(def), edit)
		return in, openaiFake(fake)
	},
	chatModel:  e2eOpenAIModel,
	streamOp:   "chat-stream",
	completeOp: "chat",
	checkChat: func(t *testing.T, c call) {
		t.Helper()
		assert.Equal(t, "Bearer "+e2eOpenAIKey, c.Header.Get("Authorization"))
		r, ok := c.wire.(fakeopenai.Request)
		require.True(t, ok, "%T", c.wire)
		assert.True(t, r.StreamOptions, "OPENAI_STREAM_USAGE is on by default")
	},
	refusals:   [2]modelAnswer{{fail: throttled}, {fail: serverError}},
	cuts:       []failure{connectionDropped, errorEvent},
	judge:      func(c *config.Config, model string) { c.OpenAI.GuardrailModelID = model },
	summary:    func(c *config.Config, model string) { c.OpenAI.SummaryModelID = model },
	classifier: func(c *config.Config, model string) { c.OpenAI.EscalationModelID = model },
	settings: map[string]func(*config.Config){
		"OPENAI_API_KEY":             func(c *config.Config) { c.OpenAI.APIKey = "sk-x" },
		"OPENAI_MODEL_ID_GUARDRAIL":  func(c *config.Config) { c.OpenAI.GuardrailModelID = "judge" },
		"OPENAI_MODEL_ID_ESCALATION": func(c *config.Config) { c.OpenAI.EscalationModelID = "classifier" },
		"OPENAI_MODEL_ID_SUMMARY":    func(c *config.Config) { c.OpenAI.SummaryModelID = "summary" },
	},
	needs:  "needs OPENAI_BASE_URL and OPENAI_MODEL_ID_CHAT",
	secret: "sk-x",
}

// The ways an OpenAI-compatible stream fails mid-answer.
const (
	connectionDropped failure = "connection dropped"
	errorEvent        failure = "error event" // vLLM's and LiteLLM's
)

// openaiScript says a in the words of an OpenAI-compatible endpoint.
func openaiScript(a modelAnswer) fakeopenai.Script {
	sc := fakeopenai.Script{Text: a.text, Deltas: a.deltas, Hang: a.hang}
	switch a.stop {
	case "":
	case ports.StopMaxTokens:
		sc.Finish = "length"
	case ports.StopGuardrailIntervened:
		sc.Finish = "content_filter"
	default:
		panic("openai: no finish_reason for " + a.stop)
	}
	if a.usage != nil {
		sc.Usage = fakeopenai.Usage{PromptTokens: a.usage.InputTokens, CompletionTokens: a.usage.OutputTokens}
	}
	switch a.fail {
	case "":
	case throttled:
		sc.HTTPError = fakeopenai.ThrottlingError()
	case serverError:
		sc.HTTPError = fakeopenai.ServerError()
	case modelNotFound:
		sc.HTTPError = &fakeopenai.HTTPError{Status: http.StatusNotFound, Body: `{"error":"model 'classifier-e2e' not found"}`}
	case connectionDropped:
		sc.Cut = &fakeopenai.Cut{After: a.cutAfter}
	case errorEvent:
		sc.Cut = &fakeopenai.Cut{After: a.cutAfter, Error: &fakeopenai.APIError{Message: "the engine died", Type: "server_error"}}
	default:
		panic("openai: no such failure: " + a.fail)
	}
	return sc
}

// openaiFake is test/fakeopenai as the chat suite drives it.
func openaiFake(fake *fakeopenai.Server) modelFake {
	return wireFake[fakeopenai.Script, fakeopenai.Request]{fake: fake, script: openaiScript, call: func(r fakeopenai.Request) call {
		return call{Call: r.Call, model: r.Model, wire: r}
	}}
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
