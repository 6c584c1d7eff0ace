// Package bedrock runs the conversation's model on Amazon Bedrock through
// the Converse API of github.com/aws/aws-sdk-go-v2/service/bedrockruntime.
//
// Model.Stream answers chats on ConverseStream, Model.Complete summaries
// and classifications on Converse, each purpose on its own model id. The
// system prompt, the client's data (in a system block of its own, as
// context, not instructions) and a rewrite's instructions are system
// blocks; the thread's messages are merged into the alternating roles
// Converse requires. Each call has a timeout; throttling and server
// errors are retried with backoff only until the first token is given.
//
// Guardrail checks answers with ApplyGuardrail, or with a judge model on
// Converse; the escalation classifier is conversation.Classifier on
// Model.Complete (PurposeClassify runs on EscalationModelID). NewClient
// builds the client they can share.
package bedrock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime/types"

	"github.com/wsserver/wsserver/ports"
)

var _ ports.ChatModel = (*Model)(nil)

// Defaults for the zero values of Config.
const (
	DefaultTimeout     = 2 * time.Minute
	DefaultMaxAttempts = 3
	DefaultMaxBackoff  = 5 * time.Second
)

// Config configures a Model.
type Config struct {
	// Client is the Bedrock Runtime client. Nil means New builds one from
	// Region, EndpointURL and Credentials. A client given here should
	// speak HTTP/2 or read request bodies in full before sending them
	// (see wholeBody): on HTTP/1.1 the SDK may otherwise cut a stream.
	Client *bedrockruntime.Client
	// Region is the AWS region of Bedrock (AWS_BEDROCK_REGION); required
	// when Client is nil.
	Region string
	// EndpointURL replaces the regional endpoint (BEDROCK_ENDPOINT_URL):
	// a VPC endpoint, or a fake in tests. Empty means the regional one.
	EndpointURL string
	// Credentials nil means the SDK's default chain: environment, shared
	// profile, then the ECS or EC2 instance role.
	Credentials aws.CredentialsProvider

	// ChatModelID answers chats (BEDROCK_MODEL_ID_CHAT); required.
	ChatModelID string
	// SummaryModelID writes summaries (BEDROCK_MODEL_ID_SUMMARY); empty
	// means ChatModelID.
	SummaryModelID string
	// EscalationModelID classifies messages for escalation
	// (BEDROCK_MODEL_ID_ESCALATION); empty means ChatModelID.
	EscalationModelID string

	// GuardrailStream, when set, has Bedrock check every chat stream
	// with a guardrail itself (BEDROCK_GUARDRAIL_STREAM_MODE): its
	// intervention ends the stream with ports.StopGuardrailIntervened.
	// Nil: the streams are not checked by Bedrock.
	GuardrailStream *GuardrailStream

	// MaxTokens bounds each answer; zero leaves the model's default.
	MaxTokens int
	// Temperature nil leaves the model's default.
	Temperature *float32

	// Timeout bounds each call, from the request to the end of the
	// stream; zero means DefaultTimeout.
	Timeout time.Duration
	// MaxAttempts bounds the attempts of a call that is throttled or
	// meets a server error before its answer starts; zero means
	// DefaultMaxAttempts, 1 means no retry.
	MaxAttempts int
	// MaxBackoff bounds the pause between attempts; zero means
	// DefaultMaxBackoff.
	MaxBackoff time.Duration

	// Log nil discards.
	Log *slog.Logger
}

// Model is a ports.ChatModel on Bedrock's Converse API.
//
// Retries happen only before the first token. The SDK's retryer retries
// a throttled call or a 5xx answer while waiting for the response's
// headers, before any event of the stream is read; Stream also calls
// again when the stream's first event is a throttling or server
// exception. Once a token is given nothing is retried, so no token is
// ever sent twice: an error in the stream ends the call with that error.
type Model struct {
	client  *bedrockruntime.Client
	cfg     Config
	log     *slog.Logger
	retryer aws.Retryer
}

// New validates cfg and returns a Model, building the client when
// cfg.Client is nil.
func New(ctx context.Context, cfg Config) (*Model, error) {
	if cfg.ChatModelID == "" {
		return nil, errors.New("bedrock: the chat model id (BEDROCK_MODEL_ID_CHAT) is required")
	}
	if cfg.MaxTokens < 0 {
		return nil, errors.New("bedrock: max tokens must not be negative")
	}
	if cfg.Timeout < 0 || cfg.MaxAttempts < 0 || cfg.MaxBackoff < 0 {
		return nil, errors.New("bedrock: timeout, max attempts and max backoff must not be negative")
	}
	if err := cfg.GuardrailStream.validate(); err != nil {
		return nil, err
	}
	if cfg.SummaryModelID == "" {
		cfg.SummaryModelID = cfg.ChatModelID
	}
	if cfg.EscalationModelID == "" {
		cfg.EscalationModelID = cfg.ChatModelID
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	client := cfg.Client
	if client == nil {
		c, err := NewClient(ctx, ClientConfig{Region: cfg.Region, EndpointURL: cfg.EndpointURL, Credentials: cfg.Credentials})
		if err != nil {
			return nil, err
		}
		client = c
	}
	return &Model{client: client, cfg: cfg, log: log, retryer: newRetryer(cfg.MaxAttempts, cfg.MaxBackoff)}, nil
}

// ClientConfig says where Bedrock is and who calls it.
type ClientConfig struct {
	// Region is the AWS region of Bedrock (AWS_BEDROCK_REGION); required.
	Region string
	// EndpointURL replaces the regional endpoint (BEDROCK_ENDPOINT_URL):
	// a VPC endpoint, or a fake in tests. Empty means the regional one.
	EndpointURL string
	// Credentials nil means the SDK's default chain: environment, shared
	// profile, then the ECS or EC2 instance role.
	Credentials aws.CredentialsProvider
}

// maxIdleConnsPerHost is how many idle connections to Bedrock the client
// keeps. A streamed answer holds its connection for its whole length, so
// with the SDK's default of 10, most calls of a busy instance would open a
// new connection (a TLS handshake to Bedrock) when they could reuse one.
const maxIdleConnsPerHost = 256

// NewClient builds a Bedrock Runtime client that the Model and the
// Guardrail can share. Its requests' bodies are read in full before they
// are sent (see wholeBody).
func NewClient(ctx context.Context, cfg ClientConfig) (*bedrockruntime.Client, error) {
	if cfg.Region == "" {
		return nil, errors.New("bedrock: the region (AWS_BEDROCK_REGION) is required")
	}
	opts := []func(*config.LoadOptions) error{config.WithRegion(cfg.Region)}
	if cfg.Credentials != nil {
		opts = append(opts, config.WithCredentialsProvider(cfg.Credentials))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("bedrock: load AWS config: %w", err)
	}
	return bedrockruntime.NewFromConfig(awsCfg, func(o *bedrockruntime.Options) {
		if cfg.EndpointURL != "" {
			o.BaseEndpoint = aws.String(cfg.EndpointURL)
		}
		bc, ok := o.HTTPClient.(*awshttp.BuildableClient)
		if o.HTTPClient == nil || ok {
			if bc == nil {
				bc = awshttp.NewBuildableClient()
			}
			o.HTTPClient = bc.WithTransportOptions(func(t *http.Transport) {
				t.MaxIdleConnsPerHost = maxIdleConnsPerHost
			})
		}
		o.HTTPClient = wholeBody{next: o.HTTPClient}
		o.Protocol = newEventProtocol(o.Protocol) // see eventProtocol
	}), nil
}

// newRetryer retries throttling and server errors answered before a
// call's response, with backoff.
func newRetryer(maxAttempts int, maxBackoff time.Duration) aws.Retryer {
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = maxAttempts
		o.MaxBackoff = maxBackoff
	})
}

// callOptions gives every call the Model's retryer, whatever the client's.
func (m *Model) callOptions(o *bedrockruntime.Options) {
	o.Retryer = m.retryer
}

// modelID picks the model for a purpose.
func (m *Model) modelID(p ports.Purpose) string {
	switch p {
	case ports.PurposeSummary:
		return m.cfg.SummaryModelID
	case ports.PurposeClassify:
		return m.cfg.EscalationModelID
	default:
		return m.cfg.ChatModelID
	}
}

// Stream answers req on ConverseStream, calling token with each text
// delta. Cancelling ctx closes the stream at once.
//
// A stream that fails with a throttling, unavailable or internal-error
// exception before its first token is called again, with the retryer's
// backoff, up to MaxAttempts calls; after the first token nothing is
// retried.
func (m *Model) Stream(ctx context.Context, req ports.ChatRequest, token func(string) error) (ports.Reply, error) {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	r := m.request(req)
	for attempt := 1; ; attempt++ {
		reply, sent, err := m.stream(parent, ctx, r, token)
		if err == nil || sent != 0 || attempt >= m.cfg.MaxAttempts || ctx.Err() != nil || !retryableInStream(err) {
			return reply, err
		}
		delay, derr := m.retryer.RetryDelay(attempt, err)
		if derr != nil {
			return reply, err
		}
		m.log.InfoContext(parent, "bedrock: stream failed before its first token, retrying", "model", r.modelID, "attempt", attempt, "delay", delay, "err", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return reply, m.callErr(parent, ctx, "converse stream", ctx.Err())
		case <-t.C:
		}
	}
}

// retryableInStream reports whether an exception read from a stream is
// worth another call: the SDK's retryer only sees the errors answered
// before the stream.
func retryableInStream(err error) bool {
	var te *types.ThrottlingException
	var ue *types.ServiceUnavailableException
	var ie *types.InternalServerException
	return errors.As(err, &te) || errors.As(err, &ue) || errors.As(err, &ie)
}

// stream makes one ConverseStream call; sent counts the tokens given, -1
// when the call failed before its stream (the SDK's retryer retried it).
func (m *Model) stream(parent, ctx context.Context, r request, token func(string) error) (reply ports.Reply, sent int, err error) {
	out, err := m.client.ConverseStream(ctx, &bedrockruntime.ConverseStreamInput{
		ModelId:         aws.String(r.modelID),
		System:          r.system,
		Messages:        r.messages,
		InferenceConfig: r.inference,
		GuardrailConfig: r.guardrail,
	}, m.callOptions)
	if err != nil {
		return reply, -1, m.callErr(parent, ctx, "converse stream", err)
	}
	stream := out.GetStream()
	defer func() { _ = stream.Close() }()

	// With Bedrock's streaming guardrail, an intervention sends the
	// guardrail's blocked message as the last delta before messageStop:
	// each delta is held until the next event shows it was not that one.
	var held *string
	give := func(text string) error {
		if ctx.Err() != nil {
			return m.callErr(parent, ctx, "converse stream", ctx.Err())
		}
		sent++ // counted before the call: a token given is never retried
		return token(text)
	}
	stopped := false
	for {
		select {
		case <-ctx.Done():
			return reply, sent, m.callErr(parent, ctx, "converse stream", ctx.Err())
		case ev, ok := <-stream.Events():
			if !ok {
				if err := stream.Err(); err != nil {
					// An exception is no intervention: the delta held is
					// the model's, and goes out before the error. Not the
					// stream's first, though: a stream that failed before
					// its first token may be retried, and gave nothing.
					if held != nil && sent > 0 {
						if gerr := give(*held); gerr != nil {
							return reply, sent, gerr
						}
					}
					if sent > 0 {
						m.log.WarnContext(parent, "bedrock: stream failed after its first token", "model", r.modelID, "tokens", sent, "err", err)
					}
					return reply, sent, m.callErr(parent, ctx, "converse stream", err)
				}
				if !stopped {
					return reply, sent, errors.New("bedrock: converse stream: the stream ended without messageStop")
				}
				return reply, sent, nil
			}
			switch v := ev.(type) {
			case *types.ConverseStreamOutputMemberContentBlockDelta:
				if t, ok := v.Value.Delta.(*types.ContentBlockDeltaMemberText); ok && t.Value != "" {
					if r.guardrail == nil {
						if err := give(t.Value); err != nil {
							return reply, sent, err
						}
						continue
					}
					if held != nil {
						if err := give(*held); err != nil {
							return reply, sent, err
						}
					}
					held = &t.Value
				}
			case *types.ConverseStreamOutputMemberMessageStop:
				stopped = true
				reply.Stop = m.stopReason(parent, r.modelID, v.Value.StopReason)
				if held != nil && reply.Stop != ports.StopGuardrailIntervened {
					if err := give(*held); err != nil {
						return reply, sent, err
					}
				}
				held = nil // the guardrail's blocked message is not the model's
			case *types.ConverseStreamOutputMemberMetadata:
				reply.Usage = usage(v.Value.Usage)
			}
		}
	}
}

// Complete answers req on Converse, with the model of req.Purpose.
func (m *Model) Complete(ctx context.Context, req ports.ChatRequest) (ports.Reply, error) {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	r := m.request(req)
	out, err := m.client.Converse(ctx, &bedrockruntime.ConverseInput{
		ModelId:         aws.String(r.modelID),
		System:          r.system,
		Messages:        r.messages,
		InferenceConfig: r.inference,
	}, m.callOptions)
	if err != nil {
		return ports.Reply{}, m.callErr(parent, ctx, "converse", err)
	}
	var b strings.Builder
	if msg, ok := out.Output.(*types.ConverseOutputMemberMessage); ok {
		for _, c := range msg.Value.Content {
			if t, ok := c.(*types.ContentBlockMemberText); ok {
				b.WriteString(t.Value)
			}
		}
	}
	return ports.Reply{
		Text:  b.String(),
		Stop:  m.stopReason(parent, r.modelID, out.StopReason),
		Usage: usage(out.Usage),
	}, nil
}

// callErr names the failure of a call: the caller's own context ending
// is returned as it is, the call's timeout is named.
func (m *Model) callErr(parent, ctx context.Context, op string, err error) error {
	return callErr(parent, ctx, op, m.cfg.Timeout, err)
}

// callErr names the failure of a call made on ctx, a child of parent
// bounded by timeout.
func callErr(parent, ctx context.Context, op string, timeout time.Duration, err error) error {
	if perr := parent.Err(); perr != nil {
		return perr
	}
	if ctx.Err() != nil {
		return fmt.Errorf("bedrock: %s: no answer within %s: %w", op, timeout, context.DeadlineExceeded)
	}
	return fmt.Errorf("bedrock: %s: %w", op, err)
}

// stopReason maps Bedrock's stop reasons to the port's. Reasons the
// conversation does not know end the answer as a turn, logged.
func (m *Model) stopReason(ctx context.Context, modelID string, s types.StopReason) ports.StopReason {
	switch s {
	case types.StopReasonEndTurn, types.StopReasonStopSequence:
		return ports.StopEndTurn
	case types.StopReasonMaxTokens, types.StopReasonModelContextWindowExceeded:
		if s != types.StopReasonMaxTokens {
			m.log.WarnContext(ctx, "bedrock: answer cut", "model", modelID, "stop_reason", string(s))
		}
		return ports.StopMaxTokens
	case types.StopReasonGuardrailIntervened:
		return ports.StopGuardrailIntervened
	case types.StopReasonContentFiltered:
		return ports.StopContentFiltered
	default:
		m.log.WarnContext(ctx, "bedrock: unexpected stop reason, taken as end_turn", "model", modelID, "stop_reason", string(s))
		return ports.StopEndTurn
	}
}

func usage(u *types.TokenUsage) ports.Usage {
	if u == nil {
		return ports.Usage{}
	}
	return ports.Usage{InputTokens: int(aws.ToInt32(u.InputTokens)), OutputTokens: int(aws.ToInt32(u.OutputTokens))}
}
