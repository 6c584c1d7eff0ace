// Package fakebedrock is a fake Amazon Bedrock Runtime endpoint for tests
// and benchmarks. It speaks the real wire format, so the real SDK client
// talks to it: point the client's BaseEndpoint at URL, give it static
// credentials and any region.
//
// POST /model/{modelId}/converse-stream answers with
// application/vnd.amazon.eventstream frames made by the SDK's own encoder
// (messageStart, contentBlockDelta per text delta, contentBlockStop,
// messageStop, metadata); POST /model/{modelId}/converse answers JSON;
// POST /guardrail/{id}/version/{version}/apply answers Script.Guardrail.
// What each call answers is a Script: queued scripts are used first, one
// per call, then the default script. Requests returns what each call
// received, and whether the client went away before its answer ended.
//
//	fake := fakebedrock.New(fakebedrock.Script{Deltas: []string{"Hi", " there"}, Pace: 20 * time.Millisecond})
//	defer fake.Close()
//	fake.Throttle(2) // the next two calls get HTTP 429
//	client := bedrockruntime.New(bedrockruntime.Options{
//		Region:       "us-east-1",
//		BaseEndpoint: aws.String(fake.URL),
//		Credentials:  credentials.NewStaticCredentialsProvider("AKID", "secret", ""),
//		HTTPClient:   fake.HTTPClient(),
//	})
//
// The fake speaks HTTP/1.1, where the SDK closes a request's body while
// net/http may still read it, which can cut a stream: give the client
// the fake's HTTPClient, which reads request bodies in full before
// sending them (the bedrock adapter's New does the same).
package fakebedrock

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream/eventstreamapi"

	"github.com/wsserver/wsserver/test/internal/fakemodel"
)

// Script is what the fake answers to one call.
type Script struct {
	// Text is the answer. ConverseStream sends it as one text delta per
	// element of Deltas when Deltas is set, else as a single delta;
	// Converse answers Text, or the concatenated Deltas.
	Text   string
	Deltas []string
	// Stop is the stopReason ("end_turn", "max_tokens",
	// "guardrail_intervened", ...); empty means "end_turn".
	Stop string
	// Usage is reported in the metadata; zero means about one input token
	// per 4 bytes of the request body and one output token per delta.
	Usage Usage
	// Pace is the time between deltas, on the fake's own clock: delta i
	// is due Pace*i after the first, as from a model generating at a
	// steady rate. One sent late (the fake's CPU was busy) does not delay
	// the ones after it.
	Pace time.Duration
	// HTTPError, when set, answers the call with an HTTP error instead of
	// a stream: ThrottlingError and ServerError make common ones.
	HTTPError *HTTPError
	// Exception, when set, ends the stream with an exception frame after
	// Exception.After deltas.
	Exception *Exception
	// Hang keeps the stream open after the last delta, without
	// messageStop, until the client goes away or the server closes.
	Hang bool
	// Guardrail is what ApplyGuardrail answers; nil means action NONE
	// with no assessment.
	Guardrail *GuardrailAnswer
	// GuardrailDelay is how long ApplyGuardrail takes to answer: a
	// guardrail's round trip, for benchmarks.
	GuardrailDelay time.Duration
	// Intervention is what Bedrock's own guardrail does to a
	// ConverseStream call that asked for one (its body's guardrailConfig,
	// as BEDROCK_GUARDRAIL_STREAM_MODE sends it); a call without one is
	// never intervened on. Nil: the guardrail passes the whole answer.
	Intervention *Intervention
}

// Intervention is Bedrock's streaming guardrail stopping an answer, on
// the wire as Bedrock sends it: the deltas the guardrail let through, its
// blocked message as one more delta, then messageStop with stopReason
// guardrail_intervened, and, when the call asked for a trace, the
// guardrail's assessment in the metadata event's trace.
type Intervention struct {
	// After is how many deltas pass before the one the guardrail blocks.
	After int
	// Leaked is how many more deltas, the blocked one first, an async
	// call (streamProcessingMode "async") sends before the intervention:
	// async mode checks text already sent. A sync call sends none of
	// them: the guardrail holds text until it passed.
	Leaked int
	// Message is the guardrail's blocked-output message; empty sends
	// none.
	Message string
	// Assessments is the trace's output assessment (a JSON array of
	// GuardrailAssessment objects); nil means [].
	Assessments json.RawMessage
}

// StreamGuardrail is the guardrailConfig of a ConverseStream call.
type StreamGuardrail struct {
	GuardrailIdentifier  string `json:"guardrailIdentifier"`
	GuardrailVersion     string `json:"guardrailVersion"`
	StreamProcessingMode string `json:"streamProcessingMode"`
	Trace                string `json:"trace"`
}

// GuardrailAnswer is the answer of POST
// /guardrail/{id}/version/{version}/apply.
type GuardrailAnswer struct {
	// Action is "NONE" or "GUARDRAIL_INTERVENED"; empty means "NONE".
	Action string
	// Outputs are the texts that replace the checked ones.
	Outputs []string
	// Assessments is the JSON array of GuardrailAssessment objects, as
	// Bedrock sends it; nil means [].
	Assessments json.RawMessage
}

// Usage is the token usage reported by the fake.
type Usage struct {
	InputTokens  int
	OutputTokens int
}

// HTTPError is an error answered before any stream.
type HTTPError struct {
	Status int
	// Type is the X-Amzn-ErrorType, the SDK's error code:
	// "ThrottlingException", "ServiceUnavailableException", ...
	Type    string
	Message string
}

// Exception is an exception frame sent in the stream.
type Exception struct {
	// After is the number of deltas sent before the exception.
	After int
	// Type is the :exception-type header, a member of the
	// ConverseStreamOutput union: "modelStreamErrorException",
	// "throttlingException", "internalServerException", ...
	Type    string
	Message string
}

// ThrottlingError is the HTTP 429 Bedrock answers to too many requests.
func ThrottlingError() *HTTPError {
	return &HTTPError{Status: http.StatusTooManyRequests, Type: "ThrottlingException", Message: "Too many requests, please wait before trying again."}
}

// ServerError is an HTTP 500 InternalServerException.
func ServerError() *HTTPError {
	return &HTTPError{Status: http.StatusInternalServerError, Type: "InternalServerException", Message: "The server encountered an internal error."}
}

// Request is one call the fake received: its Op is "converse-stream",
// "converse" or "apply-guardrail".
type Request struct {
	fakemodel.Call
	// ModelID is the model, or the guardrail's id for apply-guardrail.
	ModelID string
	// GuardrailVersion is set for apply-guardrail.
	GuardrailVersion string
}

// Server is a fake Bedrock Runtime endpoint. Its Push, Throttle, Light,
// Requests, WaitEnded and Close are the fakes' common core's
// (test/internal/fakemodel): Throttle's calls answer ThrottlingError.
type Server struct {
	*calls
	// URL is the endpoint, for the client's BaseEndpoint.
	URL string
}

type calls = fakemodel.Server[Script, Request, *Request]

// New starts a fake answering def to every call that finds no queued
// script. Close it when done.
func New(def Script) *Server {
	s := &Server{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /model/{modelId}/converse-stream", func(w http.ResponseWriter, r *http.Request) {
		s.serve(w, r, "converse-stream")
	})
	mux.HandleFunc("POST /model/{modelId}/converse", func(w http.ResponseWriter, r *http.Request) {
		s.serve(w, r, "converse")
	})
	mux.HandleFunc("POST /guardrail/{guardrailId}/version/{version}/apply", func(w http.ResponseWriter, r *http.Request) {
		s.serve(w, r, "apply-guardrail")
	})
	s.calls, s.URL = fakemodel.New[Script, Request](fakemodel.Config[Script]{
		Name: "fakebedrock", Default: def, Throttled: Script{HTTPError: ThrottlingError()},
	}, mux)
	return s
}

// HTTPClient returns a client for the SDK (the HTTPClient of
// bedrockruntime.Options) that reads each request's body in full before
// sending it.
func (s *Server) HTTPClient() *http.Client {
	return &http.Client{Transport: wholeBody{next: s.Transport()}}
}

// wholeBody sends a copy of the request's body, which the SDK cannot
// close under net/http's writer.
type wholeBody struct {
	next http.RoundTripper
}

func (w wholeBody) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return w.next.RoundTrip(r)
	}
	b, err := io.ReadAll(r.Body)
	_ = r.Body.Close()
	if err != nil {
		return nil, err
	}
	r = r.Clone(r.Context())
	r.Body = io.NopCloser(bytes.NewReader(b))
	return w.next.RoundTrip(r)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, op string) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req := Request{Call: fakemodel.Call{Op: op, Header: r.Header.Clone(), Body: body}, ModelID: r.PathValue("modelId")}
	if op == "apply-guardrail" {
		req.ModelID, req.GuardrailVersion = r.PathValue("guardrailId"), r.PathValue("version")
	}
	sc, end := s.Begin(r.Context(), req)
	gone := false
	defer func() { end(gone) }()
	if e := sc.HTTPError; e != nil {
		writeError(w, e)
		return
	}
	usage := sc.usage(body)
	if op == "apply-guardrail" {
		if sc.GuardrailDelay > 0 {
			var waited bool
			if waited, gone = s.Delay(r.Context(), sc.GuardrailDelay); !waited {
				return
			}
		}
		writeGuardrail(w, sc.Guardrail)
		return
	}
	if op == "converse" {
		writeConverse(w, sc, usage)
		return
	}
	var in struct {
		GuardrailConfig *StreamGuardrail `json:"guardrailConfig"`
	}
	_ = json.Unmarshal(body, &in) // a body that is not JSON asks for no guardrail
	if in.GuardrailConfig == nil {
		sc.Intervention = nil // no guardrail asked for: none intervenes
	}
	gone = s.stream(r.Context(), w, sc, usage, in.GuardrailConfig)
}

func (sc Script) deltas() []string { return fakemodel.Deltas(sc.Text, sc.Deltas) }

func (sc Script) usage(body []byte) Usage {
	if sc.Usage != (Usage{}) {
		return sc.Usage
	}
	return Usage{InputTokens: 1 + len(body)/4, OutputTokens: len(sc.deltas())}
}

func (sc Script) stop() string {
	if sc.Stop == "" {
		return "end_turn"
	}
	return sc.Stop
}

func writeError(w http.ResponseWriter, e *HTTPError) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Amzn-ErrorType", e.Type)
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": e.Message})
}

func writeConverse(w http.ResponseWriter, sc Script, u Usage) {
	out := map[string]any{
		"output": map[string]any{"message": map[string]any{
			"role":    "assistant",
			"content": []any{map[string]any{"text": fakemodel.Text(sc.Text, sc.Deltas)}},
		}},
		"stopReason": sc.stop(),
		"usage":      usageJSON(u),
		"metrics":    map[string]any{"latencyMs": 1},
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func writeGuardrail(w http.ResponseWriter, g *GuardrailAnswer) {
	if g == nil {
		g = &GuardrailAnswer{}
	}
	action := g.Action
	if action == "" {
		action = "NONE"
	}
	outputs := []any{}
	for _, o := range g.Outputs {
		outputs = append(outputs, map[string]any{"text": o})
	}
	assessments := g.Assessments
	if len(bytes.TrimSpace(assessments)) == 0 {
		assessments = json.RawMessage("[]")
	}
	out := map[string]any{
		"action":      action,
		"outputs":     outputs,
		"assessments": assessments,
		"usage": map[string]any{
			"topicPolicyUnits": 1, "contentPolicyUnits": 1, "wordPolicyUnits": 1,
			"sensitiveInformationPolicyUnits": 1, "sensitiveInformationPolicyFreeUnits": 0,
			"contextualGroundingPolicyUnits": 0,
		},
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func usageJSON(u Usage) map[string]any {
	return map[string]any{"inputTokens": u.InputTokens, "outputTokens": u.OutputTokens, "totalTokens": u.InputTokens + u.OutputTokens}
}

// stream writes the script as event-stream frames. It reports whether
// the client went away first.
func (s *Server) stream(ctx context.Context, w http.ResponseWriter, sc Script, u Usage, g *StreamGuardrail) (gone bool) {
	w.Header().Set("Content-Type", "application/vnd.amazon.eventstream")
	w.WriteHeader(http.StatusOK)
	fw := &frameWriter{w: w, enc: eventstream.NewEncoder()}
	fw.event("messageStart", map[string]any{"role": "assistant"})
	deltas := sc.deltas()
	iv := sc.Intervention
	if iv != nil {
		n := iv.After
		if g.StreamProcessingMode == "async" {
			n += iv.Leaked
		}
		deltas = deltas[:min(n, len(deltas))]
	}
	if e := sc.Exception; e != nil && e.After >= 0 && e.After < len(deltas) {
		deltas = deltas[:e.After]
	}
	if sent, gone := s.Stream(ctx, deltas, sc.Pace, func(d string) bool {
		fw.event("contentBlockDelta", map[string]any{"contentBlockIndex": 0, "delta": map[string]any{"text": d}})
		return fw.err == nil
	}); !sent {
		return gone
	}
	if e := sc.Exception; e != nil {
		fw.exception(e.Type, e.Message)
		return fw.err != nil
	}
	if sc.Hang {
		return s.Hang(ctx)
	}
	stop := sc.stop()
	meta := map[string]any{"usage": usageJSON(u), "metrics": map[string]any{"latencyMs": 1}}
	if iv != nil {
		if iv.Message != "" {
			fw.event("contentBlockDelta", map[string]any{"contentBlockIndex": 0, "delta": map[string]any{"text": iv.Message}})
		}
		stop = "guardrail_intervened"
		if g.Trace == "enabled" || g.Trace == "enabled_full" {
			assessments := iv.Assessments
			if len(bytes.TrimSpace(assessments)) == 0 {
				assessments = json.RawMessage("[]")
			}
			meta["trace"] = map[string]any{"guardrail": map[string]any{
				"outputAssessments": map[string]any{g.GuardrailIdentifier: assessments},
			}}
		}
	}
	fw.event("contentBlockStop", map[string]any{"contentBlockIndex": 0})
	fw.event("messageStop", map[string]any{"stopReason": stop})
	fw.event("metadata", meta)
	return fw.err != nil || ctx.Err() != nil
}

// frameWriter writes event-stream messages and flushes each; it keeps the
// first error.
type frameWriter struct {
	w   http.ResponseWriter
	enc *eventstream.Encoder
	err error
}

func (f *frameWriter) event(typ string, payload any) {
	f.write(eventstreamapi.EventMessageType, eventstreamapi.EventTypeHeader, typ, payload)
}

func (f *frameWriter) exception(typ, message string) {
	f.write(eventstreamapi.ExceptionMessageType, eventstreamapi.ExceptionTypeHeader, typ, map[string]string{"message": message})
}

func (f *frameWriter) write(msgType, typeHeader, typ string, payload any) {
	if f.err != nil {
		return
	}
	b, err := json.Marshal(payload)
	if err != nil {
		f.err = err
		return
	}
	var msg eventstream.Message
	msg.Headers.Set(eventstreamapi.MessageTypeHeader, eventstream.StringValue(msgType))
	msg.Headers.Set(typeHeader, eventstream.StringValue(typ))
	msg.Headers.Set(eventstreamapi.ContentTypeHeader, eventstream.StringValue("application/json"))
	msg.Payload = b
	if f.err = f.enc.Encode(f.w, msg); f.err != nil {
		return
	}
	f.err = http.NewResponseController(f.w).Flush()
}
