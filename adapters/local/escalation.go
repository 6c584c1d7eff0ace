package local

import (
	"context"
	"errors"
	"fmt"

	"github.com/wsserver/wsserver/ports"
)

var _ ports.EscalationDetector = (*Escalation)(nil)

// Escalation is the rule-based escalation detector of escalation_rules.txt.
type Escalation struct {
	rules EscalationRules
}

// NewEscalation returns a detector applying rules (Appdata.Escalation).
func NewEscalation(rules EscalationRules) (*Escalation, error) {
	for _, r := range append(rules.Rules[:len(rules.Rules):len(rules.Rules)], rules.Frustration...) {
		if r.re == nil {
			return nil, errors.New("local: escalation rules must come from LoadAppdata")
		}
	}
	if len(rules.Frustration) > 0 && (rules.FrustrationThreshold < 1 || rules.FrustrationWindow < rules.FrustrationThreshold) {
		return nil, errors.New("local: frustration threshold must be from 1 to the window")
	}
	return &Escalation{rules: rules}, nil
}

// Detect escalates when message matches a rule, or when it shows
// frustration and enough of the user's recent messages did too.
func (e *Escalation) Detect(ctx context.Context, message string, history []ports.Message) (ports.Escalation, error) {
	if err := ctx.Err(); err != nil {
		return ports.Escalation{}, err
	}
	for _, r := range e.rules.Rules {
		if m, ok := r.Match(message); ok {
			return ports.Escalation{
				Escalate: true,
				Reason:   ports.EscalationReason(r.Reason),
				Detail:   fmt.Sprintf("the user wrote %q", m),
			}, nil
		}
	}
	if !e.frustrated(message) {
		return ports.Escalation{}, nil
	}
	count, seen := 1, 1
	for i := len(history) - 1; i >= 0 && seen < e.rules.FrustrationWindow; i-- {
		if history[i].Role != ports.RoleUser {
			continue
		}
		seen++
		if e.frustrated(history[i].Content) {
			count++
		}
	}
	if count < e.rules.FrustrationThreshold {
		return ports.Escalation{}, nil
	}
	return ports.Escalation{
		Escalate: true,
		Reason:   ports.ReasonRule,
		Detail:   fmt.Sprintf("the user is repeatedly frustrated: %d of their last %d messages", count, seen),
	}, nil
}

func (e *Escalation) frustrated(s string) bool {
	for _, r := range e.rules.Frustration {
		if _, ok := r.Match(s); ok {
			return true
		}
	}
	return false
}
