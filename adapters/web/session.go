package web

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
	"github.com/labstack/echo/v4"

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
	sc := s.upgrade(c, s.sessions)
	if sc == nil {
		return nil
	}
	go s.serveSession(s.connContext(sc, slog.String("session_id", id)), sc, id)
	return nil
}

// The refusals of a session socket's protocol.
var (
	errHelloFirst = &protocol.Error{Code: protocol.CodeHelloRequired, Message: "the first message must be a hello with user_type"}
	errHelloLate  = &protocol.Error{Code: protocol.CodeHelloRequired, Message: "no hello in time"}
	errHelloAgain = &protocol.Error{Code: protocol.CodeInvalidMsg, Message: "hello was already received"}
)

// serveSession is the reader of one session socket until its hello is
// done. The messages after that are read by a fresh goroutine: the hello
// and the join grow a stack that an idle socket need not keep, and a new
// goroutine starts small.
func (s *Server) serveSession(ctx context.Context, sc *conn, id string) {
	s.track(sc)
	joined := false
	defer func() {
		if !joined {
			s.end(sc)
		}
	}()
	defer s.recoverSocket(ctx, sc)
	if s.closeIfDraining(sc) {
		return
	}
	member, in, ok := s.hello(ctx, sc)
	if !ok {
		drain(sc.Conn)
		return
	}
	if err := s.cfg.Hub.JoinSince(ctx, id, member, sc.Conn, in.Since); err != nil {
		return
	}
	joined = true
	if in.PresenceEvents {
		if err := s.cfg.Hub.Listen(ctx, id, sc.Conn); err != nil {
			s.sendError(ctx, sc, err)
		}
	}
	go s.readSession(ctx, sc, id, member)
}

// leaveSession takes a joined socket out of its session. Only a close
// with 1000 from the client is a clean leave, told to presence-event
// listeners at once; any other end (a drop, 1001 from a reloading page,
// the server's own close) waits for the grace, so that a member that
// reconnects is not seen to leave (PROTOCOL.md §4.7).
func (s *Server) leaveSession(ctx context.Context, sc *conn, id, connID string) {
	if _, err := sc.Read(); websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		s.cfg.Hub.Leave(ctx, id, connID, sc.Conn)
		return
	}
	s.cfg.Hub.Drop(ctx, id, connID, sc.Conn)
}

// readSession serves a joined session socket's messages until it closes.
// It is the loop an idle socket's goroutine parks in, so it keeps a small
// frame: each message is served by sessionMessage.
func (s *Server) readSession(ctx context.Context, sc *conn, id string, member ports.Member) {
	defer s.end(sc)
	defer s.leaveSession(ctx, sc, id, member.ConnectionID)
	defer s.recoverSocket(ctx, sc)
	limit := newBucket(s.cfg.RatePerSec, s.cfg.RateBurst)
	for {
		frame, ok := s.next(ctx, sc, limit)
		if !ok {
			return
		}
		s.sessionMessage(ctx, sc, id, &member, frame)
	}
}

// sessionMessage serves one message of a joined session socket.
func (s *Server) sessionMessage(ctx context.Context, sc *conn, id string, member *ports.Member, frame []byte) {
	in, err := session.Decode(frame)
	if err != nil {
		s.sendError(ctx, sc, err)
		return
	}
	switch in.Type {
	case session.KindBroadcast:
		if err := s.cfg.Hub.Broadcast(ctx, id, *member, in.Msg, in.Data); err != nil {
			s.sendError(ctx, sc, err)
		}
	case session.KindPresence:
		members, err := s.cfg.Hub.Presence(ctx, id)
		if err != nil {
			s.sendError(ctx, sc, err)
			return
		}
		sc.SendText(session.EncodePresence(id, members))
	case session.KindPing:
		sc.Send(pongFrame)
	case session.KindHello:
		s.sendError(ctx, sc, errHelloAgain)
	}
}

// hello reads the first message, which must be a valid hello; otherwise
// the client gets the error and a close with 1008. It returns the member
// and the hello, whose PresenceEvents and Since the join reads.
func (s *Server) hello(ctx context.Context, sc *conn) (ports.Member, session.Inbound, bool) {
	timer := time.AfterFunc(s.cfg.HelloTimeout, func() {
		s.sendError(ctx, sc, errHelloLate)
		sc.Close(socket.ClosePolicy, "hello required")
	})
	defer timer.Stop()
	frame, err := sc.Read()
	if err != nil {
		s.logClose(ctx, err)
		return ports.Member{}, session.Inbound{}, false
	}
	sc.ep.metrics.In.Inc()
	in, err := session.Decode(frame)
	if err == nil && in.Type != session.KindHello {
		err = errHelloFirst
	}
	if err != nil {
		s.sendError(ctx, sc, err)
		sc.Close(socket.ClosePolicy, "hello required")
		return ports.Member{}, session.Inbound{}, false
	}
	return ports.Member{ConnectionID: sc.id, UserType: in.UserType, ClientType: in.ClientType, PresenceKey: in.PresenceKey}, in, true
}
