package fakebedrock_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/test/fakebedrock"
)

func TestApplyGuardrail(t *testing.T) {
	fake := fakebedrock.New(fakebedrock.Script{})
	defer fake.Close()
	fake.Push(fakebedrock.Script{Guardrail: &fakebedrock.GuardrailAnswer{
		Action: "GUARDRAIL_INTERVENED", Outputs: []string{"blocked"},
		Assessments: json.RawMessage(`[{"topicPolicy":{"topics":[{"name":"Staff","type":"DENY","action":"BLOCKED"}]}}]`),
	}})

	resp := post(t, t.Context(), fake.URL+"/guardrail/gr-1/version/2/apply", `{"source":"OUTPUT"}`)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var out struct {
		Action      string
		Outputs     []struct{ Text string }
		Assessments []map[string]any
	}
	require.NoError(t, json.Unmarshal(b, &out))
	assert.Equal(t, "GUARDRAIL_INTERVENED", out.Action)
	require.Len(t, out.Outputs, 1)
	assert.Equal(t, "blocked", out.Outputs[0].Text)
	assert.Len(t, out.Assessments, 1)

	resp2 := post(t, t.Context(), fake.URL+"/guardrail/gr-1/version/2/apply", `{}`)
	defer resp2.Body.Close()
	b, err = io.ReadAll(resp2.Body)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &out))
	assert.Equal(t, "NONE", out.Action)

	reqs := fake.Requests()
	require.Len(t, reqs, 2)
	assert.Equal(t, "apply-guardrail", reqs[0].Op)
	assert.Equal(t, "gr-1", reqs[0].ModelID)
	assert.Equal(t, "2", reqs[0].GuardrailVersion)
	assert.JSONEq(t, `{"source":"OUTPUT"}`, string(reqs[0].Body))
}

// Bedrock's streaming guardrail, as a ConverseStream call with a
// guardrailConfig sees it: sync holds the blocked delta back, async sends
// what it let through before it intervened; both end with the blocked
// message and stopReason guardrail_intervened, and a trace when asked. A
// call without a guardrailConfig is not intervened on.
func TestStreamGuardrailIntervention(t *testing.T) {
	script := fakebedrock.Script{
		Deltas: []string{"The manager", " is Bob", " Smith."},
		Intervention: &fakebedrock.Intervention{After: 1, Leaked: 1, Message: "Sorry, I can't say.",
			Assessments: json.RawMessage(`[{"topicPolicy":{"topics":[{"name":"Staff","type":"DENY","action":"BLOCKED"}]}}]`)},
	}
	delta := func(text string) frame {
		return frame{"event", "contentBlockDelta", "application/json", `{"contentBlockIndex":0,"delta":{"text":"` + text + `"}}`}
	}
	start := frame{"event", "messageStart", "application/json", `{"role":"assistant"}`}
	stop := func(reason string) []frame {
		return []frame{
			{"event", "contentBlockStop", "application/json", `{"contentBlockIndex":0}`},
			{"event", "messageStop", "application/json", `{"stopReason":"` + reason + `"}`},
		}
	}
	usage := `"metrics":{"latencyMs":1},"usage":{"inputTokens":3,"outputTokens":3,"totalTokens":6}`
	trace := `"trace":{"guardrail":{"outputAssessments":{"gr-1":[{"topicPolicy":{"topics":[{"action":"BLOCKED","name":"Staff","type":"DENY"}]}}]}}}`
	meta := func(fields string) frame { return frame{"event", "metadata", "application/json", "{" + fields + "}"} }
	tests := []struct {
		name string
		body string
		want []frame
	}{
		{"no guardrail asked for", `{"messages":[]}`,
			append(append([]frame{start, delta("The manager"), delta(" is Bob"), delta(" Smith.")}, stop("end_turn")...), meta(usage))},
		{"sync", `{"guardrailConfig":{"guardrailIdentifier":"gr-1","guardrailVersion":"1","streamProcessingMode":"sync"}}`,
			append(append([]frame{start, delta("The manager"), delta("Sorry, I can't say.")}, stop("guardrail_intervened")...), meta(usage))},
		{"async, with a trace", `{"guardrailConfig":{"guardrailIdentifier":"gr-1","guardrailVersion":"1","streamProcessingMode":"async","trace":"enabled"}}`,
			append(append([]frame{start, delta("The manager"), delta(" is Bob"), delta("Sorry, I can't say.")}, stop("guardrail_intervened")...), meta(usage+","+trace))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc := script
			sc.Usage = fakebedrock.Usage{InputTokens: 3, OutputTokens: 3}
			fake := fakebedrock.New(sc)
			defer fake.Close()
			resp := post(t, t.Context(), fake.URL+"/model/m/converse-stream", tt.body)
			defer resp.Body.Close()
			frames := readFrames(t, resp.Body)
			require.Len(t, frames, len(tt.want))
			for i := range frames {
				if frames[i].typ == "metadata" {
					assert.JSONEq(t, tt.want[i].payload, frames[i].payload)
					frames[i].payload = tt.want[i].payload
				}
			}
			assert.Equal(t, tt.want, frames)
		})
	}
}

// GuardrailDelay holds ApplyGuardrail's answer back; a client that leaves
// meanwhile is seen gone.
func TestApplyGuardrailDelay(t *testing.T) {
	fake := fakebedrock.New(fakebedrock.Script{GuardrailDelay: time.Hour})
	defer fake.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	answered := make(chan error, 1)
	go func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, fake.URL+"/guardrail/gr-1/version/1/apply", strings.NewReader(`{}`))
		if err == nil {
			var resp *http.Response
			if resp, err = fake.HTTPClient().Do(req); err == nil {
				_ = resp.Body.Close()
			}
		}
		answered <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for len(fake.Requests()) == 0 {
		require.True(t, time.Now().Before(deadline), "the call never reached the fake")
		time.Sleep(5 * time.Millisecond)
	}
	assert.False(t, fake.Requests()[0].Ended, "not answered while the delay runs")
	cancel()
	require.Error(t, <-answered)
	wctx, wcancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer wcancel()
	r, err := fake.WaitEnded(wctx, 0)
	require.NoError(t, err)
	assert.True(t, r.ClientGone)
}
