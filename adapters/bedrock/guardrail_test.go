package bedrock_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/bedrock"
	"github.com/wsserver/wsserver/adapters/internal/modeltest"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/test/fakebedrock"
)

const judgeModel = "anthropic.claude-3-haiku-20240307-v1:0"

// newGuardrail starts a fake answering def and a Guardrail on it through
// the real SDK client. With no edit it uses ApplyGuardrail on gr-test
// version 3.
func newGuardrail(t *testing.T, def fakebedrock.Script, edit func(*bedrock.GuardrailConfig)) (*bedrock.Guardrail, *fakebedrock.Server) {
	t.Helper()
	fake := fakebedrock.New(def)
	t.Cleanup(fake.Close)
	client, err := bedrock.NewClient(t.Context(), bedrock.ClientConfig{
		Region:      "eu-west-1",
		EndpointURL: fake.URL,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", ""),
	})
	require.NoError(t, err)
	cfg := bedrock.GuardrailConfig{
		Client:           client,
		GuardrailID:      "gr-test",
		GuardrailVersion: "3",
		MaxBackoff:       10 * time.Millisecond,
	}
	if edit != nil {
		edit(&cfg)
	}
	g, err := bedrock.NewGuardrail(cfg)
	require.NoError(t, err)
	return g, fake
}

// judgeOnly switches a GuardrailConfig to the judge model.
func judgeOnly(c *bedrock.GuardrailConfig) {
	c.GuardrailID, c.GuardrailVersion, c.JudgeModelID = "", "", judgeModel
}

func TestApplyGuardrailNone(t *testing.T) {
	g, fake := newGuardrail(t, fakebedrock.Script{Guardrail: &fakebedrock.GuardrailAnswer{Action: "NONE"}}, nil)
	assert.Equal(t, bedrock.ModeApplyGuardrail, g.Mode())
	assert.False(t, g.WholeAnswer())

	v, err := g.Check(t.Context(), "Your order ships today. ")
	require.NoError(t, err)
	assert.Equal(t, ports.Verdict{Pass: true}, v)

	reqs := fake.Requests()
	require.Len(t, reqs, 1)
	assert.Equal(t, "apply-guardrail", reqs[0].Op)
	assert.Equal(t, "gr-test", reqs[0].ModelID)
	assert.Equal(t, "3", reqs[0].GuardrailVersion)
	assert.Contains(t, reqs[0].Header.Get("Authorization"), "AKIDEXAMPLE", "the request is signed")
	modeltest.Golden(t, "apply_guardrail_request.json", reqs[0].Body)
}

func TestApplyGuardrailIntervened(t *testing.T) {
	for name, tc := range map[string]struct {
		assessments string
		reason      string
		want        []string
		notWant     []string
	}{
		"topic": {
			assessments: `[{"topicPolicy":{"topics":[{"name":"Staff","type":"DENY","action":"BLOCKED","detected":true}]}}]`,
			want:        []string{`the denied topic "Staff"`},
		},
		"content filters, one acting": {
			assessments: `[{"contentPolicy":{"filters":[{"type":"VIOLENCE","confidence":"HIGH","filterStrength":"HIGH","action":"BLOCKED"},` +
				`{"type":"INSULTS","confidence":"LOW","filterStrength":"HIGH","action":"NONE"}]}}]`,
			want:    []string{"violence content"},
			notWant: []string{"insults"},
		},
		"words": {
			assessments: `[{"wordPolicy":{"customWords":[{"match":"Bob","action":"BLOCKED"}],"managedWordLists":[{"match":"darn","type":"PROFANITY","action":"BLOCKED"}]}}]`,
			want:        []string{`the blocked word "Bob"`, "profanity"},
		},
		"sensitive information, never the data": {
			assessments: `[{"sensitiveInformationPolicy":{"piiEntities":[{"match":"bob@example.com","type":"EMAIL","action":"ANONYMIZED"}],` +
				`"regexes":[{"name":"order-token","match":"TOK-123456","regex":"TOK-\\d+","action":"BLOCKED"}]}}]`,
			want:    []string{"personal data (EMAIL)", "sensitive information (order-token)"},
			notWant: []string{"bob@example.com", "TOK-123456"},
		},
		"grounding": {
			assessments: `[{"contextualGroundingPolicy":{"filters":[{"type":"GROUNDING","threshold":0.7,"score":0.2,"action":"BLOCKED"}]}}]`,
			want:        []string{"not supported by the sources (grounding)"},
		},
		"several assessments": {
			assessments: `[{"topicPolicy":{"topics":[{"name":"Staff","type":"DENY","action":"BLOCKED"}]}},` +
				`{"topicPolicy":{"topics":[{"name":"Staff","type":"DENY","action":"BLOCKED"}]},"wordPolicy":{"customWords":[{"match":"Bob","action":"BLOCKED"}]}}]`,
			want: []string{`the denied topic "Staff"; it uses the blocked word "Bob"`},
		},
		"nothing named": {
			assessments: `[]`,
			want:        []string{"the Bedrock guardrail intervened"},
			notWant:     []string{":"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			g, fake := newGuardrail(t, fakebedrock.Script{Guardrail: &fakebedrock.GuardrailAnswer{
				Action: "GUARDRAIL_INTERVENED", Outputs: []string{"Sorry, I cannot say that."},
				Assessments: json.RawMessage(tc.assessments),
			}}, nil)
			v, err := g.Check(t.Context(), "The warehouse manager is Bob, bob@example.com.")
			require.NoError(t, err)
			assert.False(t, v.Pass)
			assert.True(t, strings.HasPrefix(v.Reason, "the Bedrock guardrail intervened"), v.Reason)
			for _, w := range tc.want {
				assert.Contains(t, v.Reason, w)
			}
			for _, w := range tc.notWant {
				assert.NotContains(t, v.Reason, w)
			}
			assert.Len(t, fake.Requests(), 1)
		})
	}
}

func TestApplyGuardrailErrors(t *testing.T) {
	t.Run("throttled, then retried", func(t *testing.T) {
		g, fake := newGuardrail(t, fakebedrock.Script{}, nil)
		fake.Throttle(1)
		v, err := g.Check(t.Context(), "Hello.")
		require.NoError(t, err)
		assert.True(t, v.Pass)
		assert.Len(t, fake.Requests(), 2)
	})
	t.Run("server errors until the attempts run out", func(t *testing.T) {
		g, fake := newGuardrail(t, fakebedrock.Script{HTTPError: fakebedrock.ServerError()}, func(c *bedrock.GuardrailConfig) { c.MaxAttempts = 2 })
		_, err := g.Check(t.Context(), "Hello.")
		var ie *types.InternalServerException
		require.ErrorAs(t, err, &ie)
		assert.True(t, strings.HasPrefix(err.Error(), "bedrock: apply guardrail: "), err.Error())
		assert.Len(t, fake.Requests(), 2)
	})
	t.Run("access denied is not retried", func(t *testing.T) {
		g, fake := newGuardrail(t, fakebedrock.Script{HTTPError: &fakebedrock.HTTPError{
			Status: http.StatusForbidden, Type: "AccessDeniedException", Message: "not allowed to apply guardrail gr-test",
		}}, nil)
		_, err := g.Check(t.Context(), "Hello.")
		var ae *types.AccessDeniedException
		require.ErrorAs(t, err, &ae)
		assert.Len(t, fake.Requests(), 1)
	})
	t.Run("the caller's context ended", func(t *testing.T) {
		g, _ := newGuardrail(t, fakebedrock.Script{}, nil)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := g.Check(ctx, "Hello.")
		require.ErrorIs(t, err, context.Canceled)
	})
	t.Run("judge refused", func(t *testing.T) {
		g, fake := newGuardrail(t, fakebedrock.Script{HTTPError: &fakebedrock.HTTPError{
			Status: http.StatusBadRequest, Type: "ValidationException", Message: "unknown model",
		}}, judgeOnly)
		_, err := g.Check(t.Context(), "Hello.")
		var ve *types.ValidationException
		require.ErrorAs(t, err, &ve)
		assert.True(t, strings.HasPrefix(err.Error(), "bedrock: guardrail judge: "), err.Error())
		assert.Len(t, fake.Requests(), 1)
	})
}

func TestGuardrailBlankTextIsNotChecked(t *testing.T) {
	for _, edit := range []func(*bedrock.GuardrailConfig){nil, judgeOnly} {
		g, fake := newGuardrail(t, fakebedrock.Script{HTTPError: fakebedrock.ServerError()}, edit)
		v, err := g.Check(t.Context(), " \n\t")
		require.NoError(t, err)
		assert.True(t, v.Pass)
		assert.Empty(t, fake.Requests())
	}
}

func TestJudge(t *testing.T) {
	long := "I am not sure what you want me to check here, " + strings.Repeat("so let me explain at length ", 20) + "SECRET-TAIL"
	for name, tc := range map[string]struct {
		answer     string
		want       ports.Verdict
		unreadable bool
	}{
		"pass":                   {answer: "PASS", want: ports.Verdict{Pass: true}},
		"pass, any case, period": {answer: "  pass.\n", want: ports.Verdict{Pass: true}},
		"pass, then more lines":  {answer: "PASS\nThe text is a plain greeting.", want: ports.Verdict{Pass: true}},
		"fail with a reason":     {answer: "FAIL: it names an employee", want: ports.Verdict{Reason: "it names an employee"}},
		"fail, dash, lower case": {answer: "fail - it promises a refund\n", want: ports.Verdict{Reason: "it promises a refund"}},
		"fail without a reason":  {answer: "FAIL", want: ports.Verdict{Reason: "the content check failed it"}},
		"passes is not pass":     {answer: "PASSES", unreadable: true},
		"failed is not fail":     {answer: "FAILED: rude", unreadable: true},
		"chatter before":         {answer: "Sure! PASS", unreadable: true},
		"pass with a comment":    {answer: "PASS, mostly", unreadable: true},
		"empty":                  {answer: "", unreadable: true},
		"long prose":             {answer: long, unreadable: true},
	} {
		t.Run(name, func(t *testing.T) {
			var logs bytes.Buffer
			g, fake := newGuardrail(t, fakebedrock.Script{Text: tc.answer}, func(c *bedrock.GuardrailConfig) {
				judgeOnly(c)
				c.Log = slog.New(slog.NewTextHandler(&logs, nil))
			})
			assert.Equal(t, bedrock.ModeJudge, g.Mode())
			v, err := g.Check(t.Context(), "The warehouse manager is Bob.")
			require.NoError(t, err)
			if tc.unreadable {
				assert.False(t, v.Pass, "an unreadable answer fails the text")
				assert.Equal(t, "the content check could not confirm that it is acceptable", v.Reason)
				assert.Contains(t, logs.String(), "unreadable")
				assert.NotContains(t, logs.String(), "SECRET-TAIL", "the answer is logged cut short")
				assert.NotContains(t, logs.String(), "warehouse manager", "the checked text is never logged")
			} else {
				assert.Equal(t, tc.want, v)
				assert.Empty(t, logs.String())
			}
			reqs := fake.Requests()
			require.Len(t, reqs, 1)
			assert.Equal(t, "converse", reqs[0].Op, "the judge is never streamed")
			assert.Equal(t, judgeModel, reqs[0].ModelID)
		})
	}
}

func TestJudgeRequest(t *testing.T) {
	g, fake := newGuardrail(t, fakebedrock.Script{Text: "PASS"}, judgeOnly)
	_, err := g.Check(t.Context(), "Your order ships today. ")
	require.NoError(t, err)
	modeltest.Golden(t, "judge_request.json", fake.Requests()[0].Body)
}

func TestApplyGuardrailBeforeTheJudge(t *testing.T) {
	// With both a guardrail and a judge model, ApplyGuardrail checks.
	g, fake := newGuardrail(t, fakebedrock.Script{}, func(c *bedrock.GuardrailConfig) { c.JudgeModelID = judgeModel })
	assert.Equal(t, bedrock.ModeApplyGuardrail, g.Mode())
	_, err := g.Check(t.Context(), "Hello.")
	require.NoError(t, err)
	assert.Equal(t, "apply-guardrail", fake.Requests()[0].Op)
}

func TestNewGuardrailValidates(t *testing.T) {
	client, err := bedrock.NewClient(t.Context(), bedrock.ClientConfig{Region: "eu-west-1"})
	require.NoError(t, err)
	for name, tc := range map[string]struct {
		cfg  bedrock.GuardrailConfig
		want string
	}{
		"no client":     {bedrock.GuardrailConfig{JudgeModelID: judgeModel}, "client"},
		"no version":    {bedrock.GuardrailConfig{Client: client, GuardrailID: "gr"}, "BEDROCK_GUARDRAIL_VERSION"},
		"no id":         {bedrock.GuardrailConfig{Client: client, GuardrailVersion: "1"}, "BEDROCK_GUARDRAIL_ID"},
		"nothing":       {bedrock.GuardrailConfig{Client: client}, "BEDROCK_MODEL_ID_GUARDRAIL"},
		"negative time": {bedrock.GuardrailConfig{Client: client, JudgeModelID: judgeModel, Timeout: -1}, "timeout"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := bedrock.NewGuardrail(tc.cfg)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.True(t, strings.HasPrefix(err.Error(), "bedrock: guardrail: "))
		})
	}
	_, err = bedrock.NewClient(t.Context(), bedrock.ClientConfig{})
	require.ErrorContains(t, err, "AWS_BEDROCK_REGION")
}
