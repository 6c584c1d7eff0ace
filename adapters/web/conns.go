package web

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/wsserver/wsserver/adapters/metrics"
	"github.com/wsserver/wsserver/adapters/socket"
	"github.com/wsserver/wsserver/core/logctx"
	"github.com/wsserver/wsserver/core/protocol"
)

// Both WebSocket endpoints share one lifecycle: upgrade (admit, reserve,
// upgrade, wrap), track, serve, end. Only what a socket reads differs
// (session.go, chat.go), and how shutdown closes it: a session at once, a
// chat once its answer is done.

// endpoint is one WebSocket endpoint: the server of its sockets (their
// queue and write settings, its byte counters) and its metrics.
type endpoint struct {
	name    string // "session" or "chat", as logs and metrics name it
	sockets *socket.Server
	metrics metrics.Endpoint
	open    int // sockets tracked; guarded by Server.mu
}

func newEndpoint(name string, cfg socket.Config, m *metrics.Metrics) *endpoint {
	ep := &endpoint{name: name, metrics: m.Endpoint(name)}
	cfg.OnSlow = ep.metrics.Slow.Inc
	cfg.OnWritten = func(n int) { ep.metrics.Out.Add(float64(n)) }
	ep.sockets = socket.NewServer(cfg)
	return ep
}

// conn is one WebSocket of either endpoint, from its upgrade to its end.
type conn struct {
	*socket.Conn
	id   string // the connection id
	addr string // the client address, as reserve counted it
	ep   *endpoint
	chat *chatState // nil on a session socket
}

// upgrade takes a request through the steps every WebSocket shares: admit
// (drain, key, origin), reserve (a place on this instance and one of the
// client address's), the upgrade, and the wrap by ep's socket server. It
// answers a refusal itself and returns nil then.
func (s *Server) upgrade(c echo.Context, ep *endpoint) *conn {
	if !s.admit(c) {
		return nil
	}
	addr, ok := s.reserve(c)
	if !ok {
		return nil
	}
	sc, err := ep.sockets.Upgrade(&s.upgrader, c.Response(), c.Request())
	if err != nil {
		s.release(addr) // the upgrader has answered
		return nil
	}
	c.Response().Status = http.StatusSwitchingProtocols
	return &conn{Conn: sc, id: uuid.NewString(), addr: addr, ep: ep}
}

// connContext returns the context of c's goroutines, whose log lines
// (core's included, through logctx) carry the endpoint, attrs and the
// connection id.
func (s *Server) connContext(c *conn, attrs ...slog.Attr) context.Context {
	fields := append([]slog.Attr{slog.String("endpoint", c.ep.name)}, attrs...)
	return logctx.With(s.base, append(fields, slog.String("connection_id", c.id))...)
}

// track counts c among the open sockets, for shutdown to close; end undoes
// it. A socket is tracked from the start of its goroutine: one upgraded as
// drain began is closed by closeIfDraining instead.
func (s *Server) track(c *conn) {
	s.mu.Lock()
	s.conns[c] = struct{}{}
	c.ep.open++
	s.mu.Unlock()
	c.ep.metrics.Open.Inc()
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	if c.ep.open--; c.ep.open == 0 {
		s.gone.Broadcast()
	}
	s.mu.Unlock()
	c.ep.metrics.Open.Dec()
}

// closeIfDraining closes c with 1012 when drain started between its upgrade
// and its tracking, which CloseSessions and CloseChats may not have seen,
// and reports whether it did.
func (s *Server) closeIfDraining(c *conn) bool {
	if !s.draining.Load() {
		return false
	}
	c.Close(socket.CloseServiceReset, "service restart")
	drain(c.Conn)
	return true
}

// recoverSocket, deferred by a socket's goroutine, logs a panic and closes
// the socket with 1011.
func (s *Server) recoverSocket(ctx context.Context, c *conn) {
	if p := recover(); p != nil {
		s.cfg.Log.ErrorContext(ctx, "panic in "+c.ep.name+" socket", "panic", p, "stack", string(debug.Stack()))
		c.Close(socket.CloseInternal, "internal error")
	}
}

// end releases what c held once nothing reads it any more.
func (s *Server) end(c *conn) {
	if c.chat != nil {
		// A client that leaves stops its answer: the model call ends and
		// what was sent is stored as cancelled. Its chats that wait for
		// their thread leave the queue. Resumable chats run on, to be
		// resumed (PROTOCOL.md §3.9).
		c.chat.leave()
	}
	c.Finish()
	s.release(c.addr)
	s.untrack(c)
}

func (s *Server) logClose(ctx context.Context, err error) {
	s.cfg.Log.DebugContext(ctx, "socket closed", "reason", fmt.Sprint(err))
}

// The replies of either endpoint that are framed once for every socket:
// a ping flood or a message flood sends them the most.
var (
	pongFrame        = socket.Frame(protocol.Pong)
	rateLimitedFrame = socket.Frame(protocol.EncodeError(protocol.CodeRateLimited, "too many messages; slow down"))
)

// next reads a socket's next message within its rate limit: a message
// over the limit is answered with rate_limited and skipped. It reports
// false once the socket is closed.
func (s *Server) next(ctx context.Context, c *conn, limit *bucket) ([]byte, bool) {
	for {
		frame, err := c.Read()
		if err != nil {
			s.logClose(ctx, err)
			return nil, false
		}
		c.ep.metrics.In.Inc()
		if limit.allow(time.Now()) {
			return frame, true
		}
		c.ep.metrics.Limited.Inc()
		c.Send(rateLimitedFrame)
	}
}

// drain reads until the peer answers our close or the connection ends, so
// that the close handshake completes.
func drain(conn *socket.Conn) {
	for {
		if _, err := conn.Read(); err != nil {
			return
		}
	}
}

// CloseSessions closes every session socket with 1012 so that clients
// reconnect to another instance, and waits until they are gone or ctx ends.
func (s *Server) CloseSessions(ctx context.Context) error {
	s.mu.Lock()
	for c := range s.conns {
		if c.ep == s.sessions {
			c.Close(socket.CloseServiceReset, "service restart")
		}
	}
	s.mu.Unlock()

	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.gone.Broadcast()
		s.mu.Unlock()
	})
	defer stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.sessions.open > 0 && ctx.Err() == nil {
		s.gone.Wait()
	}
	if n := s.sessions.open; n > 0 {
		return fmt.Errorf("web: %d session sockets still open: %w", n, ctx.Err())
	}
	return nil
}

// CloseChats lets the answers streaming on this instance finish, closes
// every chat socket with 1012 once it has no answer streaming, and waits
// until the sockets are gone and every answer has ended, or ctx ends.
//
// When ctx ends first, every answer still running is cancelled and its
// socket closed. A cancelled answer still saves what it sent, and the
// stores must not close under it: CloseChats then waits SaveWait more for
// the answers to end, and logs the threads of those it abandons. It
// returns an error only when some are abandoned.
func (s *Server) CloseChats(ctx context.Context) error {
	s.mu.Lock()
	for c := range s.conns {
		if c.chat != nil && c.chat.closeWhenIdle() {
			c.Close(socket.CloseServiceReset, "service restart")
		}
	}
	s.mu.Unlock()

	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		for c := range s.conns {
			if c.chat != nil {
				c.chat.stopAll()
				c.Close(socket.CloseServiceReset, "service restart")
			}
		}
		for a := range s.answers { // those whose client left are cancelled already
			a.cancel()
		}
		s.gone.Broadcast()
		s.mu.Unlock()
	})
	defer stop()
	s.mu.Lock()
	for (s.chats.open > 0 || len(s.answers) > 0) && ctx.Err() == nil {
		s.gone.Wait()
	}
	cancelled := len(s.answers)
	s.mu.Unlock()
	if ctx.Err() == nil || cancelled == 0 {
		return nil
	}

	s.cfg.Log.WarnContext(ctx, "grace period over: answers cancelled, waiting for them to finish saving",
		"answers", cancelled, "wait", s.cfg.SaveWait)
	wait, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.SaveWait)
	defer cancel()
	stopWait := context.AfterFunc(wait, func() {
		s.mu.Lock()
		s.gone.Broadcast()
		s.mu.Unlock()
	})
	defer stopWait()
	s.mu.Lock()
	for len(s.answers) > 0 && wait.Err() == nil {
		s.gone.Wait()
	}
	abandoned := slices.Sorted(maps.Values(s.answers))
	s.mu.Unlock()
	if len(abandoned) == 0 {
		s.cfg.Log.InfoContext(ctx, "the cancelled answers finished saving", "answers", cancelled)
		return nil
	}
	s.cfg.Log.ErrorContext(ctx, "answers abandoned while saving: their turns may be lost",
		"answers", len(abandoned), "thread_ids", abandoned)
	return fmt.Errorf("web: %d answers still saving %s after the grace period (threads %s)",
		len(abandoned), s.cfg.SaveWait, strings.Join(abandoned, ", "))
}
