package e2e

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/config"
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

const e2eChatModel = "anthropic.claude-e2e-v1:0"

// bedrockProvider runs the chat suite (models_test.go) on the Bedrock
// adapters against test/fakebedrock, with the server's guardrail when
// streamMode is empty, else with Bedrock's own checking the stream in
// that BEDROCK_GUARDRAIL_STREAM_MODE (issue 15: the whole suite passes in
// each mode). The fake's guardrail passes every answer of the suite.
func bedrockProvider(streamMode string) provider {
	p := provider{
		name:      "bedrock",
		chat:      "bedrock",
		guardrail: "local",
		start: func(t *testing.T, def modelAnswer, edit func(*config.Config)) (*instance, modelFake) {
			t.Helper()
			in, fake := bedrockInstanceWith(t, bedrockScript(def), func(c *config.Config) {
				if streamMode != "" {
					c.Bedrock.GuardrailID, c.Bedrock.GuardrailVersion, c.Bedrock.GuardrailStreamMode = "gr-e2e", "4", streamMode
				}
				if edit != nil {
					edit(c)
				}
			})
			return in, bedrockFake(fake)
		},
		chatModel:  e2eChatModel,
		streamOp:   "converse-stream",
		completeOp: "converse",
		checkChat: func(t *testing.T, c call) {
			t.Helper()
			assert.Contains(t, c.Header.Get("Authorization"), "Credential=AKIDE2ETEST/", "signed with the environment's credentials")
			var body struct{ GuardrailConfig *fakebedrock.StreamGuardrail }
			require.NoError(t, json.Unmarshal(c.Body, &body))
			if streamMode == "" {
				assert.Nil(t, body.GuardrailConfig, "the server checks the answer: Bedrock is asked for no guardrail")
			} else {
				assert.Equal(t, &fakebedrock.StreamGuardrail{GuardrailIdentifier: "gr-e2e", GuardrailVersion: "4", StreamProcessingMode: streamMode}, body.GuardrailConfig)
			}
		},
		refusals:   [2]modelAnswer{{fail: throttled}, {fail: throttled}},
		cuts:       []failure{modelStreamError},
		judge:      func(c *config.Config, model string) { c.Bedrock.GuardrailModelID = model },
		summary:    func(c *config.Config, model string) { c.Bedrock.SummaryModelID = model },
		classifier: func(c *config.Config, model string) { c.Bedrock.EscalationModelID = model },
		settings: map[string]func(*config.Config){
			"BEDROCK_GUARDRAIL_ID":        func(c *config.Config) { c.Bedrock.GuardrailID, c.Bedrock.GuardrailVersion = "gr", "1" },
			"BEDROCK_MODEL_ID_GUARDRAIL":  func(c *config.Config) { c.Bedrock.GuardrailModelID = "judge" },
			"BEDROCK_MODEL_ID_ESCALATION": func(c *config.Config) { c.Bedrock.EscalationModelID = "classifier" },
			"BEDROCK_MODEL_ID_SUMMARY":    func(c *config.Config) { c.Bedrock.SummaryModelID = "summary" },
		},
		needs: "needs AWS_BEDROCK_REGION and BEDROCK_MODEL_ID_CHAT",
	}
	if streamMode != "" {
		p.name += "-stream-" + streamMode
		p.guardrail = "bedrock-stream-" + streamMode
		noJudge := "Bedrock's guardrail checks the stream, so no judge model is asked (BEDROCK_MODEL_ID_GUARDRAIL is not read)"
		p.leftOut = map[string]string{
			"TestModelJudge":                               noJudge,
			"TestModelJudgeKeepsFailing":                   noJudge,
			"TestModelSettingWithoutItsProviderStopsStart": "it starts no Bedrock, so no stream mode: the bedrock row runs it",
		}
	}
	return p
}

// modelStreamError is Bedrock's way to fail a stream mid-answer: an
// exception frame.
const modelStreamError failure = "modelStreamErrorException"

// bedrockScript says a in Bedrock's words.
func bedrockScript(a modelAnswer) fakebedrock.Script {
	sc := fakebedrock.Script{Text: a.text, Deltas: a.deltas, Stop: string(a.stop), Hang: a.hang}
	if a.usage != nil {
		sc.Usage = fakebedrock.Usage{InputTokens: a.usage.InputTokens, OutputTokens: a.usage.OutputTokens}
	}
	switch a.fail {
	case "":
	case throttled:
		sc.HTTPError = fakebedrock.ThrottlingError()
	case serverError:
		sc.HTTPError = fakebedrock.ServerError()
	case modelNotFound:
		sc.HTTPError = &fakebedrock.HTTPError{Status: http.StatusNotFound, Type: "ResourceNotFoundException", Message: "Could not resolve the foundation model from the provided model identifier."}
	case modelStreamError:
		sc.Exception = &fakebedrock.Exception{After: a.cutAfter, Type: "modelStreamErrorException", Message: "the model failed"}
	default:
		panic("bedrock: no such failure: " + a.fail)
	}
	return sc
}

// bedrockFake is test/fakebedrock as the chat suite drives it.
func bedrockFake(fake *fakebedrock.Server) modelFake {
	return wireFake[fakebedrock.Script, fakebedrock.Request]{fake: fake, script: bedrockScript, call: func(r fakebedrock.Request) call {
		return call{Call: r.Call, model: r.ModelID, wire: r}
	}}
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
		assert.Equal(t, []string{"converse-stream " + e2eChatModel, "apply-guardrail gr-e2e"}, ops(bedrockFake(fake)))
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
		}, ops(bedrockFake(fake)))
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
