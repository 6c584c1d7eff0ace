package conversation

import (
	"bytes"
	"context"
	"sync"
	"time"

	"github.com/wsserver/wsserver/core/protocol"
	"github.com/wsserver/wsserver/ports"
)

// Resumable answers (issue 12, PROTOCOL.md §3.8). Every answer numbers its
// tokens (seq 1, 2, 3…) and names itself in session_started (message_id,
// the answer log's epoch). A resumable one also logs every event its
// client is sent, as it is sent (so what a resume replays is exactly what
// the client would have received, and what history stores), in the
// answer log (ports.AnswerLog), from which a resume on any instance
// replays what the client missed and then follows it live.

// Resume states (PROTOCOL.md §3.8 resumed.state).
const (
	ResumeStreaming = "streaming"
	ResumeDone      = "done"
	ResumeUnknown   = "unknown"
)

// numbering wraps a run's emit: it numbers tokens, puts the last seq on
// end, and logs what the client is sent when the answer is resumable.
// Events reach it one at a time (Run's contract), so it needs no lock.
type numbering struct {
	out   func(Event)
	seq   int64
	log   *answerWriter // nil: not resumable
	ended []byte        // frames before end (escalation), for the log
}

func (n *numbering) emit(ev Event) {
	switch ev.Kind {
	case EventToken:
		n.seq++
		ev.Seq = n.seq
		if n.log != nil {
			n.log.add(ports.AnswerEntry{Seq: ev.Seq, Text: ev.Content})
		}
	case EventEnd:
		ev.Seq = n.seq
	}
	if n.log != nil && (ev.Kind == EventEnd || ev.Kind == EventError) {
		// The log holds the answer's end before its client is sent it,
		// so that a resume sent after end finds the answer done (the
		// writer is at most a round trip or two behind; a log that does
		// not answer holds end back no longer than one write's bound).
		final := AppendEvent(n.ended, ev, "")
		n.log.add(ports.AnswerEntry{Seq: n.seq, Final: final})
		n.log.close()
		n.log.waitFor(n.log.c.cfg.WriteTimeout)
		n.out(ev)
		return
	}
	n.out(ev)
	if n.log != nil && ev.Kind == EventEscalation {
		n.ended = AppendEvent(n.ended, ev, "")
		n.ended = append(n.ended, '\n')
	}
}

// answerWriter appends a resumable answer's entries to the log on a
// goroutine of its own, in order, as many at once as have queued while
// the previous append ran, so that the run never waits for the log.
type answerWriter struct {
	c   *Conversation
	ctx context.Context
	key ports.AnswerKey

	mu      sync.Mutex
	queue   []ports.AnswerEntry
	closed  bool
	wake    chan struct{}
	started bool
	done    chan struct{} // closed when the writer's goroutine ends
}

// writeTries bounds the tries of one append: a log that fails them all
// loses those entries, which a resume then sees (a snapshot instead).
const writeTries = 3

func (c *Conversation) newAnswerWriter(ctx context.Context, key ports.AnswerKey) *answerWriter {
	return &answerWriter{c: c, ctx: context.WithoutCancel(ctx), key: key, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// begin logs the answer, with no entry yet, on the caller's goroutine.
func (w *answerWriter) begin() {
	ctx, cancel := context.WithTimeout(w.ctx, w.c.cfg.WriteTimeout)
	defer cancel()
	if err := w.c.cfg.Answers.Append(ctx, w.key, nil); err != nil {
		w.c.cfg.Log.WarnContext(w.ctx, "answer log unavailable; a resume of this answer will know nothing of it", "err", err)
	}
}

func (w *answerWriter) add(e ports.AnswerEntry) {
	w.mu.Lock()
	w.queue = append(w.queue, e)
	start := !w.started
	w.started = true
	w.mu.Unlock()
	if start {
		w.c.logs.Add(1)
		go w.run()
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// close lets the writer end once its queue is written.
func (w *answerWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// wait returns once everything added was appended (or given up), after
// close.
func (w *answerWriter) wait() {
	w.mu.Lock()
	started := w.started
	w.mu.Unlock()
	if started {
		<-w.done
	}
}

// waitFor is wait, bounded by d.
func (w *answerWriter) waitFor(d time.Duration) {
	w.mu.Lock()
	started := w.started
	w.mu.Unlock()
	if !started {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-w.done:
	case <-t.C:
	}
}

func (w *answerWriter) run() {
	defer w.c.logs.Done()
	defer close(w.done)
	for {
		w.mu.Lock()
		batch, closed := w.queue, w.closed
		w.queue = nil
		w.mu.Unlock()
		if len(batch) > 0 {
			w.append(batch)
			w.linger()
			continue
		}
		if closed {
			return
		}
		<-w.wake
	}
}

// linger waits Config.AnswerLogInterval after an append, or until the
// writer is closed, so that the entries added meanwhile go in one append.
func (w *answerWriter) linger() {
	d := w.c.cfg.AnswerLogInterval
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		w.mu.Lock()
		closed := w.closed
		w.mu.Unlock()
		if closed {
			return
		}
		select {
		case <-t.C:
			return
		case <-w.wake:
		}
	}
}

func (w *answerWriter) append(batch []ports.AnswerEntry) {
	var err error
	for try := range writeTries {
		if try > 0 {
			time.Sleep(time.Duration(try) * 20 * time.Millisecond) // a backoff, not a synchronisation
		}
		ctx, cancel := context.WithTimeout(w.ctx, w.c.cfg.WriteTimeout)
		err = w.c.cfg.Answers.Append(ctx, w.key, batch)
		cancel()
		if err == nil {
			return
		}
	}
	w.c.cfg.Log.WarnContext(w.ctx, "answer log append failed; a resume will get a snapshot", "entries", len(batch), "err", err)
}

// ResumeRequest is a client's resume (PROTOCOL.md §3.8).
type ResumeRequest struct {
	ThreadID string
	// MessageID empty means the thread's latest answer.
	MessageID string
	// Seq is the last seq the client saw; 0 for none.
	Seq int64
	// Epoch is the epoch the client was given; empty when it has none.
	Epoch string
}

// Resume joins the answer req names on whichever instance it runs:
// EventResumed, then the events after req.Seq (or, when they cannot all
// be replayed, one EventSnapshot), then the live ones to its end. It never
// starts a generation. Events go to emit one at a time; the live ones
// from another goroutine, until stop is called or the answer's end was
// emitted. The answer's state comes back with the events: done when its
// end was emitted already, or unknown when nothing is known of it.
func (c *Conversation) Resume(ctx context.Context, req ResumeRequest, emit func(Event)) (stop func(), err error) {
	nothing := func() {}
	if !ValidThreadID(req.ThreadID) {
		return nothing, &protocol.Error{Code: protocol.CodeInvalidMsg, Message: "thread_id must be 1 to 128 characters of A-Z a-z 0-9 _ - . :"}
	}
	if c.cfg.Answers == nil {
		c.resumeFromHistory(ctx, req, emit)
		return nothing, nil
	}
	// Live entries may come before the catch-up was emitted: they wait.
	var mu sync.Mutex
	var pending []ports.AnswerEntry
	ready, ended := false, false
	last := req.Seq // the last token the client has
	send := func(e ports.AnswerEntry) {
		if ended {
			return
		}
		if e.Final == nil {
			if e.Seq <= last {
				return // the client has it
			}
			last = e.Seq
			emit(Event{Kind: EventToken, Content: e.Text, Seq: e.Seq})
			return
		}
		ended = true
		for frame := range bytes.SplitSeq(e.Final, []byte{'\n'}) {
			if len(frame) > 0 {
				emit(Event{Kind: EventRaw, Raw: frame})
			}
		}
	}
	deliver := func(e ports.AnswerEntry) {
		mu.Lock()
		defer mu.Unlock()
		if !ready {
			pending = append(pending, e)
			return
		}
		send(e)
	}
	fctx, cancel := context.WithTimeout(ctx, c.cfg.StoreTimeout)
	cu, stopFollow, err := c.cfg.Answers.Follow(fctx, req.ThreadID, req.MessageID, req.Seq, deliver)
	cancel()
	if err != nil {
		return nothing, &protocol.Error{Code: protocol.CodeUnavailable, Message: "the answer log is unavailable right now; read the thread's history or try again"}
	}
	var final *ports.AnswerEntry
	if cu.Found && cu.Done && !cu.Complete {
		// A snapshot of a done answer is followed by its end, the log's
		// last entry, read from just before it.
		final = c.finalOf(ctx, req.ThreadID, cu.MessageID, cu.Top)
	}
	mu.Lock()
	defer mu.Unlock()
	ready = true
	if !cu.Found {
		stopFollow()
		c.resumeFromHistory(ctx, req, emit)
		return nothing, nil
	}
	state := ResumeStreaming
	if cu.Done {
		state = ResumeDone
	}
	sameEpoch := req.Epoch == "" && req.Seq == 0 || req.Epoch == cu.Epoch
	// A client may have seen tokens the log has not yet written (it is
	// written behind the socket): they follow live, and what it has is
	// not sent again.
	ahead := !cu.Done && req.Seq > cu.Top
	recovered := sameEpoch && (cu.Complete || ahead)
	emit(Event{Kind: EventResumed, ThreadID: req.ThreadID, MessageID: cu.MessageID, Recovered: recovered, State: state})
	if recovered {
		for _, e := range cu.Entries {
			send(e)
		}
	} else {
		last = cu.Top
		emit(Event{Kind: EventSnapshot, MessageID: cu.MessageID, Content: cu.Text, Seq: cu.Top})
		if n := len(cu.Entries); n > 0 && cu.Entries[n-1].Final != nil {
			send(cu.Entries[n-1])
		} else if final != nil {
			send(*final)
		}
	}
	for _, e := range pending {
		send(e)
	}
	pending = nil
	if ended || cu.Done {
		stopFollow()
		return nothing, nil
	}
	return stopFollow, nil
}

// finalOf reads the final entry of a done answer, from just before it.
func (c *Conversation) finalOf(ctx context.Context, threadID, messageID string, top int64) *ports.AnswerEntry {
	fctx, cancel := context.WithTimeout(ctx, c.cfg.StoreTimeout)
	defer cancel()
	cu, stop, err := c.cfg.Answers.Follow(fctx, threadID, messageID, top, func(ports.AnswerEntry) {})
	stop()
	if err != nil || !cu.Complete {
		return nil
	}
	for _, e := range cu.Entries {
		if e.Final != nil {
			return &e
		}
	}
	return nil
}

// resumeFromHistory answers a resume of an answer the log does not know
// (never logged, or expired): when the thread's history holds it (the
// answer named, or the thread's latest), it is done, and its stored text
// is the snapshot, at seq 0 (the log that numbered it is gone); otherwise
// nothing is known.
func (c *Conversation) resumeFromHistory(ctx context.Context, req ResumeRequest, emit func(Event)) {
	hctx, cancel := context.WithTimeout(ctx, c.cfg.StoreTimeout)
	msgs, err := c.cfg.Store.History(hctx, req.ThreadID)
	cancel()
	if err == nil {
		for i := len(msgs) - 1; i >= 0; i-- {
			m := msgs[i]
			if m.Role != ports.RoleAssistant || req.MessageID != "" && m.ID != req.MessageID {
				continue
			}
			emit(Event{Kind: EventResumed, ThreadID: req.ThreadID, MessageID: m.ID, State: ResumeDone})
			emit(Event{Kind: EventSnapshot, MessageID: m.ID, Content: m.Content})
			return
		}
	}
	emit(Event{Kind: EventResumed, ThreadID: req.ThreadID, MessageID: req.MessageID, State: ResumeUnknown})
}
