package bedrock_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/bedrock"
	"github.com/wsserver/wsserver/adapters/internal/modeltest"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/test/fakebedrock"
)

// Bedrock's streaming guardrail (BEDROCK_GUARDRAIL_STREAM_MODE) against
// the fake's wire format: the chat stream asks for it in its
// guardrailConfig, and an intervention ends the answer with
// StopGuardrailIntervened, without the guardrail's blocked message. The
// fake intervenes only on a call that asked for a guardrail.
func TestStreamGuardrail(t *testing.T) {
	deltas := []string{"The manager", " is Bob", " Smith."}
	iv := &fakebedrock.Intervention{After: 1, Leaked: 1, Message: "Sorry, the model cannot answer this."}
	tests := []struct {
		name       string
		stream     *bedrock.GuardrailStream
		intervene  bool
		wantTokens []string
		wantStop   ports.StopReason
		wantConfig string // the request's guardrailConfig; empty: none
	}{
		{name: "unset: no guardrail in the stream", intervene: true,
			wantTokens: deltas, wantStop: ports.StopEndTurn},
		{name: "sync, passed", stream: &bedrock.GuardrailStream{ID: "gr-1", Version: "3", Mode: bedrock.StreamSync},
			wantTokens: deltas, wantStop: ports.StopEndTurn,
			wantConfig: `{"guardrailIdentifier":"gr-1","guardrailVersion":"3","streamProcessingMode":"sync"}`},
		{name: "sync, intervened: what passed, not the blocked message", stream: &bedrock.GuardrailStream{ID: "gr-1", Version: "3", Mode: bedrock.StreamSync},
			intervene: true, wantTokens: deltas[:1], wantStop: ports.StopGuardrailIntervened,
			wantConfig: `{"guardrailIdentifier":"gr-1","guardrailVersion":"3","streamProcessingMode":"sync"}`},
		{name: "async, intervened: what was sent before the intervention too", stream: &bedrock.GuardrailStream{ID: "arn:aws:bedrock:eu-west-1:1:guardrail/gr-1", Version: "DRAFT", Mode: bedrock.StreamAsync},
			intervene: true, wantTokens: deltas[:2], wantStop: ports.StopGuardrailIntervened,
			wantConfig: `{"guardrailIdentifier":"arn:aws:bedrock:eu-west-1:1:guardrail/gr-1","guardrailVersion":"DRAFT","streamProcessingMode":"async"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc := fakebedrock.Script{Deltas: deltas}
			if tt.intervene {
				sc.Intervention = iv
			}
			m, fake := newModel(t, sc, func(c *bedrock.Config) { c.GuardrailStream = tt.stream })
			var got []string
			reply, err := m.Stream(t.Context(), modeltest.ChatRequest(), modeltest.Collect(&got))
			require.NoError(t, err)
			assert.Equal(t, tt.wantTokens, got)
			assert.Equal(t, tt.wantStop, reply.Stop)

			_, err = m.Complete(t.Context(), ports.ChatRequest{Purpose: ports.PurposeSummary, Messages: modeltest.ChatRequest().Messages})
			require.NoError(t, err)
			reqs := fake.Requests()
			require.Len(t, reqs, 2)
			var body struct{ GuardrailConfig json.RawMessage }
			require.NoError(t, json.Unmarshal(reqs[0].Body, &body))
			if tt.wantConfig == "" {
				assert.Nil(t, body.GuardrailConfig)
			} else {
				assert.JSONEq(t, tt.wantConfig, string(body.GuardrailConfig))
			}
			var summary struct{ GuardrailConfig json.RawMessage }
			require.NoError(t, json.Unmarshal(reqs[1].Body, &summary))
			assert.Nil(t, summary.GuardrailConfig, "summaries are not the client's answer: not checked in the stream")
		})
	}
}

func TestStreamGuardrailConfigRefused(t *testing.T) {
	for _, g := range []*bedrock.GuardrailStream{
		{Version: "1", Mode: bedrock.StreamSync},
		{ID: "gr-1", Mode: bedrock.StreamSync},
		{ID: "gr-1", Version: "1", Mode: "later"},
	} {
		_, err := bedrock.New(t.Context(), bedrock.Config{
			Region: "eu-west-1", ChatModelID: chatModel, GuardrailStream: g,
			Credentials: credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", ""),
		})
		assert.ErrorContains(t, err, "bedrock: ")
	}
}

func TestStreamCheckedPassesEveryChunk(t *testing.T) {
	var g ports.Guardrail = bedrock.StreamChecked{}
	assert.False(t, g.WholeAnswer())
	v, err := g.Check(t.Context(), "anything at all")
	require.NoError(t, err)
	assert.True(t, v.Pass)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = g.Check(ctx, "x")
	assert.ErrorIs(t, err, context.Canceled)
}

// With Bedrock's streaming guardrail each delta is held until the next
// event shows it is not the guardrail's blocked message; an exception
// mid-stream is no intervention, so the delta held then is the model's
// and goes out before the error, as it would without the guardrail. A
// stream that fails before giving anything gives nothing: it may still be
// retried.
func TestStreamGuardrailExceptionGivesTheHeldDelta(t *testing.T) {
	deltas := []string{"Once upon a time.", " There", " was"}
	sync := &bedrock.GuardrailStream{ID: "gr-1", Version: "3", Mode: bedrock.StreamSync}
	tests := []struct {
		name       string
		stream     *bedrock.GuardrailStream
		after      int
		wantTokens []string
	}{
		{name: "no guardrail in the stream", after: 2, wantTokens: deltas[:2]},
		{name: "sync, after two deltas", stream: sync, after: 2, wantTokens: deltas[:2]},
		{name: "async, after two deltas", stream: &bedrock.GuardrailStream{ID: "gr-1", Version: "3", Mode: bedrock.StreamAsync}, after: 2, wantTokens: deltas[:2]},
		{name: "sync, after one delta: nothing given", stream: sync, after: 1, wantTokens: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc := fakebedrock.Script{Deltas: deltas, Exception: &fakebedrock.Exception{After: tt.after, Type: "modelStreamErrorException", Message: "boom"}}
			m, _ := newModel(t, sc, func(c *bedrock.Config) { c.GuardrailStream = tt.stream })
			var got []string
			_, err := m.Stream(t.Context(), modeltest.ChatRequest(), modeltest.Collect(&got))
			require.Error(t, err)
			assert.Equal(t, tt.wantTokens, got)
		})
	}
}
