// Package fakemodel is what the fake model endpoints test/fakebedrock and
// test/fakeopenai share beside their wire formats: the scripts queued for
// the next calls, the record of the calls, the model's clock that paces
// the deltas, failure injection that is not a wire's (throttling, a hang,
// the server closing under a stream), and the flags and run of their
// commands. Each fake keeps only what its wire says: its routes, its
// Script and Request fields, and how it writes them.
package fakemodel

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"
)

// Call is what a fake keeps of every call, whatever its wire format. A
// fake's Request embeds it and adds what its wire tells.
type Call struct {
	// Op is the operation, in the fake's words ("converse-stream",
	// "chat", ...).
	Op     string
	Header http.Header
	Body   []byte
	// Ended is set when the fake is done with the call.
	Ended bool
	// ClientGone is set when the client went away (the request's context
	// ended) before the fake finished its answer.
	ClientGone bool
}

func (c *Call) call() *Call { return c }

// Record is a fake's Request: a pointer to a struct that embeds Call.
type Record[R any] interface {
	*R
	call() *Call
}

// Config is what a Server needs of its fake.
type Config[S any] struct {
	// Name prefixes the Server's errors ("fakebedrock").
	Name string
	// Default is the script of every call that finds no queued one.
	Default S
	// Throttled is the script Throttle queues: the wire's HTTP 429.
	Throttled S
}

// Server is a fake's HTTP server with its scripts and its calls: S is
// the fake's Script, R its Request. Each call takes the first queued
// script, else the default one.
type Server[S, R any, PR Record[R]] struct {
	cfg       Config[S]
	srv       *httptest.Server
	closed    chan struct{}
	closeOnce sync.Once

	mu       sync.Mutex
	queue    []S
	requests []R
	light    bool          // keep no header or body of the calls
	changed  chan struct{} // closed and replaced when requests change
}

// New starts a Server whose routes are h and returns it with its base
// URL. Close it when done. A nil h starts no HTTP server, for a test that
// calls a fake's writers itself (in a synctest bubble, where a listener
// would keep the clock from moving); the URL is then empty.
func New[S, R any, PR Record[R]](cfg Config[S], h http.Handler) (*Server[S, R, PR], string) {
	s := &Server[S, R, PR]{cfg: cfg, closed: make(chan struct{}), changed: make(chan struct{})}
	if h == nil {
		return s, ""
	}
	s.srv = httptest.NewServer(h)
	return s, s.srv.URL
}

// Close ends the calls in progress and stops the server. Calling it again
// does nothing.
func (s *Server[S, R, PR]) Close() {
	s.closeOnce.Do(func() {
		close(s.closed)
		if s.srv != nil {
			s.srv.CloseClientConnections()
			s.srv.Close()
		}
	})
}

// Transport returns the HTTP transport of the server's own client.
func (s *Server[S, R, PR]) Transport() http.RoundTripper { return s.srv.Client().Transport }

// Push queues scripts for the next calls, in order.
func (s *Server[S, R, PR]) Push(scripts ...S) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue = append(s.queue, scripts...)
}

// Throttle makes the next n calls, before any queued script, answer
// HTTP 429 before any stream.
func (s *Server[S, R, PR]) Throttle(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	throttled := make([]S, n, n+len(s.queue))
	for i := range throttled {
		throttled[i] = s.cfg.Throttled
	}
	s.queue = append(throttled, s.queue...)
}

// Light makes the fake keep no header and no body of the calls from now
// on, only what Request has besides: for a fake that serves a long load
// run, where they would add up (a few KB a call).
func (s *Server[S, R, PR]) Light() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.light = true
}

// Requests returns the calls received so far, in order of arrival.
func (s *Server[S, R, PR]) Requests() []R {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]R, len(s.requests))
	copy(out, s.requests)
	return out
}

// Outcome counts the calls received so far and those whose client went
// away before the answer ended.
func (s *Server[S, R, PR]) Outcome() (calls, clientGone int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.requests {
		if PR(&s.requests[i]).call().ClientGone {
			clientGone++
		}
	}
	return len(s.requests), clientGone
}

// WaitEnded waits until the fake is done with call i (counted from 0 in
// order of arrival) and returns it.
func (s *Server[S, R, PR]) WaitEnded(ctx context.Context, i int) (R, error) {
	for {
		s.mu.Lock()
		if i < len(s.requests) && PR(&s.requests[i]).call().Ended {
			r := s.requests[i]
			s.mu.Unlock()
			return r, nil
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			var zero R
			return zero, fmt.Errorf("%s: wait for call %d: %w", s.cfg.Name, i, ctx.Err())
		case <-ch:
		}
	}
}

func (s *Server[S, R, PR]) update(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn()
	close(s.changed)
	s.changed = make(chan struct{})
}

// Begin records req, a call that arrives with ctx, and returns its
// script: the first queued one, else the default. The handler calls end
// when done with the call, with whether the client went away first (a
// failed write, say); an ended ctx says so too.
func (s *Server[S, R, PR]) Begin(ctx context.Context, req R) (sc S, end func(gone bool)) {
	var i int
	s.update(func() {
		if len(s.queue) > 0 {
			sc, s.queue = s.queue[0], s.queue[1:]
		} else {
			sc = s.cfg.Default
		}
		i = s.add(req)
	})
	return sc, s.ender(ctx, i)
}

// Answer records req, a call that arrives with ctx, which the fake
// answers with no script of the queue (a refusal of the request's shape,
// say). end is as Begin's.
func (s *Server[S, R, PR]) Answer(ctx context.Context, req R) (end func(gone bool)) {
	var i int
	s.update(func() { i = s.add(req) })
	return s.ender(ctx, i)
}

// add appends req to the calls; s.mu is held.
func (s *Server[S, R, PR]) add(req R) int {
	if s.light {
		c := PR(&req).call()
		c.Header, c.Body = nil, nil
	}
	s.requests = append(s.requests, req)
	return len(s.requests) - 1
}

func (s *Server[S, R, PR]) ender(ctx context.Context, i int) func(gone bool) {
	return func(gone bool) {
		gone = gone || ctx.Err() != nil
		s.update(func() {
			c := PR(&s.requests[i]).call()
			c.Ended, c.ClientGone = true, gone
		})
	}
}

// Stream sends deltas through send on the model's clock: delta i is due
// pace*i after the first, as from a model generating at a steady rate; one
// sent late (the fake's CPU was busy) does not delay the ones after it.
// send returns false when its write failed. Stream returns true when
// every delta was sent; else the stream must end there, and gone says
// whether the client went away (or a write failed) rather than the server
// closing.
func (s *Server[S, R, PR]) Stream(ctx context.Context, deltas []string, pace time.Duration, send func(delta string) bool) (sent, gone bool) {
	return stream(ctx, s.closed, deltas, pace, send)
}

func stream(ctx context.Context, closed <-chan struct{}, deltas []string, pace time.Duration, send func(string) bool) (sent, gone bool) {
	var timer *time.Timer
	var first time.Time
	for i, d := range deltas {
		if i == 0 {
			first = time.Now()
		} else if pace > 0 {
			wait := time.Until(first.Add(time.Duration(i) * pace))
			if timer == nil {
				timer = time.NewTimer(wait)
				defer timer.Stop()
			} else {
				timer.Reset(wait)
			}
			select {
			case <-ctx.Done():
				return false, true
			case <-closed:
				return false, false
			case <-timer.C:
			}
		}
		if !send(d) {
			return false, true
		}
	}
	return true, false
}

// Hang keeps a stream open until the client goes away (true) or the
// server closes (false).
func (s *Server[S, R, PR]) Hang(ctx context.Context) (gone bool) {
	select {
	case <-ctx.Done():
		return true
	case <-s.closed:
		return false
	}
}

// Delay waits d, as an answer that takes its time. It returns false when
// the call must end first: gone then says whether the client went away
// rather than the server closing.
func (s *Server[S, R, PR]) Delay(ctx context.Context, d time.Duration) (waited, gone bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false, true
	case <-s.closed:
		return false, false
	case <-t.C:
		return true, false
	}
}

// Deltas is what a script streams: each element of deltas when it is set,
// else text as one delta, else nothing.
func Deltas(text string, deltas []string) []string {
	if deltas != nil {
		return deltas
	}
	if text == "" {
		return nil
	}
	return []string{text}
}

// Text is what a script answers in one piece: text, or the concatenated
// deltas when they are set.
func Text(text string, deltas []string) string {
	if deltas == nil {
		return text
	}
	return strings.Join(deltas, "")
}
