package web

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"sync"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/wsserver/wsserver/adapters/socket"
	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/core/protocol"
)

// chatSocket upgrades /ws/chat/ and hands the socket to its reader.
func (s *Server) chatSocket(c echo.Context) error {
	if !s.admit(c) {
		return nil
	}
	addr, ok := s.reserve(c)
	if !ok {
		return nil
	}
	ws, err := s.upgrader.Upgrade(c.Response(), c.Request(), nil)
	if err != nil {
		s.release(addr)
		return nil
	}
	c.Response().Status = http.StatusSwitchingProtocols
	conn := s.chats.Wrap(ws)
	connID := uuid.NewString()
	ctx := context.WithValue(s.base, logKey{}, []any{"endpoint", "chat", "connection_id", connID})
	go s.serveChat(ctx, &chatConn{Conn: conn, id: connID, addr: addr})
	return nil
}

// chatConn is one chat socket: at most one answer streams on it at a time.
type chatConn struct {
	*socket.Conn
	id   string
	addr string // the client address, as reserve counted it

	mu      sync.Mutex
	thread  string  // the connection's current thread
	running *answer // the answer streaming, nil when none
	closing bool    // drain: close once the answer is done
}

// answer is one answer streaming on a connection.
type answer struct{ cancel context.CancelFunc }

// done marks a as no longer streaming, unless another answer already
// took its place, and reports whether the socket should close for drain.
func (cc *chatConn) done(a *answer) (closing bool) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.running == a {
		cc.running = nil
	}
	return cc.closing
}

// serveChat reads one chat socket until it closes.
func (s *Server) serveChat(ctx context.Context, cc *chatConn) {
	s.trackChat(cc)
	s.chat.Open.Inc()
	defer func() {
		if p := recover(); p != nil {
			s.cfg.Log.ErrorContext(ctx, "panic in chat socket", logArgs(ctx, "panic", p, "stack", string(debug.Stack()))...)
			cc.Close(socket.CloseInternal, "internal error")
		}
		// A client that leaves stops its answer: the model call ends and
		// what was sent is stored as cancelled.
		cc.stop()
		cc.Finish()
		s.chat.Open.Dec()
		s.release(cc.addr)
		s.untrackChat(cc)
	}()
	if s.draining.Load() {
		cc.Close(socket.CloseServiceReset, "service restart")
		drain(cc.Conn)
		return
	}
	limit := newBucket(s.cfg.RatePerSec, s.cfg.RateBurst)
	refused := protocol.EncodeError(protocol.CodeRateLimited, rateLimitedMessage)
	for {
		frame, ok := s.next(ctx, cc.Conn, limit, s.chat, refused)
		if !ok {
			return
		}
		in, err := conversation.DecodeChat(frame, s.cfg.MaxMessageChars)
		if err != nil {
			s.sendError(ctx, cc.Conn, err)
			continue
		}
		switch in.Type {
		case conversation.TypePing:
			cc.Send(pongFrame)
		case conversation.TypeCancel:
			cc.stop()
		case conversation.TypeChat:
			s.startAnswer(ctx, cc, in.Chat)
		}
	}
}

// startAnswer runs one chat message's conversation on its own goroutine,
// so that the reader stays free for cancel and ping.
func (s *Server) startAnswer(ctx context.Context, cc *chatConn, chat conversation.Chat) {
	cc.mu.Lock()
	if cc.running != nil {
		cc.mu.Unlock()
		cc.SendText(protocol.EncodeError(protocol.CodeThreadBusy, "an answer is already streaming on this connection; wait for its end or cancel it"))
		return
	}
	if cc.closing {
		cc.mu.Unlock()
		return
	}
	thread := conversation.ThreadFor(chat.ThreadID, cc.thread, uuid.NewString)
	cc.thread = thread
	actx, cancel := context.WithCancel(ctx)
	a := &answer{cancel: cancel}
	cc.running = a
	cc.mu.Unlock()

	s.mu.Lock()
	s.answers[a] = thread
	s.mu.Unlock()
	go func() {
		defer func() {
			s.mu.Lock()
			delete(s.answers, a)
			s.gone.Broadcast()
			s.mu.Unlock()
		}()
		defer func() {
			if p := recover(); p != nil {
				s.cfg.Log.ErrorContext(ctx, "panic in chat answer", logArgs(ctx, "panic", p, "stack", string(debug.Stack()))...)
				cancel()
				cc.done(a)
				cc.SendText(protocol.EncodeError(protocol.CodeInternal, "internal error"))
			}
		}()
		var buf []byte
		emit := func(ev conversation.Event) {
			if ev.Kind == conversation.EventEnd || ev.Kind == conversation.EventError {
				// The client may send its next chat the moment it sees
				// this: the connection is free from now on.
				cc.done(a)
			}
			buf = conversation.AppendEvent(buf[:0], ev, cc.id)
			cc.Send(socket.Frame(buf))
		}
		res, err := s.cfg.Chat.Run(actx, conversation.Request{
			ThreadID: thread, Message: chat.Message, Channel: chat.Channel, Data: chat.Data,
			Owner: s.cfg.InstanceID + "/" + cc.id,
		}, emit)
		cancel()
		closing := cc.done(a)
		if err != nil && !errors.Is(err, context.Canceled) {
			s.cfg.Log.DebugContext(ctx, "chat refused or failed", logArgs(ctx, "thread_id", thread, "err", err)...)
		}
		// An escalation ends the conversation even when its turn could
		// not be saved: the client was sent the escalation, then the error.
		if res.Escalated {
			cc.Close(socket.CloseNormal, "escalation")
		}
		if closing {
			cc.Close(socket.CloseServiceReset, "service restart")
		}
	}()
}

// stop cancels the answer streaming on the connection, if any.
func (cc *chatConn) stop() {
	cc.mu.Lock()
	a := cc.running
	cc.mu.Unlock()
	if a != nil {
		a.cancel()
	}
}

func (s *Server) trackChat(cc *chatConn) {
	s.mu.Lock()
	s.chatConns[cc] = struct{}{}
	s.mu.Unlock()
}

func (s *Server) untrackChat(cc *chatConn) {
	s.mu.Lock()
	delete(s.chatConns, cc)
	if len(s.chatConns) == 0 {
		s.gone.Broadcast()
	}
	s.mu.Unlock()
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
	for cc := range s.chatConns {
		cc.mu.Lock()
		cc.closing = true
		idle := cc.running == nil
		cc.mu.Unlock()
		if idle {
			cc.Close(socket.CloseServiceReset, "service restart")
		}
	}
	s.mu.Unlock()

	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		for cc := range s.chatConns {
			cc.stop()
			cc.Close(socket.CloseServiceReset, "service restart")
		}
		for a := range s.answers { // those whose client left are cancelled already
			a.cancel()
		}
		s.gone.Broadcast()
		s.mu.Unlock()
	})
	defer stop()
	s.mu.Lock()
	for (len(s.chatConns) > 0 || len(s.answers) > 0) && ctx.Err() == nil {
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
