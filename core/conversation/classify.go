package conversation

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/wsserver/wsserver/ports"
)

// DefaultClassifierPrompt asks a model whether a human must take over, in
// the format parseClassification reads.
const DefaultClassifierPrompt = "You route customer conversations. Read the conversation and the user's last message. " +
	"If the user asks for a human, is repeatedly frustrated, or needs something only a person can do, answer ESCALATE " +
	"followed by a short reason. Otherwise answer CONTINUE. Answer with exactly one line and nothing else."

// Classifier is an escalation detector that asks a model (on Bedrock,
// BEDROCK_MODEL_ID_ESCALATION). Its decisions carry the reason
// classifier.
type Classifier struct {
	Model ports.ChatModel
	// Prompt empty means DefaultClassifierPrompt.
	Prompt string
	// Log receives the answers that could not be read and the failed
	// calls; nil discards them.
	Log *slog.Logger
}

var _ ports.EscalationDetector = Classifier{}

// Detect asks the model about message. The answer's first line must be
// CONTINUE, or ESCALATE and a reason (see parseClassification). Anything
// else is taken as no escalation, and logged: a model that rambles must
// not hand every conversation to a person.
func (c Classifier) Detect(ctx context.Context, message string, history []ports.Message) (ports.Escalation, error) {
	prompt := c.Prompt
	if prompt == "" {
		prompt = DefaultClassifierPrompt
	}
	msgs := append(nonEmpty(history), ports.Message{Role: ports.RoleUser, Content: message})
	reply, err := c.Model.Complete(ctx, ports.ChatRequest{Purpose: ports.PurposeClassify, System: prompt, Messages: msgs})
	if err != nil {
		// Logged here: Detectors skips a detector that fails.
		if c.Log != nil && ctx.Err() == nil {
			c.Log.WarnContext(ctx, "escalation classifier failed", "err", err)
		}
		return ports.Escalation{}, fmt.Errorf("classify: %w", err)
	}
	escalate, reason, ok := parseClassification(reply.Text)
	if !ok {
		if c.Log != nil {
			c.Log.WarnContext(ctx, "escalation classifier: unreadable answer, taken as no escalation",
				"answer_excerpt", excerpt(reply.Text, 80), "stop_reason", string(reply.Stop))
		}
		return ports.Escalation{}, nil
	}
	if !escalate {
		return ports.Escalation{}, nil
	}
	detail := "the classifier decided a human should take over"
	if reason != "" {
		detail += ": " + excerpt(reason, 300)
	}
	return ports.Escalation{Escalate: true, Reason: ports.ReasonClassifier, Detail: detail}, nil
}

// parseClassification reads a classifier's answer. Its first line that is
// not blank must be CONTINUE (a final period allowed), or ESCALATE alone
// or followed by a colon, a dash or a space and the reason. Case and
// surrounding spaces do not matter; later lines are ignored. ok is false
// for anything else.
func parseClassification(answer string) (escalate bool, reason string, ok bool) {
	line := strings.TrimSpace(answer)
	if i := strings.IndexByte(line, '\n'); i >= 0 {
		line = strings.TrimSpace(line[:i])
	}
	if strings.EqualFold(strings.TrimSuffix(line, "."), "CONTINUE") {
		return false, "", true
	}
	const word = "ESCALATE"
	if len(line) < len(word) || !strings.EqualFold(line[:len(word)], word) {
		return false, "", false
	}
	rest := line[len(word):]
	if rest != "" {
		r, _ := utf8.DecodeRuneInString(rest)
		if r != ':' && r != '-' && !unicode.IsSpace(r) {
			return false, "", false // ESCALATED, ESCALATES...
		}
	}
	return true, strings.TrimSpace(strings.TrimLeft(rest, ":- \t")), true
}

// excerpt cuts s to at most n runes, marking the cut: model answers are
// logged, and stored, bounded.
func excerpt(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
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
