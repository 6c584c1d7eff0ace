package fakebedrock_test

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"

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
