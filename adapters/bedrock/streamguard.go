package bedrock

import (
	"context"
	"errors"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime/types"

	"github.com/wsserver/wsserver/ports"
)

// Modes of Bedrock's streaming guardrail (GuardrailStream.Mode).
const (
	// StreamSync: Bedrock holds the model's text until its guardrail
	// passed it, a chunk at a time; no text it blocks is sent.
	StreamSync = "sync"
	// StreamAsync: Bedrock sends the text at once and checks it in the
	// background; text it then blocks may have been sent already.
	StreamAsync = "async"
)

// GuardrailStream is a guardrail Bedrock applies to the chat streams
// itself: ConverseStream's guardrailConfig.
type GuardrailStream struct {
	// ID and Version name the guardrail (BEDROCK_GUARDRAIL_ID,
	// BEDROCK_GUARDRAIL_VERSION); both required.
	ID, Version string
	// Mode is StreamSync or StreamAsync (BEDROCK_GUARDRAIL_STREAM_MODE).
	Mode string
}

func (g *GuardrailStream) validate() error {
	if g == nil {
		return nil
	}
	if g.ID == "" || g.Version == "" {
		return errors.New("bedrock: a streaming guardrail needs its id and version")
	}
	if g.Mode != StreamSync && g.Mode != StreamAsync {
		return errors.New("bedrock: the streaming guardrail's mode must be sync or async")
	}
	return nil
}

// config is the guardrailConfig of a chat stream; nil without one.
func (g *GuardrailStream) config() *types.GuardrailStreamConfiguration {
	if g == nil {
		return nil
	}
	return &types.GuardrailStreamConfiguration{
		GuardrailIdentifier:  aws.String(g.ID),
		GuardrailVersion:     aws.String(g.Version),
		StreamProcessingMode: types.GuardrailStreamProcessingMode(g.Mode),
	}
}

var _ ports.Guardrail = StreamChecked{}

// StreamChecked is the conversation's guardrail when Bedrock checks the
// chat streams itself (GuardrailStream): every chunk passes, since what
// Bedrock's guardrail blocks ends the stream with stopReason
// guardrail_intervened, which the conversation treats as a failed check
// (the text it holds is never sent; the rewrite loop, fallback and
// escalation follow). Chunks still go out as they come: the first token
// waits for no call of the server's own.
type StreamChecked struct{}

// WholeAnswer is false: chunks stream as they come.
func (StreamChecked) WholeAnswer() bool { return false }

// Check passes text, which Bedrock's guardrail checks in the stream.
func (StreamChecked) Check(ctx context.Context, _ string) (ports.Verdict, error) {
	if err := ctx.Err(); err != nil {
		return ports.Verdict{}, err
	}
	return ports.Verdict{Pass: true}, nil
}
