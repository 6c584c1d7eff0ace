package e2e

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/test/fakebedrock"
)

// bedrockInstance starts a fake Bedrock endpoint and an instance whose
// chat model runs on it, through the real SDK client and its default
// credential chain. The static credentials come from the environment, so
// the test must not be parallel (t.Setenv refuses it anyway).
func bedrockInstance(t *testing.T, def fakebedrock.Script) (*instance, *fakebedrock.Server) {
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
	cfg.Bedrock.ChatModelID = "anthropic.claude-e2e-v1:0"
	cfg.Bedrock.EndpointURL = fake.URL
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
