package main

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// reservoir keeps at most limit samples of a stream: every one until it is
// full, then each new one replaces a random kept one with probability
// limit/n, so what is kept is a uniform sample of all n (algorithm R).
// Memory stays bounded however long the run.
type reservoir struct {
	s     []int32
	limit int
	n     int64
}

func newReservoir(limit, prealloc int) reservoir {
	return reservoir{s: make([]int32, 0, min(limit, prealloc)), limit: limit}
}

func (r *reservoir) add(v int32) {
	r.n++
	if len(r.s) < r.limit {
		r.s = append(r.s, v)
		return
	}
	if j := rand.Int64N(r.n); j < int64(r.limit) {
		r.s[j] = v
	}
}

// chatRun is the shared state of a run, read-only once chatting begins
// but for the tallies, which lock.
type chatRun struct {
	cfg    chatConfig
	t      *target
	dialer *websocket.Dialer
	// head and tail are the chat message around the thread id of
	// -new-thread; without it head is the whole message.
	head, tail []byte
	// base is the clock of every time below (monotonic).
	base     time.Time
	deadline time.Duration // since base; 0: none
	// limit is each slot's samples per measure: the slots together keep
	// at most -max-samples. Slots see about as many events each, so their
	// samples are merged as they are.
	limit       int
	errs        *tally
	escalations *tally // by reason
}

func (r *chatRun) since() time.Duration { return time.Since(r.base) }

// chatSlot is one of the C connections of a run. After an escalation the
// server closes the socket; the slot then opens another on the same server
// and goes on, so C chats stay in flight.
type chatSlot struct {
	run    *chatRun
	idx    int
	server int
	conn   *chatConn // the sender's: nil after an escalation closed it
	buf    []byte    // the chat message, rebuilt per chat with -new-thread

	// Progress, polled while chatting.
	ended  atomic.Int64
	tokens atomic.Int64

	// Written by the sender; read after it has stopped.
	sent, timedOut, lost, abandoned, reconnects int64

	// Written by the readers of the slot's connections, one after the
	// other; read after the last has stopped.
	started, failed, escalated, escalationCloses, unexpected int64
	toStarted, toFirst, toAdded, gaps, totals, perChat       reservoir
}

// chatConn is one socket of a slot. Its reader goroutine tells the sender
// when the chat in flight is over.
type chatConn struct {
	c *client
	// sent is when the chat in flight was sent (since base, ns); 0: no chat
	// in flight. The sender stores it before writing the chat, the reader
	// zeroes it before telling the sender the chat is over.
	sent   atomic.Int64
	expect []byte // the thread id sent with -new-thread; set before sent
	done   chan chatOutcome
	gone   chan struct{} // closed when the reader stops

	// Reader state.
	msg           chatMsg
	cur           chatState
	thread        []byte // the thread of the connection, without -new-thread
	haveThread    bool
	lastEscalated bool
}

// chatState is the reader's view of the chat in flight.
type chatState struct {
	inFlight  bool
	sent      time.Duration
	started   bool
	startedAt time.Duration // when session_started came
	escalated bool
	tokens    int32
	last      time.Duration // the previous token
}

type chatOutcome struct{ escalated, failed bool }

// dial opens a socket for the slot and starts its reader. It reports
// failures in the error tally.
func (s *chatSlot) dial(ctx context.Context, readers *sync.WaitGroup) bool {
	r := s.run
	conn, err := dial(ctx, r.dialer, r.t.chatURL(s.server), r.errs)
	if err != nil {
		return false
	}
	c := &client{idx: s.idx, server: s.server, conn: conn, buf: make([]byte, 0, 512)}
	c.alive.Store(true)
	cc := &chatConn{c: c, done: make(chan chatOutcome, 1), gone: make(chan struct{})}
	s.conn = cc
	readers.Go(func() { s.read(cc) })
	return true
}

// staggerDelay is how long connection idx of conns waits before its first
// chat, so that the first chats spread evenly over stagger: 0, stagger/conns,
// 2·stagger/conns, ... (always less than stagger).
func staggerDelay(stagger time.Duration, idx, conns int) time.Duration {
	if stagger <= 0 || conns <= 1 || idx <= 0 {
		return 0
	}
	return stagger * time.Duration(idx%conns) / time.Duration(conns)
}

// chat sends the slot's chats back to back until -chats are sent,
// -duration has passed, the run is interrupted or the slot's socket fails.
func (s *chatSlot) chat(ctx context.Context, readers *sync.WaitGroup) {
	r := s.run
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	if d := staggerDelay(r.cfg.Stagger, s.idx, r.cfg.Conns); d > 0 {
		timer.Reset(d)
		select {
		case <-timer.C:
		case <-ctx.Done():
			return
		}
	}
	for n := 0; ; n++ {
		if r.cfg.Chats > 0 && n >= r.cfg.Chats || r.deadline > 0 && r.since() >= r.deadline || ctx.Err() != nil {
			return
		}
		if s.conn == nil {
			if !s.dial(ctx, readers) {
				return
			}
			s.reconnects++
		}
		cc := s.conn
		select {
		case <-cc.gone:
			return // closed after a chat ended; the reader has counted why
		default:
		}
		msg := s.message(cc, n)
		cc.sent.Store(max(int64(r.since()), 1))
		if err := cc.c.write(msg); err != nil {
			r.errs.add("send: " + errKind(err))
			return
		}
		s.sent++
		timer.Reset(r.cfg.Timeout)
		var o chatOutcome
		select {
		case o = <-cc.done:
		case <-cc.gone:
			// The reader tells the outcome before it stops.
			select {
			case o = <-cc.done:
			default:
				s.lost++
				return
			}
		case <-timer.C:
			s.timedOut++
			r.errs.add("chat: no end or error within -timeout")
			cc.c.close()
			<-cc.gone
			return
		case <-ctx.Done():
			s.abandoned++
			return
		}
		if o.failed && r.cfg.ErrorPause > 0 && !sleepUntil(ctx, time.Now().Add(r.cfg.ErrorPause)) {
			return
		}
		if !o.escalated {
			continue
		}
		// The server closes the socket after an escalation: chat on a new one.
		timer.Reset(r.cfg.Timeout)
		select {
		case <-cc.gone:
		case <-timer.C:
			r.errs.add("escalation: socket not closed within -timeout after end")
			cc.c.close()
			<-cc.gone
		case <-ctx.Done():
			return
		}
		s.conn = nil
	}
}

// message returns the n-th chat of the slot.
func (s *chatSlot) message(cc *chatConn, n int) []byte {
	r := s.run
	if !r.cfg.NewThread {
		return r.head
	}
	b := append(s.buf[:0], r.head...)
	at := len(b)
	b = append(b, r.t.prefix...)
	b = strconv.AppendInt(b, int64(s.idx), 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(n), 10)
	cc.expect = b[at:len(b):len(b)]
	b = append(b, r.tail...)
	s.buf = b
	return b
}

// read reads the socket's messages until it fails or is closed.
func (s *chatSlot) read(cc *chatConn) {
	defer close(cc.gone)
	r := s.run
	for {
		b, err := cc.c.read()
		if err != nil {
			cc.c.alive.Store(false)
			if !cc.c.closing.Load() {
				s.readFailed(cc, err)
			}
			return
		}
		now := r.since()
		if err := parseChat(b, &cc.msg); err != nil {
			r.errs.add("unparsable message")
			continue
		}
		s.event(cc, &cc.msg, now)
	}
}

// event follows the chat in flight through one message (PROTOCOL.md §3.2 order:
// session_started, tokens, escalation, end; or an error).
func (s *chatSlot) event(cc *chatConn, m *chatMsg, now time.Duration) {
	r := s.run
	if m.kind == chatOther {
		s.unexpected++
		return
	}
	ch := &cc.cur
	if !ch.inFlight {
		sent := cc.sent.Load()
		if sent == 0 {
			if m.kind == chatError {
				r.errs.add(chatErrorName(m) + " (no chat in flight)")
			} else {
				r.errs.add("protocol: message with no chat in flight")
			}
			return
		}
		*ch = chatState{inFlight: true, sent: time.Duration(sent)}
	}
	switch m.kind {
	case chatToken:
		if !ch.started {
			r.errs.add("protocol: token before session_started")
		}
		ch.tokens++
		s.tokens.Add(1)
		if ch.tokens == 1 {
			s.toFirst.add(micros(now - ch.sent))
			if ch.started {
				s.toAdded.add(micros(max(0, now-ch.startedAt-r.cfg.ModelFirstToken)))
			}
		} else {
			s.gaps.add(micros(now - ch.last))
		}
		ch.last = now
	case chatStarted:
		if ch.started {
			r.errs.add("protocol: session_started twice")
			return
		}
		ch.started = true
		ch.startedAt = now
		s.started++
		s.toStarted.add(micros(now - ch.sent))
		s.checkThread(cc, m.threadID)
	case chatEscalation:
		ch.escalated = true
		r.escalations.add(jsonString(m.reason))
	case chatEnd:
		if !ch.started {
			r.errs.add("protocol: end before session_started")
		}
		s.totals.add(micros(now - ch.sent))
		s.perChat.add(ch.tokens)
		if ch.escalated {
			s.escalated++
		}
		s.ended.Add(1)
		s.finish(cc, chatOutcome{escalated: ch.escalated})
	case chatError:
		r.errs.add(chatErrorName(m))
		s.failed++
		s.finish(cc, chatOutcome{failed: true})
	}
}

// checkThread checks session_started's thread: the one sent with
// -new-thread, else the same on every chat of a connection.
func (s *chatSlot) checkThread(cc *chatConn, id []byte) {
	r := s.run
	switch {
	case len(id) == 0:
		r.errs.add("session_started: no thread_id")
	case r.cfg.NewThread:
		if !bytes.Equal(id, cc.expect) {
			r.errs.add("session_started: not the thread_id sent")
		}
	case !cc.haveThread:
		cc.thread = append(cc.thread[:0], id...)
		cc.haveThread = true
	case !bytes.Equal(id, cc.thread):
		r.errs.add("session_started: thread_id changed on the connection")
	}
}

// finish ends the chat in flight and tells the sender.
func (s *chatSlot) finish(cc *chatConn, o chatOutcome) {
	cc.cur = chatState{}
	cc.lastEscalated = o.escalated
	cc.sent.Store(0)
	select {
	case cc.done <- o:
	default: // unreachable: one chat in flight, one outcome
	}
}

// readFailed tallies why the socket ended, unless it is the close that
// follows an escalation.
func (s *chatSlot) readFailed(cc *chatConn, err error) {
	var ce *websocket.CloseError
	if errors.As(err, &ce) && ce.Code == websocket.CloseNormalClosure && ce.Text == "escalation" &&
		cc.lastEscalated && !cc.cur.inFlight {
		s.escalationCloses++
		return
	}
	key := "read: " + errKind(err)
	if ce != nil && ce.Text != "" {
		key += " " + strconv.Quote(truncate(ce.Text, 40))
	}
	s.run.errs.add(key)
}
