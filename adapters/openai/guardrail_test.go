package openai_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/openai"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/test/fakeopenai"
)

const judgeModel = "llama-guard3:1b"

func newGuardrail(t *testing.T, def fakeopenai.Script, log *slog.Logger) (*openai.Guardrail, *fakeopenai.Server) {
	t.Helper()
	m, fake := newModel(t, def, func(c *openai.Config) { c.Log = log })
	g, err := openai.NewGuardrail(openai.GuardrailConfig{Model: m, JudgeModelID: judgeModel})
	require.NoError(t, err)
	return g, fake
}

func TestGuardrailJudge(t *testing.T) {
	for _, tc := range []struct {
		answer string
		want   ports.Verdict
	}{
		{"PASS", ports.Verdict{Pass: true}},
		{" pass.\n", ports.Verdict{Pass: true}},
		{"FAIL: it names an employee\nmore words", ports.Verdict{Reason: "it names an employee"}},
		{"fail - rude", ports.Verdict{Reason: "rude"}},
		{"FAIL", ports.Verdict{Reason: "the content check failed it"}},
		{"FAILED", ports.Verdict{Reason: "the content check could not confirm that it is acceptable"}},
		{"I think it is fine", ports.Verdict{Reason: "the content check could not confirm that it is acceptable"}},
	} {
		t.Run(tc.answer, func(t *testing.T) {
			var logs bytes.Buffer
			g, fake := newGuardrail(t, fakeopenai.Script{Text: tc.answer}, slog.New(slog.NewTextHandler(&logs, nil)))
			v, err := g.Check(t.Context(), "The manager is Bob.")
			require.NoError(t, err)
			assert.Equal(t, tc.want, v)
			assert.NotContains(t, logs.String(), "The manager is Bob", "the checked text is never logged")

			reqs := fake.Requests()
			require.Len(t, reqs, 1)
			assert.Equal(t, "chat", reqs[0].Op)
			assert.Equal(t, judgeModel, reqs[0].Model)
			var body struct {
				Messages []struct {
					Role    string `json:"role"`
					Content string `json:"content"`
				} `json:"messages"`
				Temperature *float64 `json:"temperature"`
				MaxTokens   int      `json:"max_tokens"`
				Stream      bool     `json:"stream"`
			}
			require.NoError(t, json.Unmarshal(reqs[0].Body, &body))
			require.Len(t, body.Messages, 2)
			assert.Equal(t, openai.DefaultJudgePrompt, body.Messages[0].Content)
			assert.Equal(t, "<answer>\nThe manager is Bob.\n</answer>", body.Messages[1].Content)
			require.NotNil(t, body.Temperature)
			assert.Zero(t, *body.Temperature)
			assert.Equal(t, 200, body.MaxTokens)
			assert.False(t, body.Stream)
		})
	}
}

func TestGuardrailBlankPassesUnchecked(t *testing.T) {
	g, fake := newGuardrail(t, fakeopenai.Script{Text: "FAIL"}, nil)
	v, err := g.Check(t.Context(), " \n")
	require.NoError(t, err)
	assert.True(t, v.Pass)
	assert.Empty(t, fake.Requests())
}

func TestGuardrailFailureIsAnError(t *testing.T) {
	g, fake := newGuardrail(t, fakeopenai.Script{HTTPError: fakeopenai.ServerError()}, nil)
	_, err := g.Check(t.Context(), "Hello.")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "openai: guardrail judge: HTTP 500")
	assert.Len(t, fake.Requests(), openai.DefaultMaxAttempts, "retried as every call")
}

func TestNewGuardrailValidates(t *testing.T) {
	m, _ := newModel(t, fakeopenai.Script{}, nil)
	for name, cfg := range map[string]openai.GuardrailConfig{
		"no model": {JudgeModelID: judgeModel},
		"no judge": {Model: m},
		"negative": {Model: m, JudgeModelID: judgeModel, Timeout: -1},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := openai.NewGuardrail(cfg)
			require.Error(t, err)
		})
	}
	g, err := openai.NewGuardrail(openai.GuardrailConfig{Model: m, JudgeModelID: judgeModel, WholeAnswer: true})
	require.NoError(t, err)
	assert.True(t, g.WholeAnswer())
}
