package bedrock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime/types"

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

// GuardrailMode names how a Guardrail checks.
type GuardrailMode string

// Guardrail modes, as /ready/ and the start log show them.
const (
	// ModeApplyGuardrail checks with a Bedrock guardrail (ApplyGuardrail).
	ModeApplyGuardrail GuardrailMode = "bedrock-guardrail"
	// ModeJudge asks a judge model on Converse.
	ModeJudge GuardrailMode = "bedrock-judge"
)

// GuardrailConfig configures a Guardrail. GuardrailID and
// GuardrailVersion select ApplyGuardrail; otherwise JudgeModelID selects
// the judge.
type GuardrailConfig struct {
	// Client is the Bedrock Runtime client (NewClient); required.
	Client *bedrockruntime.Client
	// GuardrailID and GuardrailVersion name a Bedrock guardrail
	// (BEDROCK_GUARDRAIL_ID, BEDROCK_GUARDRAIL_VERSION): both or neither.
	GuardrailID      string
	GuardrailVersion string
	// JudgeModelID is the judge model (BEDROCK_MODEL_ID_GUARDRAIL), used
	// when no guardrail is named.
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
	// MaxAttempts and MaxBackoff bound the retries of a throttled check or
	// a server error, as in Config; zero means DefaultMaxAttempts and
	// DefaultMaxBackoff.
	MaxAttempts int
	MaxBackoff  time.Duration

	// Log nil discards. The texts checked are never logged; an
	// unreadable judge answer is, cut short.
	Log *slog.Logger
}

// Guardrail is a ports.Guardrail on Bedrock: ApplyGuardrail on the
// answer's text (source OUTPUT) when a guardrail is named, otherwise a
// judge model on Converse, whose own words are never sent to the client.
//
// A check that cannot be made (an error, the timeout) is an error, as
// the port says: the text is not sent and the chat fails. A judge answer
// that cannot be read fails the text, so the rewrite loop runs.
type Guardrail struct {
	client  *bedrockruntime.Client
	cfg     GuardrailConfig
	mode    GuardrailMode
	log     *slog.Logger
	retryer aws.Retryer
}

// NewGuardrail validates cfg and returns a Guardrail.
func NewGuardrail(cfg GuardrailConfig) (*Guardrail, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("bedrock: guardrail: a client is required")
	case cfg.GuardrailID != "" && cfg.GuardrailVersion == "":
		return nil, errors.New("bedrock: guardrail: the guardrail version (BEDROCK_GUARDRAIL_VERSION) is required with its id")
	case cfg.GuardrailID == "" && cfg.GuardrailVersion != "":
		return nil, errors.New("bedrock: guardrail: the guardrail id (BEDROCK_GUARDRAIL_ID) is required with its version")
	case cfg.GuardrailID == "" && cfg.JudgeModelID == "":
		return nil, errors.New("bedrock: guardrail: a guardrail (BEDROCK_GUARDRAIL_ID and BEDROCK_GUARDRAIL_VERSION) or a judge model (BEDROCK_MODEL_ID_GUARDRAIL) is required")
	case cfg.Timeout < 0 || cfg.MaxAttempts < 0 || cfg.MaxBackoff < 0:
		return nil, errors.New("bedrock: guardrail: timeout, max attempts and max backoff must not be negative")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultGuardrailTimeout
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.JudgePrompt == "" {
		cfg.JudgePrompt = DefaultJudgePrompt
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	mode := ModeJudge
	if cfg.GuardrailID != "" {
		mode = ModeApplyGuardrail
	}
	return &Guardrail{client: cfg.Client, cfg: cfg, mode: mode, log: log, retryer: newRetryer(cfg.MaxAttempts, cfg.MaxBackoff)}, nil
}

// Mode says how the guardrail checks.
func (g *Guardrail) Mode() GuardrailMode { return g.mode }

// WholeAnswer reports the configured mode.
func (g *Guardrail) WholeAnswer() bool { return g.cfg.WholeAnswer }

// Check decides on text. Text that is only spaces passes unchecked:
// Bedrock refuses empty content, and there is nothing to check.
func (g *Guardrail) Check(ctx context.Context, text string) (ports.Verdict, error) {
	if strings.TrimSpace(text) == "" {
		return ports.Verdict{Pass: true}, nil
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, g.cfg.Timeout)
	defer cancel()
	if g.mode == ModeApplyGuardrail {
		return g.apply(parent, ctx, text)
	}
	return g.judge(parent, ctx, text)
}

func (g *Guardrail) callOptions(o *bedrockruntime.Options) {
	o.Retryer = g.retryer
}

// apply calls ApplyGuardrail on text as the model's output.
func (g *Guardrail) apply(parent, ctx context.Context, text string) (ports.Verdict, error) {
	out, err := g.client.ApplyGuardrail(ctx, &bedrockruntime.ApplyGuardrailInput{
		GuardrailIdentifier: aws.String(g.cfg.GuardrailID),
		GuardrailVersion:    aws.String(g.cfg.GuardrailVersion),
		Source:              types.GuardrailContentSourceOutput,
		Content: []types.GuardrailContentBlock{
			&types.GuardrailContentBlockMemberText{Value: types.GuardrailTextBlock{Text: aws.String(text)}},
		},
	}, g.callOptions)
	if err != nil {
		return ports.Verdict{}, callErr(parent, ctx, "apply guardrail", g.cfg.Timeout, err)
	}
	switch out.Action {
	case types.GuardrailActionNone:
		return ports.Verdict{Pass: true}, nil
	case types.GuardrailActionGuardrailIntervened:
		return ports.Verdict{Reason: interventionReason(out)}, nil
	default:
		// An action this code does not know: not a pass it can vouch for.
		g.log.WarnContext(parent, "bedrock: unknown guardrail action, taken as an intervention", "guardrail_id", g.cfg.GuardrailID, "action", string(out.Action))
		return ports.Verdict{Reason: interventionReason(out)}, nil
	}
}

// interventionReason says which of the guardrail's policies acted, in
// words the model can act on when it rewrites. It names topics, filter
// categories, custom words and regex names, never the sensitive data
// matched: the reason is stored with an escalation.
func interventionReason(out *bedrockruntime.ApplyGuardrailOutput) string {
	var parts []string
	seen := map[string]bool{}
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			parts = append(parts, s)
		}
	}
	acted := func(action string) bool { return action != "" && action != "NONE" }
	for _, a := range out.Assessments {
		if p := a.TopicPolicy; p != nil {
			for _, t := range p.Topics {
				if acted(string(t.Action)) {
					add(fmt.Sprintf("it is about the denied topic %q", aws.ToString(t.Name)))
				}
			}
		}
		if p := a.ContentPolicy; p != nil {
			for _, f := range p.Filters {
				if acted(string(f.Action)) {
					add(fmt.Sprintf("it contains %s content", strings.ToLower(string(f.Type))))
				}
			}
		}
		if p := a.WordPolicy; p != nil {
			for _, w := range p.CustomWords {
				if acted(string(w.Action)) {
					add(fmt.Sprintf("it uses the blocked word %q", aws.ToString(w.Match)))
				}
			}
			for _, w := range p.ManagedWordLists {
				if acted(string(w.Action)) {
					add(fmt.Sprintf("it uses %s", strings.ToLower(string(w.Type))))
				}
			}
		}
		if p := a.SensitiveInformationPolicy; p != nil {
			for _, e := range p.PiiEntities {
				if acted(string(e.Action)) {
					add(fmt.Sprintf("it contains personal data (%s)", e.Type))
				}
			}
			for _, r := range p.Regexes {
				if acted(string(r.Action)) {
					add(fmt.Sprintf("it contains sensitive information (%s)", aws.ToString(r.Name)))
				}
			}
		}
		if p := a.ContextualGroundingPolicy; p != nil {
			for _, f := range p.Filters {
				if acted(string(f.Action)) {
					add(fmt.Sprintf("it is not supported by the sources (%s)", strings.ToLower(string(f.Type))))
				}
			}
		}
		if p := a.AutomatedReasoningPolicy; p != nil && len(p.Findings) > 0 {
			add("it contradicts the automated reasoning policy")
		}
	}
	reason := "the Bedrock guardrail intervened"
	switch {
	case len(parts) > 0:
		reason += ": " + strings.Join(parts, "; ")
	case aws.ToString(out.ActionReason) != "":
		reason += ": " + aws.ToString(out.ActionReason)
	}
	return prompt.Excerpt(reason, prompt.MaxReason)
}

// judgeMaxTokens bounds the judge's answer: one line.
const judgeMaxTokens = 200

// judge asks the judge model about text on Converse.
func (g *Guardrail) judge(parent, ctx context.Context, text string) (ports.Verdict, error) {
	out, err := g.client.Converse(ctx, &bedrockruntime.ConverseInput{
		ModelId: aws.String(g.cfg.JudgeModelID),
		System:  []types.SystemContentBlock{&types.SystemContentBlockMemberText{Value: g.cfg.JudgePrompt}},
		Messages: []types.Message{
			textMessage(types.ConversationRoleUser, "<answer>\n"+text+"\n</answer>"),
		},
		InferenceConfig: &types.InferenceConfiguration{MaxTokens: aws.Int32(judgeMaxTokens), Temperature: aws.Float32(0)},
	}, g.callOptions)
	if err != nil {
		return ports.Verdict{}, callErr(parent, ctx, "guardrail judge", g.cfg.Timeout, err)
	}
	var b strings.Builder
	if msg, ok := out.Output.(*types.ConverseOutputMemberMessage); ok {
		for _, c := range msg.Value.Content {
			if t, ok := c.(*types.ContentBlockMemberText); ok {
				b.WriteString(t.Value)
			}
		}
	}
	v, ok := prompt.ParseJudge(b.String())
	if !ok {
		g.log.WarnContext(parent, "bedrock: the guardrail judge's answer is unreadable, taken as a failure",
			"model", g.cfg.JudgeModelID, "stop_reason", string(out.StopReason), "answer_excerpt", prompt.Excerpt(b.String(), 80))
		return ports.Verdict{Reason: unreadableJudge}, nil
	}
	return v, nil
}

// unreadableJudge is the reason given when the judge's answer could not
// be read: the text could not be shown to be acceptable.
const unreadableJudge = "the content check could not confirm that it is acceptable"
