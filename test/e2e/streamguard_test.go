package e2e

import (
	"encoding/json"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/config"
	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/test/fakebedrock"
)

// The chat paths in each BEDROCK_GUARDRAIL_STREAM_MODE, against the fake's
// wire format of Bedrock's streaming guardrail: an answer it passes; one
// it stops, rewritten; one stopped at every rewrite, then the fallback and
// the escalation. sync never lets the blocked text out; async lets out
// what it had sent before it intervened, and nothing after.
func TestChatInEachGuardrailStreamMode(t *testing.T) {
	for _, mode := range []string{"sync", "async"} {
		withMode := func(c *config.Config) {
			c.Bedrock.GuardrailID, c.Bedrock.GuardrailVersion, c.Bedrock.GuardrailStreamMode = "gr-e2e", "4", mode
		}
		stopped := fakebedrock.Script{
			Deltas:       []string{"Our store opens at nine.", " The manager is Bob.", " Ask him."},
			Intervention: &fakebedrock.Intervention{After: 1, Leaked: 2, Message: "Sorry, I cannot talk about that."},
		}
		t.Run(mode+": passed", func(t *testing.T) {
			deltas := []string{"Your order", " ships", " today.", " Anything", " else?"}
			in, fake := bedrockInstanceWith(t, fakebedrock.Script{Deltas: deltas}, withMode)
			tr := talk(t, dial(t, in, "/ws/chat/"), "Where is my order?", "")
			require.Empty(t, tr.errCode)
			assert.Equal(t, deltas, tr.tokens)
			reqs := fake.Requests()
			require.Len(t, reqs, 1, "no ApplyGuardrail call: Bedrock checks the stream")
			var body struct{ GuardrailConfig fakebedrock.StreamGuardrail }
			require.NoError(t, json.Unmarshal(reqs[0].Body, &body))
			assert.Equal(t, fakebedrock.StreamGuardrail{GuardrailIdentifier: "gr-e2e", GuardrailVersion: "4", StreamProcessingMode: mode}, body.GuardrailConfig)
			assert.Equal(t, "bedrock-stream-"+mode, readyModel(t, in)["guardrail"])
			assert.Equal(t, []string{"user: Where is my order?", "assistant: Your order ships today. Anything else?"}, threadHistory(t, in, tr.thread))
		})
		t.Run(mode+": stopped, then rewritten", func(t *testing.T) {
			in, fake := bedrockInstanceWith(t, fakebedrock.Script{Deltas: []string{" Please", " ask", " the front desk."}}, withMode)
			fake.Push(stopped)
			tr := talk(t, dial(t, in, "/ws/chat/"), "Who runs the store?", "")
			require.Empty(t, tr.errCode)
			assert.Empty(t, tr.escalation)
			// sync: Bedrock sent the first sentence, then its blocked
			// message; the sentence was still held by the server (its
			// end is seen at the next space) and goes with the stopped
			// answer. async: Bedrock had sent two more deltas, which
			// ended the first two sentences: they were out before the
			// guardrail stopped the stream.
			said := ""
			if mode == "async" {
				said = "Our store opens at nine. The manager is Bob."
			}
			assert.Equal(t, said+" Please ask the front desk.", tr.text())
			assert.NotContains(t, tr.text(), "Sorry, I cannot", "the guardrail's blocked message is not sent")
			assert.NotContains(t, tr.text(), "Ask him", "nothing after the intervention is sent")
			reqs := fake.Requests()
			require.Len(t, reqs, 2)
			assert.Contains(t, string(reqs[1].Body), "guardrail_intervened", "the rewrite is told why")
		})
		t.Run(mode+": stopped at every rewrite: fallback and escalation", func(t *testing.T) {
			in, fake := bedrockInstanceWith(t, fakebedrock.Script{
				Deltas:       []string{"The manager", " is Bob."},
				Intervention: &fakebedrock.Intervention{After: 0, Message: "Sorry, I cannot talk about that."},
			}, withMode)
			c := dial(t, in, "/ws/chat/")
			tr := talk(t, c, "Who runs the store?", "")
			require.Empty(t, tr.errCode)
			assert.Equal(t, "guardrail", tr.escalation)
			assert.Equal(t, conversation.DefaultFallbackAnswer, tr.text())
			assert.Len(t, fake.Requests(), 3, "the answer and MAXIMUM_GUARDRAIL_REWRITES=2 rewrites")
			assert.Equal(t, websocket.CloseNormalClosure, c.closed())
		})
	}
}
