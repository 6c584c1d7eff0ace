package openai

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/wsserver/wsserver/core/prompt"
	"github.com/wsserver/wsserver/ports"
)

var _ ports.Guardrail = (*Guardrail)(nil)

// DefaultGuardrailTimeout bounds one check when GuardrailConfig.Timeout
// is zero. A check holds back the text it checks, so it is much shorter
// than a model call's.
const DefaultGuardrailTimeout = 30 * time.Second

// DefaultJudgePrompt tells the judge model what to check and how to
// answer: prompt.Judge, the same for every provider, and read back by
// prompt.ParseJudge; anything else fails the text.
const DefaultJudgePrompt = prompt.Judge

// ModeJudge is how /ready/ and the start log name a Guardrail.
const ModeJudge = "openai-judge"

// GuardrailConfig configures a Guardrail.
type GuardrailConfig struct {
	// Model is the Model whose endpoint, key, client and retries the
	// judge uses; required.
	Model *Model
	// JudgeModelID is the judge model (OPENAI_MODEL_ID_GUARDRAIL);
	// required.
	JudgeModelID string
	// JudgePrompt empty means DefaultJudgePrompt.
	JudgePrompt string
	// WholeAnswer makes the conversation check whole answers instead of
	// sentences. False, the default, sends each sentence once it passes,
	// at the cost of one check per sentence.
	WholeAnswer bool
	// Timeout bounds each check, retries included; zero means
	// DefaultGuardrailTimeout.
	Timeout time.Duration
}

// Guardrail is a ports.Guardrail that asks a judge model, whose own words
// are never sent to the client. A check that cannot be made (an error,
// the timeout) is an error, as the port says: the text is not sent and
// the chat fails. A judge answer that cannot be read fails the text, so
// the rewrite loop runs. The texts checked are never logged; an
// unreadable judge answer is, cut short.
type Guardrail struct {
	cfg GuardrailConfig
}

// NewGuardrail validates cfg and returns a Guardrail.
func NewGuardrail(cfg GuardrailConfig) (*Guardrail, error) {
	switch {
	case cfg.Model == nil:
		return nil, errors.New("openai: guardrail: a model is required")
	case cfg.JudgeModelID == "":
		return nil, errors.New("openai: guardrail: the judge model (OPENAI_MODEL_ID_GUARDRAIL) is required")
	case cfg.Timeout < 0:
		return nil, errors.New("openai: guardrail: the timeout must not be negative")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultGuardrailTimeout
	}
	if cfg.JudgePrompt == "" {
		cfg.JudgePrompt = DefaultJudgePrompt
	}
	return &Guardrail{cfg: cfg}, nil
}

// WholeAnswer reports the configured mode.
func (g *Guardrail) WholeAnswer() bool { return g.cfg.WholeAnswer }

// judgeMaxTokens bounds the judge's answer: one line.
const judgeMaxTokens = 200

// Check asks the judge about text. Text that is only spaces passes
// unchecked: there is nothing to check.
func (g *Guardrail) Check(ctx context.Context, text string) (ports.Verdict, error) {
	if strings.TrimSpace(text) == "" {
		return ports.Verdict{Pass: true}, nil
	}
	zero := float32(0)
	b := body{
		Model: g.cfg.JudgeModelID,
		Messages: []message{
			{Role: "system", Content: g.cfg.JudgePrompt},
			{Role: "user", Content: "<answer>\n" + text + "\n</answer>"},
		},
		MaxTokens:   judgeMaxTokens,
		Temperature: &zero,
	}
	m := g.cfg.Model
	reply, err := m.complete(ctx, b, g.cfg.Timeout, "guardrail judge")
	if err != nil {
		return ports.Verdict{}, err
	}
	v, ok := prompt.ParseJudge(reply.Text)
	if !ok {
		m.log.WarnContext(ctx, "openai: the guardrail judge's answer is unreadable, taken as a failure",
			"model", g.cfg.JudgeModelID, "stop_reason", string(reply.Stop), "answer_excerpt", prompt.Excerpt(reply.Text, 80))
		return ports.Verdict{Reason: unreadableJudge}, nil
	}
	return v, nil
}

// unreadableJudge is the reason given when the judge's answer could not
// be read: the text could not be shown to be acceptable.
const unreadableJudge = "the content check could not confirm that it is acceptable"
