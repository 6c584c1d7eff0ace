// Package openai runs the conversation's model on any endpoint that
// serves OpenAI's chat completions API: vLLM, Ollama, llama.cpp's server,
// LiteLLM, or a hosted one.
//
// Model.Stream answers chats with POST {base}/chat/completions and
// "stream":true, reading the server-sent events; Model.Complete answers
// summaries and classifications without streaming; each purpose on its
// own model id. The system prompt, the client's data and a rewrite's
// instructions are one system message, and the thread's messages are
// merged into alternating roles, as the bedrock adapter does. Each call
// has a timeout; rate limits (429), server errors (5xx) and dropped
// connections are retried with backoff only until the first token is
// given.
//
// Guardrail checks answers with a judge model; the escalation classifier
// is conversation.Classifier on Model.Complete (PurposeClassify runs on
// EscalationModelID).
//
// It speaks HTTP with net/http and encoding/json only: the API is one
// POST and a line format, which an SDK would wrap without making it
// simpler, and the servers it must speak to differ from OpenAI's own in
// ways an SDK made for OpenAI does not forgive (see Config.NoStreamUsage).
package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wsserver/wsserver/core/prompt"
	"github.com/wsserver/wsserver/ports"
)

var _ ports.ChatModel = (*Model)(nil)

// Defaults for the zero values of Config.
const (
	DefaultTimeout     = 2 * time.Minute
	DefaultMaxAttempts = 3
	DefaultMaxBackoff  = 5 * time.Second
)

// baseBackoff is the pause before the second attempt; it doubles with
// each attempt, up to MaxBackoff, and is jittered.
const baseBackoff = 250 * time.Millisecond

// Config configures a Model.
type Config struct {
	// BaseURL is the API's root, up to and without /chat/completions
	// (OPENAI_BASE_URL): http://localhost:11434/v1 for Ollama,
	// http://localhost:8000/v1 for vLLM. Required: an http or https URL
	// with a host.
	BaseURL string
	// APIKey is sent as a bearer token (OPENAI_API_KEY); empty sends no
	// Authorization header, as local servers need none. It is never
	// logged, and is cut out of the error answers that are.
	APIKey string

	// ChatModelID answers chats (OPENAI_MODEL_ID_CHAT); required.
	ChatModelID string
	// SummaryModelID writes summaries (OPENAI_MODEL_ID_SUMMARY); empty
	// means ChatModelID.
	SummaryModelID string
	// EscalationModelID classifies messages for escalation
	// (OPENAI_MODEL_ID_ESCALATION); empty means ChatModelID.
	EscalationModelID string

	// NoStreamUsage leaves stream_options out of streamed requests
	// (OPENAI_STREAM_USAGE=0). By default a stream asks for its usage
	// with stream_options.include_usage; a server that refuses the field
	// (HTTP 400 or 422 naming it) is asked again without it, once, and
	// never again by this Model. Without the usage chunk, an answer's
	// output tokens are counted as its text chunks, and its input tokens
	// as 0.
	NoStreamUsage bool

	// MaxTokens bounds each answer (max_tokens); zero leaves the server's
	// default.
	MaxTokens int
	// Temperature nil leaves the server's default.
	Temperature *float32

	// Timeout bounds each call, from the request to the end of the
	// stream, retries included; zero means DefaultTimeout.
	Timeout time.Duration
	// MaxAttempts bounds the attempts of a call that is rate limited,
	// meets a server error or loses its connection before its answer
	// starts; zero means DefaultMaxAttempts, 1 means no retry.
	MaxAttempts int
	// MaxBackoff bounds the pause between attempts, a Retry-After header
	// included; zero means DefaultMaxBackoff.
	MaxBackoff time.Duration

	// HTTPClient nil means a client of the Model's own, keeping up to 256
	// idle connections to the server. A client given here should have no
	// Timeout: a stream lasts as long as its answer.
	HTTPClient *http.Client

	// Log nil discards.
	Log *slog.Logger
}

// Model is a ports.ChatModel on an OpenAI-compatible chat completions
// endpoint.
//
// Retries happen only before the first token: a call answered 429 or
// 5xx, one whose connection was refused, reset or closed before its
// answer, and a stream that is cut before its first token are made
// again, with backoff, up to MaxAttempts. Once a token is given nothing
// is retried, so no token is ever sent twice: a stream cut later ends the
// call with an error, and the caller does not keep the partial answer.
type Model struct {
	cfg      Config
	endpoint string
	client   *http.Client
	log      *slog.Logger
	// noUsage is set when stream_options is not to be sent: by
	// configuration, or since the server refused it.
	noUsage atomic.Bool
}

// maxIdleConnsPerHost is how many idle connections to the server the
// Model's own client keeps. A streamed answer holds its connection for
// its whole length, so with net/http's default of 2, most calls of a busy
// instance would open a new connection.
const maxIdleConnsPerHost = 256

// New validates cfg and returns a Model.
func New(cfg Config) (*Model, error) {
	u, err := url.Parse(cfg.BaseURL)
	switch {
	case cfg.BaseURL == "":
		return nil, errors.New("openai: the base URL (OPENAI_BASE_URL) is required")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return nil, errors.New("openai: the base URL (OPENAI_BASE_URL) must be an http:// or https:// URL with a host")
	case cfg.ChatModelID == "":
		return nil, errors.New("openai: the chat model id (OPENAI_MODEL_ID_CHAT) is required")
	case cfg.MaxTokens < 0:
		return nil, errors.New("openai: max tokens must not be negative")
	case cfg.Timeout < 0 || cfg.MaxAttempts < 0 || cfg.MaxBackoff < 0:
		return nil, errors.New("openai: timeout, max attempts and max backoff must not be negative")
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
		log = slog.New(slog.DiscardHandler)
	}
	client := cfg.HTTPClient
	if client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = maxIdleConnsPerHost
		client = &http.Client{Transport: t}
	}
	m := &Model{
		cfg:      cfg,
		endpoint: strings.TrimSuffix(cfg.BaseURL, "/") + "/chat/completions",
		client:   client,
		log:      log,
	}
	m.noUsage.Store(cfg.NoStreamUsage)
	return m, nil
}

// Close closes the idle connections of the Model's client.
func (m *Model) Close() {
	m.client.CloseIdleConnections()
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

// StatusError is an HTTP error answer of the endpoint.
type StatusError struct {
	Status int
	// Message is the answer's error message, or an excerpt of its body,
	// with the API key cut out.
	Message string
	// RetryAfter is the answer's Retry-After, zero when none.
	RetryAfter time.Duration

	body string // the whole (bounded) body, to find a field's name in
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("HTTP %d: %s", e.Status, e.Message)
}

// StreamError is an error event a server sent in a stream
// (data: {"error":{...}}).
type StreamError struct {
	Message string
	Type    string
}

func (e *StreamError) Error() string {
	if e.Type != "" {
		return fmt.Sprintf("the server sent an error (%s): %s", e.Type, e.Message)
	}
	return "the server sent an error: " + e.Message
}

// errCut is a stream that ended in the middle of its answer.
var errCut = errors.New("the stream was cut before the answer's end")

// Stream answers req with a streamed chat completion, calling token with
// each text delta. Cancelling ctx closes the request at once.
func (m *Model) Stream(ctx context.Context, req ports.ChatRequest, token func(string) error) (ports.Reply, error) {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	b := m.request(req)
	b.Stream = true
	optionsRefused := false
	for attempt := 1; ; attempt++ {
		b.StreamOptions = nil
		if !m.noUsage.Load() {
			b.StreamOptions = &streamOptions{IncludeUsage: true}
		}
		reply, sent, err := m.stream(parent, ctx, b, token)
		if err == nil || sent > 0 || ctx.Err() != nil {
			return reply, err
		}
		if b.StreamOptions != nil && !optionsRefused && refusesStreamOptions(err) {
			// Not an attempt: the same call, in words the server knows.
			optionsRefused = true
			attempt--
			if !m.noUsage.Swap(true) {
				m.log.WarnContext(parent, "openai: the server refuses stream_options; streaming without it from now on, with output tokens counted as chunks",
					"model", b.Model, "err", err)
			}
			continue
		}
		if attempt >= m.cfg.MaxAttempts || !retryable(err) {
			return reply, err
		}
		if !m.pause(ctx, attempt, err) {
			return reply, m.callErr(parent, ctx, "chat completion stream", ctx.Err())
		}
		m.log.InfoContext(parent, "openai: stream failed before its first token, retrying", "model", b.Model, "attempt", attempt, "err", err)
	}
}

// pause waits before attempt+1; false when ctx ended first.
func (m *Model) pause(ctx context.Context, attempt int, err error) bool {
	t := time.NewTimer(m.backoff(attempt, err))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// backoff is the pause after attempt: the answer's Retry-After when it
// has one, else baseBackoff doubled per attempt, jittered between half
// and all of it; never more than MaxBackoff.
func (m *Model) backoff(attempt int, err error) time.Duration {
	var se *StatusError
	if errors.As(err, &se) && se.RetryAfter > 0 {
		return min(se.RetryAfter, m.cfg.MaxBackoff)
	}
	d := m.cfg.MaxBackoff
	if attempt < 30 {
		d = min(baseBackoff<<(attempt-1), m.cfg.MaxBackoff)
	}
	return d/2 + rand.N(d/2+1) //nolint:gosec // jitter, not a secret
}

// retryable reports whether a call that failed before its first token is
// worth another: rate limits, server errors and lost connections.
func retryable(err error) bool {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status == http.StatusTooManyRequests || se.Status >= 500
	}
	var ne net.Error
	return errors.Is(err, errCut) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// refusesStreamOptions reports whether err is a server's refusal of
// stream_options: HTTP 400 or 422 naming the field.
func refusesStreamOptions(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && (se.Status == http.StatusBadRequest || se.Status == http.StatusUnprocessableEntity) &&
		strings.Contains(se.body, "stream_options")
}

// chunk is one event of a stream (chat.completion.chunk), or its error.
type chunk struct {
	Choices []struct {
		Index int `json:"index"`
		Delta struct {
			Content *string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *usage           `json:"usage"`
	Error *json.RawMessage `json:"error"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

func (u *usage) port() ports.Usage {
	return ports.Usage{InputTokens: max(u.PromptTokens, 0), OutputTokens: max(u.CompletionTokens, 0)}
}

// completion is a whole chat completion.
type completion struct {
	Choices []struct {
		Index   int `json:"index"`
		Message struct {
			Content *string `json:"content"`
		} `json:"message"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *usage           `json:"usage"`
	Error *json.RawMessage `json:"error"`
}

// stream makes one streamed call; sent counts the tokens given.
func (m *Model) stream(parent, ctx context.Context, b body, token func(string) error) (reply ports.Reply, sent int, err error) {
	const op = "chat completion stream"
	resp, err := m.post(ctx, b)
	if err != nil {
		return reply, 0, m.callErr(parent, ctx, op, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if isJSON(resp.Header.Get("Content-Type")) {
		// The server ignored "stream": the whole answer at once, as one
		// token.
		reply, err := m.readCompletion(parent, b.Model, resp.Body)
		if err != nil {
			return reply, 0, m.callErr(parent, ctx, op, err)
		}
		if reply.Text != "" {
			sent++
			if err := token(reply.Text); err != nil {
				return ports.Reply{}, sent, err
			}
		}
		reply.Text = ""
		return reply, sent, nil
	}

	ev := newEvents(&capped{r: resp.Body, n: MaxStreamBytes})
	finish, gotUsage, done := "", false, false
	for !done {
		data, err := ev.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, errTooLarge) {
				err = fmt.Errorf("%w: %w", errCut, err)
			}
			return reply, sent, m.streamErr(parent, ctx, b.Model, sent, err)
		}
		if string(bytes.TrimSpace(data)) == "[DONE]" {
			done = true
			break
		}
		var c chunk
		if err := json.Unmarshal(data, &c); err != nil {
			return reply, sent, m.streamErr(parent, ctx, b.Model, sent, fmt.Errorf("an unreadable chunk: %w", err))
		}
		if c.Error != nil {
			return reply, sent, m.streamErr(parent, ctx, b.Model, sent, streamError(*c.Error, m.cfg.APIKey))
		}
		if c.Usage != nil {
			reply.Usage, gotUsage = c.Usage.port(), true
		}
		for _, ch := range c.Choices {
			if ch.Index != 0 {
				continue
			}
			if ch.Delta.Content != nil && *ch.Delta.Content != "" {
				if ctx.Err() != nil {
					return reply, sent, m.callErr(parent, ctx, op, ctx.Err())
				}
				sent++ // counted before the call: a token given is never retried
				if err := token(*ch.Delta.Content); err != nil {
					return reply, sent, err
				}
			}
			if ch.FinishReason != nil && *ch.FinishReason != "" {
				finish = *ch.FinishReason
			}
		}
	}
	if ctx.Err() != nil {
		return reply, sent, m.callErr(parent, ctx, op, ctx.Err())
	}
	if finish == "" {
		// No finish_reason: the answer is not known to be whole, whether
		// or not [DONE] came.
		return reply, sent, m.streamErr(parent, ctx, b.Model, sent, fmt.Errorf("%w: no finish_reason", errCut))
	}
	if !gotUsage {
		reply.Usage = ports.Usage{OutputTokens: sent}
	}
	reply.Stop = m.stopReason(parent, b.Model, finish)
	return reply, sent, nil
}

// streamErr names the failure of a stream, logged when it comes after the
// first token: the client then sees an error after part of an answer.
func (m *Model) streamErr(parent, ctx context.Context, model string, sent int, err error) error {
	if sent > 0 && parent.Err() == nil {
		m.log.WarnContext(parent, "openai: stream failed after its first token", "model", model, "tokens", sent, "err", err)
	}
	return m.callErr(parent, ctx, "chat completion stream", err)
}

// Complete answers req with a chat completion, with the model of
// req.Purpose.
func (m *Model) Complete(ctx context.Context, req ports.ChatRequest) (ports.Reply, error) {
	return m.complete(ctx, m.request(req), m.cfg.Timeout, "chat completion")
}

// complete makes a chat completion call bounded by timeout, retrying
// what retryable allows: nothing was given to the caller yet.
func (m *Model) complete(ctx context.Context, b body, timeout time.Duration, op string) (ports.Reply, error) {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for attempt := 1; ; attempt++ {
		reply, err := m.completeOnce(parent, ctx, b)
		if err == nil {
			return reply, nil
		}
		if ctx.Err() != nil || attempt >= m.cfg.MaxAttempts || !retryable(err) {
			return ports.Reply{}, callErr(parent, ctx, op, timeout, err)
		}
		if !m.pause(ctx, attempt, err) {
			return ports.Reply{}, callErr(parent, ctx, op, timeout, ctx.Err())
		}
		m.log.InfoContext(parent, "openai: call failed, retrying", "op", op, "model", b.Model, "attempt", attempt, "err", err)
	}
}

func (m *Model) completeOnce(parent, ctx context.Context, b body) (ports.Reply, error) {
	resp, err := m.post(ctx, b)
	if err != nil {
		return ports.Reply{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	return m.readCompletion(parent, b.Model, resp.Body)
}

// readCompletion reads a chat completion's body.
func (m *Model) readCompletion(ctx context.Context, model string, r io.Reader) (ports.Reply, error) {
	raw, err := io.ReadAll(&capped{r: r, n: maxBodyBytes})
	if err != nil {
		if !errors.Is(err, errTooLarge) {
			err = fmt.Errorf("%w: %w", errCut, err)
		}
		return ports.Reply{}, err
	}
	var c completion
	if err := json.Unmarshal(raw, &c); err != nil {
		return ports.Reply{}, fmt.Errorf("an unreadable completion: %w", err)
	}
	if c.Error != nil {
		return ports.Reply{}, streamError(*c.Error, m.cfg.APIKey)
	}
	var reply ports.Reply
	found := false
	for _, ch := range c.Choices {
		if ch.Index != 0 {
			continue
		}
		found = true
		if ch.Message.Content != nil {
			reply.Text = *ch.Message.Content
		}
		finish := ""
		if ch.FinishReason != nil {
			finish = *ch.FinishReason
		}
		reply.Stop = m.stopReason(ctx, model, finish)
	}
	if !found {
		return ports.Reply{}, errors.New("the completion has no choice")
	}
	if c.Usage != nil {
		reply.Usage = c.Usage.port()
	}
	return reply, nil
}

// post sends b and returns the response of a 2xx answer; any other is a
// *StatusError.
func (m *Model) post(ctx context.Context, b body) (*http.Response, error) {
	// Not escaping <, > and &: the prompts' tags stay readable in the
	// server's logs.
	var raw bytes.Buffer
	enc := json.NewEncoder(&raw)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(b); err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.endpoint, &raw)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if b.Stream {
		req.Header.Set("Accept", "text/event-stream")
	} else {
		req.Header.Set("Accept", "application/json")
	}
	if m.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+m.cfg.APIKey)
	}
	resp, err := m.client.Do(req)
	if err != nil {
		// Not the *url.Error: its text has the URL, which may hold a
		// user and password.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, err
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer func() { _ = resp.Body.Close() }()
	const maxErrorBody = 64 << 10
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	text := redact(string(body), m.cfg.APIKey)
	return nil, &StatusError{
		Status:     resp.StatusCode,
		Message:    errorMessage(text),
		RetryAfter: retryAfter(resp.Header.Get("Retry-After")),
		body:       text,
	}
}

// retryAfter reads a Retry-After header given in seconds; zero otherwise.
func retryAfter(v string) time.Duration {
	s, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || s <= 0 {
		return 0
	}
	return time.Duration(min(s, 3600)) * time.Second
}

// maxMessage bounds the error messages kept from the server's answers.
const maxMessage = 300

// errorMessage reads the message of an error answer: OpenAI's
// {"error":{"message":...}}, Ollama's {"error":"..."}, FastAPI's (vLLM's)
// {"detail":...}, or else the body itself, cut short.
func errorMessage(body string) string {
	var v struct {
		Error  json.RawMessage `json:"error"`
		Detail json.RawMessage `json:"detail"`
	}
	if json.Unmarshal([]byte(body), &v) == nil {
		if len(v.Error) > 0 {
			return prompt.Excerpt(apiErrorText(v.Error).Message, maxMessage)
		}
		if len(v.Detail) > 0 {
			return prompt.Excerpt(string(v.Detail), maxMessage)
		}
	}
	return prompt.Excerpt(strings.TrimSpace(body), maxMessage)
}

// apiErrorText reads an error object, or an error string.
func apiErrorText(raw json.RawMessage) StreamError {
	var obj struct {
		Message string `json:"message"`
		Type    string `json:"type"`
	}
	if json.Unmarshal(raw, &obj) == nil && obj.Message != "" {
		return StreamError{Message: obj.Message, Type: obj.Type}
	}
	var s string
	if json.Unmarshal(raw, &s) == nil && s != "" {
		return StreamError{Message: s}
	}
	return StreamError{Message: string(raw)}
}

// streamError is the error of an error event, its text bounded and
// without the key.
func streamError(raw json.RawMessage, key string) *StreamError {
	e := apiErrorText(raw)
	e.Message = prompt.Excerpt(redact(e.Message, key), maxMessage)
	e.Type = prompt.Excerpt(redact(e.Type, key), 64)
	return &e
}

// redact cuts key out of s.
func redact(s, key string) string {
	if key == "" {
		return s
	}
	return strings.ReplaceAll(s, key, "[redacted]")
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
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
		return fmt.Errorf("openai: %s: no answer within %s: %w", op, timeout, context.DeadlineExceeded)
	}
	return fmt.Errorf("openai: %s: %w", op, err)
}

// stopReason maps a finish_reason to the port's stop reasons, as the
// bedrock adapter maps Bedrock's: "length" is max_tokens, and
// "content_filter" (the server's own filter cut or replaced the answer)
// is guardrail_intervened. Reasons the conversation does not know end the
// answer as a turn, logged.
func (m *Model) stopReason(ctx context.Context, model, finish string) ports.StopReason {
	switch finish {
	case "stop":
		return ports.StopEndTurn
	case "length":
		return ports.StopMaxTokens
	case "content_filter":
		return ports.StopGuardrailIntervened
	default:
		m.log.WarnContext(ctx, "openai: unexpected finish_reason, taken as end_turn", "model", model, "finish_reason", prompt.Excerpt(finish, 64))
		return ports.StopEndTurn
	}
}
