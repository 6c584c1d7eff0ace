package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/config"
	"github.com/wsserver/wsserver/adapters/postgres"
	"github.com/wsserver/wsserver/cmd/wsserver/app"
	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/test/internal/fakemodel"
)

// The chat suite on each model provider that speaks a wire: every
// scenario runs once per provider, against the provider's fake
// (test/fakebedrock, test/fakeopenai) through its adapters. A provider
// (bedrock_test.go, openai_test.go) says how its wire tells what a
// scenario needs: an answer, a refusal, a cut, a stop reason; what only
// one wire has is tested in its own file.

// modelAnswer is what a provider's fake answers to one call, in the words of
// neither wire.
type modelAnswer struct {
	// deltas are the streamed pieces; a completion answers them joined.
	deltas []string
	// text is a completion's answer, or one piece, when deltas is nil.
	text string
	// stop is why the answer ends; empty: its turn ended.
	stop ports.StopReason
	// usage is the tokens reported; nil: the fake's own count.
	usage *ports.Usage
	// hang keeps the stream open after the deltas: only a cancel ends it.
	hang bool
	// fail is how the call fails: one of the provider's cuts (after
	// cutAfter deltas), or a refusal before any answer.
	fail     failure
	cutAfter int
}

// failure is a way a call fails.
type failure string

const (
	// throttled is HTTP 429 before any answer.
	throttled failure = "throttled"
	// serverError is HTTP 500 before any answer.
	serverError failure = "server error"
	// modelNotFound is HTTP 404 before any answer: the model is unknown.
	modelNotFound failure = "model not found"
)

// call is one call a provider's fake received.
type call struct {
	fakemodel.Call
	// model is the model the call names.
	model string
	// wire is the fake's own Request, for a provider's checks.
	wire any
}

func (c call) String() string { return c.Op + " " + c.model }

// modelFake is a provider's fake, as the scenarios drive it.
type modelFake interface {
	push(answers ...modelAnswer)
	calls() []call
	waitEnded(ctx context.Context, i int) (call, error)
}

// wireFake is a fake of S scripts and R requests as a modelFake: script
// says an answer in its wire's words, call reads a request.
type wireFake[S, R any] struct {
	fake interface {
		Push(scripts ...S)
		Requests() []R
		WaitEnded(ctx context.Context, i int) (R, error)
	}
	script func(modelAnswer) S
	call   func(R) call
}

func (f wireFake[S, R]) push(answers ...modelAnswer) {
	for _, a := range answers {
		f.fake.Push(f.script(a))
	}
}

func (f wireFake[S, R]) calls() []call {
	var out []call
	for _, r := range f.fake.Requests() {
		out = append(out, f.call(r))
	}
	return out
}

func (f wireFake[S, R]) waitEnded(ctx context.Context, i int) (call, error) {
	r, err := f.fake.WaitEnded(ctx, i)
	return f.call(r), err
}

// provider is a model provider of the chat suite.
type provider struct {
	// name names the provider's subtests.
	name string
	// chat and guardrail are the names /ready/ gives its chat model
	// ("bedrock": its judge is then "bedrock-judge", ...) and its
	// guardrail ("local", unless the provider checks its streams).
	chat, guardrail string
	// leftOut are the scenarios (their tests' names) that cannot hold
	// on the provider, each with why.
	leftOut map[string]string
	// start starts a fake answering def to every call with no pushed
	// answer, and an instance whose chat model runs on it, with edit
	// (nil: none) applied to its configuration.
	start func(t *testing.T, def modelAnswer, edit func(*config.Config)) (*instance, modelFake)
	// chatModel is the instance's chat model; streamOp and completeOp
	// are the fake's ops of a streamed and of a whole answer.
	chatModel, streamOp, completeOp string
	// checkChat checks the wire of a chat's streamed call beyond its op,
	// model and body: its authentication, its options.
	checkChat func(t *testing.T, c call)
	// refusals are two answers that refuse a call before it answers,
	// each retried.
	refusals [2]modelAnswer
	// cuts are the provider's ways to fail a stream in the middle of an
	// answer.
	cuts []failure
	// judge, summary and classifier set the model of a purpose.
	judge, summary, classifier func(c *config.Config, model string)
	// settings are the provider's settings that need the provider chosen,
	// each set on a configuration; needs is the error's words for it;
	// secret, when set, is a value of settings the error must not show.
	settings      map[string]func(*config.Config)
	needs, secret string
}

// providers are the providers each scenario runs on: Bedrock with the
// server's guardrail and with Bedrock's own in each stream mode, and an
// OpenAI-compatible endpoint.
var providers = []provider{bedrockProvider(""), bedrockProvider("sync"), bedrockProvider("async"), openaiProvider}

// onEachProvider runs scenario on each provider, as a subtest named after
// it.
func onEachProvider(t *testing.T, scenario func(t *testing.T, p provider)) {
	t.Helper()
	for _, p := range providers {
		t.Run(p.name, func(t *testing.T) {
			if why, ok := p.leftOut[strings.Split(t.Name(), "/")[0]]; ok {
				t.Skip("left out on " + p.name + ": " + why)
			}
			scenario(t, p)
		})
	}
}

// ops lists the fake's calls as "op model".
func ops(f modelFake) []string {
	var out []string
	for _, c := range f.calls() {
		out = append(out, c.String())
	}
	return out
}

func TestChatOnEachModel(t *testing.T) {
	onEachProvider(t, func(t *testing.T, p provider) {
		deltas := []string{"Hello", " from", " the", " fake", " endpoint", "."}
		in, fake := p.start(t, modelAnswer{deltas: deltas, usage: &ports.Usage{InputTokens: 42, OutputTokens: 6}}, nil)
		tr := talk(t, dial(t, in, "/ws/chat/"), "Hello, who are you?", "")
		require.Empty(t, tr.errCode)
		assert.Equal(t, deltas, tr.tokens, "the tokens are the model's deltas, in order")
		assert.Equal(t, false, tr.end["cancelled"])
		assert.Equal(t, map[string]any{"input_tokens": float64(42), "output_tokens": float64(6)}, tr.end["usage"])
		assert.Equal(t, []string{"user: Hello, who are you?", "assistant: Hello from the fake endpoint."}, threadHistory(t, in, tr.thread))

		calls := fake.calls()
		require.Len(t, calls, 1)
		assert.Equal(t, p.streamOp+" "+p.chatModel, calls[0].String())
		assert.Contains(t, string(calls[0].Body), "Hello, who are you?")
		p.checkChat(t, calls[0])

		assert.Equal(t, map[string]any{"chat": p.chat, "guardrail": p.guardrail, "escalation": "local"}, readyModel(t, in),
			"/ready/ names the adapters")
	})
}

func TestChatOnEachModelCancelled(t *testing.T) {
	onEachProvider(t, func(t *testing.T, p provider) {
		in, fake := p.start(t, modelAnswer{
			// Tokens are held until their sentence passes the guardrail:
			// the first is sent when the second sentence starts.
			deltas: []string{"One.", " Two.", " Three"},
			hang:   true, // no end of the answer: only the cancel ends the call
		}, nil)
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
		req, err := fake.waitEnded(ctx, 0)
		require.NoError(t, err, "the fake sees the call end")
		assert.True(t, req.ClientGone, "the stream was closed by the client, not finished by the fake")

		// The thread's lock is released: its next message is answered.
		fake.push(modelAnswer{deltas: []string{"Done", "."}})
		tr := talk(t, c, "Again", thread)
		require.Empty(t, tr.errCode)
		assert.Equal(t, false, tr.end["cancelled"])
		assert.Len(t, fake.calls(), 2)
	})
}

func TestModelRefusedBeforeTheFirstToken(t *testing.T) {
	onEachProvider(t, func(t *testing.T, p provider) {
		deltas := []string{"Sorry", " for", " the", " wait", "."}
		in, fake := p.start(t, modelAnswer{deltas: deltas}, nil)
		fake.push(p.refusals[:]...) // the adapter makes 3 attempts

		tr := talk(t, dial(t, in, "/ws/chat/"), "Are you there?", "")
		require.Empty(t, tr.errCode)
		assert.Equal(t, deltas, tr.tokens, "the retries are invisible: each token once, in order")
		assert.Equal(t, false, tr.end["cancelled"])
		assert.Len(t, fake.calls(), 3, "two refused calls, then the answer")
	})
}

func TestModelStreamFailsMidAnswer(t *testing.T) {
	onEachProvider(t, func(t *testing.T, p provider) {
		for _, cut := range p.cuts {
			t.Run(string(cut), func(t *testing.T) {
				in, fake := p.start(t, modelAnswer{deltas: []string{"Fine", " now", "."}}, nil)
				fake.push(modelAnswer{deltas: []string{"Once upon a time.", " There", " was"}, fail: cut, cutAfter: 2})
				c := dial(t, in, "/ws/chat/")

				first := talk(t, c, "Tell me a story", "")
				require.NotEmpty(t, first.thread)
				assert.Equal(t, "internal", first.errCode, "the client gets an error event, not end")
				assert.Equal(t, "Once upon a time.", first.text(), "the sentence that passed before the failure was sent")
				assert.Equal(t, []string{"user: Tell me a story"}, threadHistory(t, in, first.thread),
					"the partial answer is not stored as an answer")

				// The thread's lock was released: the same thread answers again.
				second := talk(t, c, "Try again", first.thread)
				require.Empty(t, second.errCode)
				assert.Equal(t, "Fine now.", second.text())
				assert.Equal(t, []string{"user: Tell me a story", "user: Try again", "assistant: Fine now."}, threadHistory(t, in, first.thread))
				assert.Len(t, fake.calls(), 2, "nothing is retried once a token was sent")
			})
		}
	})
}

// TestModelStoppedByItsFilter: the provider's own filter stops an answer
// (Bedrock's guardrail_intervened, an OpenAI-compatible content_filter).
func TestModelStoppedByItsFilter(t *testing.T) {
	onEachProvider(t, func(t *testing.T, p provider) {
		stopped := modelAnswer{deltas: []string{"The manager", " is Bob"}, stop: ports.StopGuardrailIntervened}
		t.Run("the rewrite passes", func(t *testing.T) {
			in, fake := p.start(t, modelAnswer{deltas: []string{"Please ask", " the front desk."}}, nil)
			fake.push(stopped)

			tr := talk(t, dial(t, in, "/ws/chat/"), "Who runs the store?", "")
			require.Empty(t, tr.errCode)
			assert.Empty(t, tr.escalation)
			assert.Equal(t, "Please ask the front desk.", tr.text(), "nothing of the stopped answer is sent")
			calls := fake.calls()
			require.Len(t, calls, 2)
			assert.Contains(t, string(calls[1].Body), "guardrail_intervened", "the rewrite is told why")
		})
		t.Run("every rewrite stopped: fallback and escalation", func(t *testing.T) {
			in, fake := p.start(t, stopped, nil)
			c := dial(t, in, "/ws/chat/")

			tr := talk(t, c, "Who runs the store?", "")
			require.Empty(t, tr.errCode)
			assert.Equal(t, "guardrail", tr.escalation)
			assert.NotContains(t, tr.text(), "Bob")
			assert.Equal(t, conversation.DefaultFallbackAnswer, tr.text())
			assert.Len(t, fake.calls(), 3, "the answer and MAXIMUM_GUARDRAIL_REWRITES=2 rewrites")
			assert.Equal(t, websocket.CloseNormalClosure, c.closed())
		})
	})
}

// TestModelMaxTokens: an answer cut at the token limit (Bedrock's
// max_tokens, an OpenAI-compatible length).
func TestModelMaxTokens(t *testing.T) {
	onEachProvider(t, func(t *testing.T, p provider) {
		dsn := servers.Postgres.NewDatabase(context.Background(), t)
		in, fake := p.start(t, modelAnswer{deltas: []string{"The first step is", " to open the"}, stop: ports.StopMaxTokens},
			func(c *config.Config) { c.Store.DatabaseURL = dsn })

		tr := talk(t, dial(t, in, "/ws/chat/"), "How do I return a parcel?", "")
		require.Empty(t, tr.errCode)
		assert.Equal(t, false, tr.end["cancelled"], "the answer ends")
		assert.Equal(t, "The first step is to open the", tr.text(), "the cut answer is sent as it came")
		assert.Len(t, fake.calls(), 1, "a cut answer is not rewritten")
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
	})
}

func TestModelJudge(t *testing.T) {
	onEachProvider(t, func(t *testing.T, p provider) {
		in, fake := p.start(t, modelAnswer{}, func(c *config.Config) { p.judge(c, "judge-e2e") })
		assert.Equal(t, p.chat+"-judge", readyModel(t, in)["guardrail"])
		fake.push(
			modelAnswer{deltas: []string{"The manager", " is Bob."}},
			modelAnswer{text: "FAIL: it names an employee"},
			modelAnswer{deltas: []string{"Please ask", " the front desk."}},
			modelAnswer{text: "PASS"},
		)
		tr := talk(t, dial(t, in, "/ws/chat/"), "Who runs the store?", "")
		require.Empty(t, tr.errCode)
		assert.Equal(t, "Please ask the front desk.", tr.text(), "neither the failing sentence nor the judge's words are sent")
		assert.Equal(t, []string{
			p.streamOp + " " + p.chatModel, p.completeOp + " judge-e2e",
			p.streamOp + " " + p.chatModel, p.completeOp + " judge-e2e",
		}, ops(fake))
		assert.Contains(t, string(fake.calls()[2].Body), "it names an employee", "the judge's reason feeds the rewrite")
	})
}

func TestModelJudgeKeepsFailing(t *testing.T) {
	onEachProvider(t, func(t *testing.T, p provider) {
		in, fake := p.start(t, modelAnswer{fail: serverError}, func(c *config.Config) { p.judge(c, "judge-e2e") })
		fake.push(modelAnswer{deltas: []string{"Your order", " ships today."}})
		tr := talk(t, dial(t, in, "/ws/chat/"), "Where is my order?", "")
		assert.Equal(t, "internal", tr.errCode, "no decision: the chat fails")
		assert.Empty(t, tr.tokens, "the unchecked text is not sent")
		assert.Equal(t, []string{"user: Where is my order?"}, threadHistory(t, in, tr.thread))
		assert.Len(t, fake.calls(), 4, "the answer, then three attempts at its check")
	})
}

func TestModelSummary(t *testing.T) {
	onEachProvider(t, func(t *testing.T, p provider) {
		in, fake := p.start(t, modelAnswer{deltas: []string{"It ships", " today."}}, func(c *config.Config) { p.summary(c, "summary-e2e") })
		tr := talk(t, dial(t, in, "/ws/chat/"), "Where is order 1234?", "")
		require.Empty(t, tr.errCode)

		fake.push(modelAnswer{text: "  The user asked about order 1234; it ships today.\n"})
		status, body := api(t, in, "/api/thread/summarize", "", csrfToken(t, in), fmt.Sprintf(`{"thread_id":%q}`, tr.thread))
		require.Equal(t, http.StatusOK, status, "%v", body)
		assert.Equal(t, "The user asked about order 1234; it ships today.", body["summary"])

		calls := fake.calls()
		require.Len(t, calls, 2)
		assert.Equal(t, p.completeOp+" summary-e2e", calls[1].String())
		assert.Contains(t, string(calls[1].Body), "Where is order 1234?")
		assert.Contains(t, string(calls[1].Body), "It ships today.")
	})
}

func TestModelClassifier(t *testing.T) {
	onEachProvider(t, func(t *testing.T, p provider) {
		withClassifier := func(c *config.Config) { p.classifier(c, "classifier-e2e") }
		t.Run("ESCALATE", func(t *testing.T) {
			in, fake := p.start(t, modelAnswer{deltas: []string{"Never", " sent."}}, withClassifier)
			assert.Equal(t, "local+"+p.chat+"-classifier", readyModel(t, in)["escalation"])
			fake.push(modelAnswer{text: "ESCALATE the user wants a refund approved"})

			c := dial(t, in, "/ws/chat/")
			tr := talk(t, c, "Can you approve my refund today?", "")
			require.Empty(t, tr.errCode)
			assert.Equal(t, "classifier", tr.escalation)
			assert.Empty(t, tr.tokens, "no answer once escalated")
			assert.Equal(t, []string{p.completeOp + " classifier-e2e"}, ops(fake))
			assert.Contains(t, string(fake.calls()[0].Body), "Can you approve my refund today?")
			assert.Equal(t, websocket.CloseNormalClosure, c.closed())
		})
		for name, a := range map[string]modelAnswer{
			"CONTINUE":                          {text: "CONTINUE"},
			"unparseable":                       {text: "Well, the user seems calm, so probably no need."},
			"ESCALATED is not read":             {text: "ESCALATED"},
			"the classifier failing is skipped": {fail: modelNotFound},
		} {
			t.Run(name, func(t *testing.T) {
				in, fake := p.start(t, modelAnswer{deltas: []string{"It ships", " today."}}, withClassifier)
				fake.push(a)

				tr := talk(t, dial(t, in, "/ws/chat/"), "Where is my order?", "")
				require.Empty(t, tr.errCode)
				assert.Empty(t, tr.escalation, "no escalation")
				assert.Equal(t, "It ships today.", tr.text())
				assert.Equal(t, []string{p.completeOp + " classifier-e2e", p.streamOp + " " + p.chatModel}, ops(fake))
			})
		}
		t.Run("the local rules first", func(t *testing.T) {
			in, fake := p.start(t, modelAnswer{text: "CONTINUE"}, withClassifier)
			tr := talk(t, dial(t, in, "/ws/chat/"), "Let me talk to a real person", "")
			assert.Equal(t, "user_requested", tr.escalation)
			assert.Empty(t, fake.calls(), "a rule decided: the classifier is not asked")
		})
	})
}

func TestModelSettingWithoutItsProviderStopsStart(t *testing.T) {
	onEachProvider(t, func(t *testing.T, p provider) {
		for name, edit := range p.settings {
			t.Run(name, func(t *testing.T) {
				cfg := defaults(t)
				edit(&cfg)
				err := runErr(t, cfg)
				require.Error(t, err, "start-up stops: the setting would be ignored on the local model")
				assert.Contains(t, err.Error(), name+": "+p.needs)
				if p.secret != "" {
					assert.NotContains(t, err.Error(), p.secret)
				}
			})
		}
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
