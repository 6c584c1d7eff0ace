// Package fakeopenai is a fake OpenAI-compatible chat completions endpoint
// (the API vLLM, Ollama, llama.cpp's server and LiteLLM serve) for tests
// and benchmarks. It speaks the wire format: point the openai adapter's
// base URL at URL.
//
// POST {URL}/chat/completions with "stream":true answers server-sent
// events (one chat.completion.chunk per text delta, the finish_reason in
// the last one, the usage in a chunk of its own when the request asks for
// it with stream_options.include_usage, then data: [DONE]); with "stream"
// false or absent it answers one chat.completion. What each call answers
// is a Script: queued scripts are used first, one per call, then the
// default script. Requests returns what each call received, and whether
// the client went away before its answer ended.
//
//	fake := fakeopenai.New(fakeopenai.Script{Deltas: []string{"Hi", " there"}, Pace: 20 * time.Millisecond})
//	defer fake.Close()
//	fake.Throttle(2) // the next two calls get HTTP 429
//
// Script.Wire picks the variants real servers send (the usage chunk with
// "choices":null, ": keep-alive" comment lines, CRLF line endings, ...),
// and Script.Raw replays a recorded answer byte for byte.
package fakeopenai

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/wsserver/wsserver/test/internal/fakemodel"
)

// Script is what the fake answers to one call.
type Script struct {
	// Text is the answer. A stream sends it as one chunk per element of
	// Deltas when Deltas is set, else as a single chunk; a completion
	// answers Text, or the concatenated Deltas.
	Text   string
	Deltas []string
	// Finish is the finish_reason ("stop", "length", "content_filter",
	// ...); empty means "stop".
	Finish string
	// Usage is reported in the usage chunk; zero means about one prompt
	// token per 4 bytes of the request body and one completion token per
	// delta.
	Usage Usage
	// Pace is the time between deltas, on the fake's own clock: delta i
	// is due Pace*i after the first, as from a model generating at a
	// steady rate. One sent late (the fake's CPU was busy) does not delay
	// the ones after it.
	Pace time.Duration
	// HTTPError, when set, answers the call with an HTTP error instead of
	// a stream: ThrottlingError and ServerError make common ones.
	HTTPError *HTTPError
	// Cut, when set, ends the stream after Cut.After deltas: with an error
	// event when Cut.Error is set, else by dropping the connection in the
	// middle of the answer.
	Cut *Cut
	// Hang keeps the stream open after the last delta, without
	// finish_reason, until the client goes away or the server closes.
	Hang bool
	// Wire picks the variants of the wire format.
	Wire Wire
	// Raw, when set, is written as the whole stream's body, byte for byte
	// (a recorded answer); every other field but HTTPError is ignored.
	Raw string
}

// Wire picks how a stream is written, as the servers in the wild differ.
type Wire struct {
	// CRLF ends lines with \r\n instead of \n.
	CRLF bool
	// KeepAlive writes a ": keep-alive" comment line before the first
	// chunk and between chunks, as proxies and some servers do.
	KeepAlive bool
	// UsageChoicesNull writes "choices":null in the usage chunk instead of
	// [].
	UsageChoicesNull bool
	// UsageWithFinish puts the usage in the chunk of the finish_reason,
	// with no chunk of its own (llama.cpp's server does).
	UsageWithFinish bool
	// NoSpace writes data:{...} without the space after the colon.
	NoSpace bool
	// NoDone ends the stream without data: [DONE].
	NoDone bool
}

// Cut ends a stream in the middle of the answer.
type Cut struct {
	// After is the number of deltas sent before the cut.
	After int
	// Error, when set, is sent as a data: {"error":{...}} event before the
	// stream ends (vLLM's and LiteLLM's way of failing a stream);
	// otherwise the connection is dropped with no end of the body.
	Error *APIError
}

// APIError is OpenAI's error object.
type APIError struct {
	Message string `json:"message"`
	Type    string `json:"type,omitempty"`
	Code    any    `json:"code,omitempty"`
}

// Usage is the token usage reported by the fake.
type Usage struct {
	PromptTokens     int
	CompletionTokens int
}

// HTTPError is an error answered before any stream.
type HTTPError struct {
	Status int
	// Body is the answer's JSON; empty means {"error":{"message":...}}
	// with the status's text.
	Body string
	// RetryAfter, when set, is sent as the Retry-After header.
	RetryAfter string
}

// ThrottlingError is the HTTP 429 servers answer to too many requests.
func ThrottlingError() *HTTPError {
	return &HTTPError{Status: http.StatusTooManyRequests,
		Body: `{"error":{"message":"Rate limit reached, please try again later.","type":"requests","code":"rate_limit_exceeded"}}`}
}

// ServerError is an HTTP 500.
func ServerError() *HTTPError {
	return &HTTPError{Status: http.StatusInternalServerError,
		Body: `{"error":{"message":"The server had an error while processing your request.","type":"server_error"}}`}
}

// StreamOptionsRejection is the answer of a server that does not know
// stream_options (status 400 or 422), naming the field as such servers do.
func StreamOptionsRejection(status int) *HTTPError {
	return &HTTPError{Status: status,
		Body: `{"error":{"message":"Unrecognized request argument supplied: stream_options","type":"invalid_request_error","param":"stream_options","code":null}}`}
}

// Request is one call the fake received: its Op is "chat-stream" or
// "chat", as the body's "stream" says.
type Request struct {
	fakemodel.Call
	// Model is the body's "model".
	Model string
	// StreamOptions reports whether the body had stream_options.
	StreamOptions bool
}

// Server is a fake OpenAI-compatible endpoint. Its Push, Throttle, Light,
// Requests, WaitEnded and Close are the fakes' common core's
// (test/internal/fakemodel): Throttle's calls answer ThrottlingError.
type Server struct {
	*calls
	// URL is the base URL, ending in /v1, for OPENAI_BASE_URL.
	URL string

	reject atomic.Int64 // the status refusing stream_options; 0 accepts it
}

type calls = fakemodel.Server[Script, Request, *Request]

// New starts a fake answering def to every call that finds no queued
// script. Close it when done.
func New(def Script) *Server {
	s := &Server{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", s.serve)
	var root string
	s.calls, root = fakemodel.New[Script, Request](fakemodel.Config[Script]{
		Name: "fakeopenai", Default: def, Throttled: Script{HTTPError: ThrottlingError()},
	}, mux)
	s.URL = root + "/v1"
	return s
}

// RejectStreamOptions makes the fake answer every call that carries
// stream_options with StreamOptionsRejection(status), as servers that do
// not know the field do; 0 accepts it again. The refusal takes no script.
func (s *Server) RejectStreamOptions(status int) {
	s.reject.Store(int64(status))
}

// body is what the fake reads of a request.
type body struct {
	Model         string `json:"model"`
	Stream        bool   `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var b body
	if err := json.Unmarshal(raw, &b); err != nil {
		writeError(w, &HTTPError{Status: http.StatusBadRequest,
			Body: fmt.Sprintf(`{"error":{"message":%q,"type":"invalid_request_error"}}`, "invalid JSON: "+err.Error())})
		return
	}
	op := "chat"
	if b.Stream {
		op = "chat-stream"
	}
	req := Request{Call: fakemodel.Call{Op: op, Header: r.Header.Clone(), Body: raw}, Model: b.Model, StreamOptions: b.StreamOptions != nil}
	var sc Script
	var end func(gone bool)
	if status := int(s.reject.Load()); status != 0 && b.StreamOptions != nil {
		sc, end = Script{HTTPError: StreamOptionsRejection(status)}, s.Answer(r.Context(), req)
	} else {
		sc, end = s.Begin(r.Context(), req)
	}
	gone := false
	defer func() { end(gone) }()
	if e := sc.HTTPError; e != nil {
		writeError(w, e)
		return
	}
	u := sc.usage(raw)
	if !b.Stream {
		writeCompletion(w, b.Model, sc, u)
		return
	}
	if sc.Raw != "" {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, sc.Raw)
		return
	}
	includeUsage := b.StreamOptions != nil && b.StreamOptions.IncludeUsage
	gone = s.stream(r.Context(), w, b.Model, sc, u, includeUsage)
}

func (sc Script) deltas() []string { return fakemodel.Deltas(sc.Text, sc.Deltas) }

func (sc Script) usage(body []byte) Usage {
	if sc.Usage != (Usage{}) {
		return sc.Usage
	}
	return Usage{PromptTokens: 1 + len(body)/4, CompletionTokens: len(sc.deltas())}
}

func (sc Script) finish() string {
	if sc.Finish == "" {
		return "stop"
	}
	return sc.Finish
}

func writeError(w http.ResponseWriter, e *HTTPError) {
	b := e.Body
	if b == "" {
		b = fmt.Sprintf(`{"error":{"message":%q}}`, http.StatusText(e.Status))
	}
	w.Header().Set("Content-Type", "application/json")
	if e.RetryAfter != "" {
		w.Header().Set("Retry-After", e.RetryAfter)
	}
	w.WriteHeader(e.Status)
	_, _ = io.WriteString(w, b)
}

func usageJSON(u Usage) map[string]any {
	return map[string]any{"prompt_tokens": u.PromptTokens, "completion_tokens": u.CompletionTokens, "total_tokens": u.PromptTokens + u.CompletionTokens}
}

// created is the fixed creation time of the fake's answers.
const created = 1764770400

func writeCompletion(w http.ResponseWriter, model string, sc Script, u Usage) {
	text := fakemodel.Text(sc.Text, sc.Deltas)
	out := map[string]any{
		"id": "chatcmpl-fake", "object": "chat.completion", "created": created, "model": model,
		"choices": []any{map[string]any{
			"index":         0,
			"message":       map[string]any{"role": "assistant", "content": text},
			"finish_reason": sc.finish(),
		}},
		"usage": usageJSON(u),
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// stream writes the script as server-sent events. It reports whether the
// client went away first.
func (s *Server) stream(ctx context.Context, w http.ResponseWriter, model string, sc Script, u Usage, includeUsage bool) (gone bool) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	ew := &eventWriter{w: w, wire: sc.Wire}
	chunk := func(choices any, usage any) map[string]any {
		c := map[string]any{"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices}
		if usage != nil {
			c["usage"] = usage
		}
		return c
	}
	choice := func(delta map[string]any, finish any) []any {
		return []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}}
	}
	ew.comment()
	ew.data(chunk(choice(map[string]any{"role": "assistant", "content": ""}, nil), nil))
	deltas := sc.deltas()
	if c := sc.Cut; c != nil && c.After >= 0 && c.After < len(deltas) {
		deltas = deltas[:c.After]
	}
	if sent, gone := s.Stream(ctx, deltas, sc.Pace, func(d string) bool {
		ew.comment()
		ew.data(chunk(choice(map[string]any{"content": d}, nil), nil))
		return ew.err == nil
	}); !sent {
		return gone
	}
	if c := sc.Cut; c != nil {
		if c.Error != nil {
			ew.data(map[string]any{"error": c.Error})
			return ew.err != nil
		}
		// Drop the connection with the body unfinished: the client reads
		// an unexpected EOF, as when a proxy or the server dies.
		panic(http.ErrAbortHandler)
	}
	if sc.Hang {
		return s.Hang(ctx)
	}
	var finishUsage any
	if includeUsage && sc.Wire.UsageWithFinish {
		finishUsage = usageJSON(u)
	}
	ew.data(chunk(choice(map[string]any{}, sc.finish()), finishUsage))
	if includeUsage && !sc.Wire.UsageWithFinish {
		var choices any = []any{}
		if sc.Wire.UsageChoicesNull {
			choices = nil
		}
		ew.data(chunk(choices, usageJSON(u)))
	}
	if !sc.Wire.NoDone {
		ew.line("data: [DONE]")
		ew.line("")
		ew.flush()
	}
	return ew.err != nil || ctx.Err() != nil
}

// eventWriter writes server-sent events and flushes each; it keeps the
// first error.
type eventWriter struct {
	w    http.ResponseWriter
	wire Wire
	err  error
}

func (e *eventWriter) line(s string) {
	if e.err != nil {
		return
	}
	end := "\n"
	if e.wire.CRLF {
		end = "\r\n"
	}
	_, e.err = io.WriteString(e.w, s+end)
}

func (e *eventWriter) flush() {
	if e.err == nil {
		e.err = http.NewResponseController(e.w).Flush()
	}
}

func (e *eventWriter) comment() {
	if e.wire.KeepAlive {
		e.line(": keep-alive")
		e.line("")
	}
}

// data writes v as one event.
func (e *eventWriter) data(v any) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		e.err = err
		return
	}
	prefix := "data: "
	if e.wire.NoSpace {
		prefix = "data:"
	}
	e.line(prefix + strings.TrimSuffix(b.String(), "\n"))
	e.line("")
	e.flush()
}
