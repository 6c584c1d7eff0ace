package local

import (
	"context"
	"errors"
	"fmt"

	"github.com/wsserver/wsserver/ports"
)

var _ ports.Guardrail = (*Guardrail)(nil)

// GuardrailConfig configures a Guardrail.
type GuardrailConfig struct {
	// Rules are guardrail_rules.txt (Appdata.Guardrail). No rules pass
	// everything.
	Rules []Rule
	// WholeAnswer makes the guardrail ask for whole answers instead of
	// sentences. False, the default, lets sentences stream as they pass.
	WholeAnswer bool
}

// Guardrail fails any text that matches one of its rules.
type Guardrail struct {
	cfg GuardrailConfig
}

// NewGuardrail returns a guardrail applying cfg.Rules.
func NewGuardrail(cfg GuardrailConfig) (*Guardrail, error) {
	for _, r := range cfg.Rules {
		if r.re == nil {
			return nil, errors.New("local: guardrail rules must come from LoadAppdata")
		}
	}
	return &Guardrail{cfg: cfg}, nil
}

// WholeAnswer reports the configured mode.
func (g *Guardrail) WholeAnswer() bool { return g.cfg.WholeAnswer }

// Check fails text when a rule matches; the reason names the rule and
// what matched, for the model's rewrite.
func (g *Guardrail) Check(ctx context.Context, text string) (ports.Verdict, error) {
	if err := ctx.Err(); err != nil {
		return ports.Verdict{}, err
	}
	for _, r := range g.cfg.Rules {
		if m, ok := r.Match(text); ok {
			return ports.Verdict{Reason: fmt.Sprintf("%s: the text must not say %q", r.Reason, m)}, nil
		}
	}
	return ports.Verdict{Pass: true}, nil
}
