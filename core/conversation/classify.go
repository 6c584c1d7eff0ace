package conversation

import (
	"context"
	"fmt"
	"strings"

	"github.com/wsserver/wsserver/ports"
)

// DefaultClassifierPrompt asks a model whether a human must take over.
const DefaultClassifierPrompt = "You route customer conversations. Read the conversation and the user's last message. " +
	"If the user asks for a human, is repeatedly frustrated, or needs something only a person can do, answer ESCALATE " +
	"followed by a short reason. Otherwise answer CONTINUE. Answer on one line."

// Classifier is an escalation detector that asks a model (BEDROCK_MODEL_ID_ESCALATION).
// Its decisions carry the reason classifier.
type Classifier struct {
	Model ports.ChatModel
	// Prompt empty means DefaultClassifierPrompt.
	Prompt string
}

var _ ports.EscalationDetector = Classifier{}

// Detect asks the model about message; a reply starting with ESCALATE
// escalates.
func (c Classifier) Detect(ctx context.Context, message string, history []ports.Message) (ports.Escalation, error) {
	prompt := c.Prompt
	if prompt == "" {
		prompt = DefaultClassifierPrompt
	}
	msgs := append(nonEmpty(history), ports.Message{Role: ports.RoleUser, Content: message})
	reply, err := c.Model.Complete(ctx, ports.ChatRequest{Purpose: ports.PurposeClassify, System: prompt, Messages: msgs})
	if err != nil {
		return ports.Escalation{}, fmt.Errorf("classify: %w", err)
	}
	word, rest, _ := strings.Cut(strings.TrimSpace(reply.Text), " ")
	if !strings.EqualFold(strings.Trim(word, ".:,;!"), "ESCALATE") {
		return ports.Escalation{}, nil
	}
	detail := "the classifier decided a human should take over"
	if rest = strings.TrimSpace(rest); rest != "" {
		detail += ": " + rest
	}
	return ports.Escalation{Escalate: true, Reason: ports.ReasonClassifier, Detail: detail}, nil
}

// Detectors asks each detector in turn; the first that escalates decides.
// A detector that fails is skipped unless all fail.
type Detectors []ports.EscalationDetector

var _ ports.EscalationDetector = Detectors(nil)

// Detect runs the detectors in order.
func (ds Detectors) Detect(ctx context.Context, message string, history []ports.Message) (ports.Escalation, error) {
	var firstErr error
	failed := 0
	for _, d := range ds {
		e, err := d.Detect(ctx, message, history)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			failed++
			continue
		}
		if e.Escalate {
			return e, nil
		}
	}
	if failed > 0 && failed == len(ds) {
		return ports.Escalation{}, firstErr
	}
	return ports.Escalation{}, nil
}
