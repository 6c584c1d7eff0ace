package web

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/wsserver/wsserver/adapters/metrics"
	"github.com/wsserver/wsserver/adapters/socket"
	"github.com/wsserver/wsserver/core/protocol"
	"github.com/wsserver/wsserver/core/session"
	"github.com/wsserver/wsserver/ports"
)

// sessionSocket upgrades /ws/session/<id>/ and hands the socket to its own
// reader goroutine; the handler returns at once, so that net/http's
// buffers and the handler's stack are not kept for the socket's life.
func (s *Server) sessionSocket(c echo.Context) error {
	id := c.Param("id")
	if !session.ValidID(id) {
		s.cfg.Metrics.Refused("invalid_session_id")
		writeError(c.Response(), http.StatusBadRequest, "invalid_session_id",
			"session_id must be 1 to 128 characters of A-Z a-z 0-9 _ - . :")
		return nil
	}
	if !s.admit(c) {
		return nil
	}
	addr, ok := s.reserve(c)
	if !ok {
		return nil
	}
	ws, err := s.upgrader.Upgrade(c.Response(), c.Request(), nil)
	if err != nil {
		s.release(addr) // the upgrader has answered
		return nil
	}
	c.Response().Status = http.StatusSwitchingProtocols
	conn := s.sessions.Wrap(ws)
	connID := uuid.NewString()
	ctx := context.WithValue(s.base, logKey{}, []any{"endpoint", "session", "session", id, "connection_id", connID})
	go s.serveSession(ctx, conn, id, connID, addr)
	return nil
}

type logKey struct{}

// logArgs returns the attributes that ctx carries for logs.
func logArgs(ctx context.Context, args ...any) []any {
	base, _ := ctx.Value(logKey{}).([]any)
	return append(append([]any(nil), base...), args...)
}

// serveSession is the reader of one session socket until its hello is
// done. The messages after that are read by a fresh goroutine: the hello
// and the join grow a stack that an idle socket need not keep, and a new
// goroutine starts small.
func (s *Server) serveSession(ctx context.Context, conn *socket.Conn, id, connID, addr string) {
	s.track(conn)
	s.session.Open.Inc()
	joined := false
	defer func() {
		if p := recover(); p != nil {
			s.cfg.Log.ErrorContext(ctx, "panic in session socket", logArgs(ctx, "panic", p, "stack", string(debug.Stack()))...)
			conn.Close(socket.CloseInternal, "internal error")
		}
		if !joined {
			s.endSession(conn, addr)
		}
	}()
	if s.draining.Load() {
		// Drain started between the upgrade and now.
		conn.Close(socket.CloseServiceReset, "service restart")
		drain(conn)
		return
	}
	member, ok := s.hello(ctx, conn, connID)
	if !ok {
		drain(conn)
		return
	}
	if err := s.cfg.Hub.Join(ctx, id, member, conn, session.EncodeHelloOK(id, connID)); err != nil {
		return
	}
	joined = true
	go s.readSession(ctx, conn, id, member, addr)
}

// endSession releases what a session socket of client address addr held.
func (s *Server) endSession(conn *socket.Conn, addr string) {
	conn.Finish()
	s.session.Open.Dec()
	s.release(addr)
	s.untrack(conn)
}

// readSession serves a joined session socket's messages until it closes.
func (s *Server) readSession(ctx context.Context, conn *socket.Conn, id string, member ports.Member, addr string) {
	defer func() {
		if p := recover(); p != nil {
			s.cfg.Log.ErrorContext(ctx, "panic in session socket", logArgs(ctx, "panic", p, "stack", string(debug.Stack()))...)
			conn.Close(socket.CloseInternal, "internal error")
		}
		s.cfg.Hub.Leave(ctx, id, member.ConnectionID, conn)
		s.endSession(conn, addr)
	}()
	limit := newBucket(s.cfg.RatePerSec, s.cfg.RateBurst)
	refused := protocol.EncodeError(protocol.CodeRateLimited, rateLimitedMessage)
	for {
		frame, ok := s.next(ctx, conn, limit, s.session, refused)
		if !ok {
			return
		}
		in, err := session.Decode(frame)
		if err != nil {
			s.sendError(ctx, conn, err)
			continue
		}
		switch in.Type {
		case session.KindBroadcast:
			if err := s.cfg.Hub.Broadcast(ctx, id, member, in.Msg, in.Data); err != nil {
				s.sendError(ctx, conn, err)
			}
		case session.KindPresence:
			members, err := s.cfg.Hub.Presence(ctx, id)
			if err != nil {
				s.sendError(ctx, conn, err)
				continue
			}
			conn.SendText(session.EncodePresence(id, members))
		case session.KindPing:
			conn.Send(pongFrame)
		case session.KindHello:
			conn.SendText(protocol.EncodeError(protocol.CodeInvalidMsg, "hello was already received"))
		}
	}
}

// hello reads the first message, which must be a valid hello; otherwise
// the client gets the error and a close with 1008.
func (s *Server) hello(ctx context.Context, conn *socket.Conn, connID string) (ports.Member, bool) {
	timer := time.AfterFunc(s.cfg.HelloTimeout, func() {
		conn.SendText(protocol.EncodeError(protocol.CodeHelloRequired, "no hello in time"))
		conn.Close(socket.ClosePolicy, "hello required")
	})
	defer timer.Stop()
	frame, err := conn.Read()
	if err != nil {
		s.logClose(ctx, err)
		return ports.Member{}, false
	}
	s.session.In.Inc()
	in, err := session.Decode(frame)
	if err == nil && in.Type != session.KindHello {
		err = &protocol.Error{Code: protocol.CodeHelloRequired, Message: "the first message must be a hello with user_type"}
	}
	if err != nil {
		s.sendError(ctx, conn, err)
		conn.Close(socket.ClosePolicy, "hello required")
		return ports.Member{}, false
	}
	return ports.Member{ConnectionID: connID, UserType: in.UserType, ClientType: in.ClientType}, true
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

func (s *Server) logClose(ctx context.Context, err error) {
	s.cfg.Log.Log(ctx, slog.LevelDebug, "socket closed", logArgs(ctx, "reason", fmt.Sprint(err))...)
}

const rateLimitedMessage = "too many messages; slow down"

// pongFrame is the reply to a ping on either endpoint, framed once.
var pongFrame = socket.Frame(protocol.Pong)

// next reads a socket's next message within its rate limit: a message
// over the limit is answered with refused and skipped. It reports false
// once the socket is closed.
func (s *Server) next(ctx context.Context, conn *socket.Conn, limit *bucket, ep metrics.Endpoint, refused []byte) ([]byte, bool) {
	for {
		frame, err := conn.Read()
		if err != nil {
			s.logClose(ctx, err)
			return nil, false
		}
		ep.In.Inc()
		if limit.allow(time.Now()) {
			return frame, true
		}
		ep.Limited.Inc()
		conn.SendText(refused)
	}
}
