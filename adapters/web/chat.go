package web

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/wsserver/wsserver/adapters/socket"
	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/core/logctx"
	"github.com/wsserver/wsserver/core/protocol"
	"github.com/wsserver/wsserver/ports"
)

// chatSocket upgrades /ws/chat/ and hands the socket to its reader.
func (s *Server) chatSocket(c echo.Context) error {
	cc := s.upgrade(c, s.chats)
	if cc == nil {
		return nil
	}
	cc.chat = &chatState{}
	go s.serveChat(s.connContext(cc), cc)
	return nil
}

// chatState is what a chat socket holds beyond a session's: at most one
// answer streams on it at a time, and chats of the connection that wait
// for their thread (PROTOCOL.md §3.8) are on the same thread.
type chatState struct {
	mu      sync.Mutex
	thread  string    // the connection's current thread
	answers []*answer // the chats of the connection not done yet: the one streaming and those waiting, on thread
	closing bool      // drain: close once the answer is done

	// The answer the connection resumed (PROTOCOL.md §3.9), until its end:
	// following names its thread, and unfollow stops its events.
	following string
	unfollow  func()
}

// answer is one chat of a connection, from its start to its end or error.
type answer struct {
	cancel    context.CancelFunc
	streaming bool          // session_started was sent; guarded by chatState.mu
	resumable bool          // it keeps running when the client leaves (PROTOCOL.md §3.9)
	ended     chan struct{} // closed by over, once its last frame is queued
	once      sync.Once
}

func newAnswer(cancel context.CancelFunc, resumable bool) *answer {
	return &answer{cancel: cancel, resumable: resumable, ended: make(chan struct{})}
}

// done marks a as done, and reports whether the socket should close for
// drain.
func (cs *chatState) done(a *answer) (closing bool) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if i := slices.Index(cs.answers, a); i >= 0 {
		cs.answers = slices.Delete(cs.answers, i, i+1)
	}
	return cs.closing
}

// over marks a's last frame (end or error) as queued on the socket, or a
// as ended without one: the connection's next answer may start sending.
func (a *answer) over() { a.once.Do(func() { close(a.ended) }) }

// maxEndWait bounds how long an answer's session_started waits for the
// end of the connection's previous answer (started).
const maxEndWait = 5 * time.Second

// started marks a as the answer streaming on the connection, once the
// answer that streamed on it before has sent its end: a chat that waited
// behind the connection's own answer, or interrupted it, takes the thread
// the moment that answer released it, which is just before that answer
// sends its end (conversation.Run). The client reads one answer after the
// other.
func (cs *chatState) started(a *answer) {
	cs.mu.Lock()
	var before []chan struct{}
	for _, b := range cs.answers {
		if b != a && b.streaming {
			before = append(before, b.ended)
		}
	}
	cs.mu.Unlock()
	if len(before) > 0 {
		t := time.NewTimer(maxEndWait)
		defer t.Stop()
		for _, ended := range before {
			select {
			case <-ended:
			case <-t.C:
			}
		}
	}
	cs.mu.Lock()
	a.streaming = true
	cs.mu.Unlock()
}

// closeWhenIdle marks the socket for closing once its answer is done, and
// reports whether it has no chat streaming or waiting: then it may close
// now.
func (cs *chatState) closeWhenIdle() (idle bool) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.closing = true
	return len(cs.answers) == 0
}

// stop cancels the answer streaming on the connection, if any: the
// client's cancel. Chats that wait for their thread keep waiting.
func (cs *chatState) stop() {
	cs.mu.Lock()
	var streaming []*answer
	for _, a := range cs.answers {
		if a.streaming {
			streaming = append(streaming, a)
		}
	}
	cs.mu.Unlock()
	for _, a := range streaming {
		a.cancel()
	}
}

// stopAll cancels every chat of the connection, streaming or waiting: the
// client left.
func (cs *chatState) stopAll() {
	cs.mu.Lock()
	all := slices.Clone(cs.answers)
	cs.mu.Unlock()
	for _, a := range all {
		a.cancel()
	}
}

// leave cancels the chats of a client that left, but for the resumable
// ones that started, which run on to be resumed, and stops following a
// resumed one. A chat that waits for its thread leaves the queue even when
// resumable (PROTOCOL.md §3.8): it has no answer to resume yet.
func (cs *chatState) leave() {
	cs.mu.Lock()
	var stop []*answer
	for _, a := range cs.answers {
		if !a.resumable || !a.streaming {
			stop = append(stop, a)
		}
	}
	unfollow := cs.unfollow
	cs.following, cs.unfollow = "", nil
	cs.mu.Unlock()
	for _, a := range stop {
		a.cancel()
	}
	if unfollow != nil {
		unfollow()
	}
}

// streams reports whether the connection's answer streams on thread.
func (cs *chatState) streams(thread string) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.thread != thread {
		return false
	}
	for _, a := range cs.answers {
		if a.streaming {
			return true
		}
	}
	return false
}

// errStopUnsent tells a client that its cancel of another connection's
// answer could not be routed (Redis away).
var errStopUnsent = &protocol.Error{Code: protocol.CodeUnavailable, Message: "the cancel could not be sent to the answer's instance; try again"}

// cancel stops an answer (PROTOCOL.md §3.5): the connection's own when the
// cancel names no thread, or names the one it streams; otherwise the
// thread's answer wherever it runs, through the conversation's run
// control. No reply of its own: the answer's socket gets end, cancelled.
func (s *Server) cancel(ctx context.Context, cc *conn, thread string) {
	if thread == "" {
		// A resumed answer is the connection's own (§3.9).
		cc.chat.mu.Lock()
		thread = cc.chat.following
		cc.chat.mu.Unlock()
	}
	if thread == "" || cc.chat.streams(thread) {
		cc.chat.stop()
		return
	}
	if _, err := s.cfg.Chat.Stop(ctx, thread, ports.StopCancel); err != nil {
		s.cfg.Log.WarnContext(ctx, "cancel not routed", "thread_id", thread, "err", err)
		s.sendError(ctx, cc, errStopUnsent)
	}
}

// errAnswerStreaming refuses a chat sent while the connection's answer
// streams, or its chats wait, unless it waits for the same thread
// (PROTOCOL.md §3.4, §3.8).
var errAnswerStreaming = &protocol.Error{Code: protocol.CodeThreadBusy, Message: "an answer is already streaming on this connection; wait for its end or cancel it"}

// serveChat reads one chat socket until it closes.
func (s *Server) serveChat(ctx context.Context, cc *conn) {
	s.track(cc)
	defer s.end(cc)
	defer s.recoverSocket(ctx, cc)
	if s.closeIfDraining(cc) {
		return
	}
	limit := newBucket(s.cfg.RatePerSec, s.cfg.RateBurst)
	for {
		frame, ok := s.next(ctx, cc, limit)
		if !ok {
			return
		}
		in, err := conversation.DecodeChat(frame, s.cfg.MaxMessageChars)
		if err != nil {
			s.sendError(ctx, cc, err)
			continue
		}
		switch in.Type {
		case conversation.TypePing:
			cc.Send(pongFrame)
		case conversation.TypeCancel:
			s.cancel(ctx, cc, in.ThreadID)
		case conversation.TypeChat:
			s.startAnswer(ctx, cc, in.Chat)
		case conversation.TypeResume:
			s.resume(ctx, cc, in.Resume)
		}
	}
}

// startAnswer runs one chat message's conversation on its own goroutine,
// so that the reader stays free for cancel and ping.
func (s *Server) startAnswer(ctx context.Context, cc *conn, chat conversation.Chat) {
	cs := cc.chat
	cs.mu.Lock()
	if cs.closing {
		cs.mu.Unlock()
		return
	}
	thread := conversation.ThreadFor(chat.ThreadID, cs.thread, uuid.NewString)
	if cs.following != "" || len(cs.answers) > 0 && (chat.Multitask == conversation.MultitaskReject || thread != cs.thread) {
		// One answer at a time per connection: a chat may wait behind
		// the connection's own only on the same thread, in its queue.
		cs.mu.Unlock()
		s.sendError(ctx, cc, errAnswerStreaming)
		return
	}
	cs.thread = thread
	// The answer's log lines, the conversation's included, name its thread.
	ctx = logctx.With(ctx, slog.String("thread_id", thread))
	actx, cancel := context.WithCancel(ctx)
	a := newAnswer(cancel, chat.Resumable)
	cs.answers = append(cs.answers, a)
	cs.mu.Unlock()

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
				s.cfg.Log.ErrorContext(ctx, "panic in chat answer", "panic", p, "stack", string(debug.Stack()))
				cancel()
				cs.done(a)
				s.sendError(ctx, cc, errInternal)
				a.over()
			}
		}()
		var buf []byte
		emit := func(ev conversation.Event) {
			switch ev.Kind {
			case conversation.EventStarted:
				cs.started(a)
			case conversation.EventEnd, conversation.EventError:
				// The client may send its next chat the moment it sees
				// this: the connection is free from now on.
				cs.done(a)
			}
			buf = conversation.AppendEvent(buf[:0], ev, cc.id)
			cc.Send(socket.Frame(buf))
			if ev.Kind == conversation.EventEnd || ev.Kind == conversation.EventError {
				a.over()
			}
		}
		res, err := s.cfg.Chat.Run(actx, conversation.Request{
			ThreadID: thread, Message: chat.Message, Channel: chat.Channel, Data: chat.Data,
			Owner: s.cfg.InstanceID + "/" + cc.id, Multitask: chat.Multitask, Resumable: chat.Resumable,
		}, emit)
		cancel()
		closing := cs.done(a)
		a.over()
		if err != nil && !errors.Is(err, context.Canceled) {
			s.cfg.Log.DebugContext(ctx, "chat refused or failed", "err", err)
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

// resume joins an answer of req's thread, on whichever instance it runs
// (PROTOCOL.md §3.9): the events the client missed, then the live ones, to
// its end. The connection then owns it: its cancel stops it. A connection
// streams one answer at a time, its own or a resumed one; a new resume
// replaces the one before.
func (s *Server) resume(ctx context.Context, cc *conn, req conversation.ResumeRequest) {
	cs := cc.chat
	cs.mu.Lock()
	if len(cs.answers) > 0 || cs.closing {
		cs.mu.Unlock()
		s.sendError(ctx, cc, errAnswerStreaming)
		return
	}
	previous := cs.unfollow
	cs.following, cs.unfollow = "", nil
	cs.mu.Unlock()
	if previous != nil {
		previous()
	}

	var mu sync.Mutex // the catch-up and the live events come from two goroutines
	var buf []byte
	ended := false
	emit := func(ev conversation.Event) {
		mu.Lock()
		defer mu.Unlock()
		buf = conversation.AppendEvent(buf[:0], ev, cc.id)
		cc.Send(socket.Frame(buf))
		if ev.Kind == conversation.EventRaw && isEnd(ev.Raw) {
			ended = true
			cs.mu.Lock()
			if cs.following == req.ThreadID {
				cs.following, cs.unfollow = "", nil
			}
			cs.mu.Unlock()
		}
	}
	cs.mu.Lock()
	cs.following = req.ThreadID // the cancel of a live answer may come at once
	cs.mu.Unlock()
	stop, err := s.cfg.Chat.Resume(ctx, req, emit)
	if err != nil {
		cs.mu.Lock()
		cs.following = ""
		cs.mu.Unlock()
		s.sendError(ctx, cc, err)
		return
	}
	mu.Lock()
	done := ended
	mu.Unlock()
	cs.mu.Lock()
	if done || cs.following != req.ThreadID {
		cs.mu.Unlock()
		stop()
		return
	}
	cs.unfollow = stop
	cs.mu.Unlock()
}

// isEnd reports whether a replayed frame is an answer's last: end or
// error.
func isEnd(frame []byte) bool {
	return bytes.HasPrefix(frame, []byte(`{"type":"end"`)) || bytes.HasPrefix(frame, []byte(`{"type":"error"`))
}
