package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Issue 12's benchmark: resumable answers (PROTOCOL.md §3.9).
//
// -resumable sends every chat with "resumable":true, so that a run with it
// and one without compare the inter-token gaps that keeping the answer log
// adds.
//
// -resume-after N switches the chat run to resume mode: each connection
// sends a resumable chat on a new thread, reads N tokens, drops its socket
// (no close frame), waits -resume-away (the time the client is away: the
// tokens it misses; -resume-missed M instead waits for M tokens at the
// pace the answer had so far, so that about M are missed however loaded
// the machine), connects again — to the next -url, so to the other
// instance with two — and sends resume with the last seq. It measures the
// time from sending resume to the arrival of the catch-up's last missed
// token. The catch-up is the burst of tokens that follows resumed: it ends
// at the first gap of at least -resume-live-gap (half the model's pace
// with the default 10 ms at 50 tokens/s), after which the tokens are the
// live ones. The number of tokens in the burst is reported beside it, so a
// burst cut short by a stall shows. Every answer's seq must run 1, 2, ...
// without gap or repeat across the resume, end's seq must be the last, and
// its text must equal the reference answer: one uninterrupted chat with the
// same message on a new thread, made before the run (the local model
// answers a thread's first message the same every time).

// resumeReport is what resume mode measures beside the chat counts.
type resumeReport struct {
	Resumes      int64          `json:"resumes"`
	NotRecovered int64          `json:"not_recovered"` // resumed recovered:false (a snapshot)
	TextOK       int64          `json:"text_ok"`
	TextBad      int64          `json:"text_bad"`
	SeqErrors    int64          `json:"seq_errors"`
	ToResumed    latencySummary `json:"to_resumed"`
	CatchUp      latencySummary `json:"catch_up"`
	CatchTokens  countSummary   `json:"catch_up_tokens"`
}

// resumeMsg is a chat server message as resume mode reads it (all of it:
// resume mode checks every token's seq and text).
type resumeMsg struct {
	Type      string `json:"type"`
	Content   string `json:"content"`
	Seq       int64  `json:"seq"`
	MessageID string `json:"message_id"`
	Epoch     string `json:"epoch"`
	Recovered bool   `json:"recovered"`
	State     string `json:"state"`
	Code      string `json:"code"`
}

// catchUp follows the tokens of one answer across a resume: it checks
// their seq and finds where the catch-up burst ends.
type catchUp struct {
	liveGap time.Duration
	last    int64 // the last seq received
	// After resume: when it was sent, whether the burst goes on, its
	// tokens and the arrival of its last token.
	resumedAt time.Duration
	inBurst   bool
	burst     int32
	prev      time.Duration
}

// seqError says what is wrong with seq after last: "" when it is last+1.
func seqError(last, seq int64) string {
	switch {
	case seq == last+1:
		return ""
	case seq <= last:
		return "resume: token seq repeated or backwards"
	}
	return "resume: token seq gap"
}

// resume starts following the catch-up of a resume sent at now.
func (c *catchUp) resume(now time.Duration) {
	c.resumedAt, c.inBurst, c.burst, c.prev = now, true, 0, now
}

// token takes a token that arrived after the resume at now. done is true
// when it is the first live token: the burst ended before it, with
// c.burst tokens, its last at c.prev. gap is the gap to report between
// tokens (false within the burst and right after it).
func (c *catchUp) token(now time.Duration) (done bool, gap time.Duration, isGap bool) {
	if c.inBurst {
		if c.burst > 0 && now-c.prev >= c.liveGap {
			c.inBurst = false
			c.prev = now
			return true, 0, false
		}
		c.burst++
		c.prev = now
		return false, 0, false
	}
	gap, c.prev = now-c.prev, now
	return false, gap, true
}

// resumeWorker is one connection of resume mode.
type resumeWorker struct {
	run    *chatRun
	idx    int
	server int
	conn   *websocket.Conn
	ref    string
	msg    []byte

	sent, started, ended, failed, timedOut, tokens         int64
	resumes, notRecovered, textOK, textBad, seqErrs        int64
	toResumed, catchUp, catchTokens, gaps, totals, perChat reservoir
}

// awayFor is how long the client stays away after tokens tokens, the first
// at first and the last at last: -resume-away, or with -resume-missed the
// time the answer took for that many tokens at its pace so far.
func awayFor(cfg chatConfig, first, last time.Duration, tokens int64) time.Duration {
	if cfg.ResumeMissed <= 0 || tokens < 2 {
		return cfg.ResumeAway
	}
	return time.Duration(cfg.ResumeMissed) * (last - first) / time.Duration(tokens-1)
}

// resumeMessage is the resume of PROTOCOL.md §3.9.
func resumeMessage(thread, messageID, epoch string, seq int64) []byte {
	b, _ := json.Marshal(struct {
		Type      string `json:"type"`
		ThreadID  string `json:"thread_id"`
		MessageID string `json:"message_id"`
		Seq       int64  `json:"seq"`
		Epoch     string `json:"epoch"`
	}{"resume", thread, messageID, seq, epoch})
	return b
}

func (w *resumeWorker) dial(ctx context.Context) bool {
	r := w.run
	conn, err := dial(ctx, r.dialer, r.t.chatURL(w.server), r.errs)
	if err != nil {
		return false
	}
	conn.SetReadLimit(readLimit)
	w.conn = conn
	return true
}

func (w *resumeWorker) write(b []byte) error {
	if err := w.conn.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	return w.conn.WriteMessage(websocket.TextMessage, b)
}

// next reads the next message by deadline.
func (w *resumeWorker) next(m *resumeMsg, deadline time.Time) (time.Duration, error) {
	if err := w.conn.SetReadDeadline(deadline); err != nil {
		return 0, err
	}
	_, b, err := w.conn.ReadMessage()
	if err != nil {
		return 0, err
	}
	now := w.run.since()
	*m = resumeMsg{}
	if err := json.Unmarshal(b, m); err != nil {
		return now, fmt.Errorf("unparsable message: %w", err)
	}
	return now, nil
}

func (w *resumeWorker) loop(ctx context.Context) {
	r := w.run
	defer func() {
		if w.conn != nil {
			_ = w.conn.Close()
		}
	}()
	if d := staggerDelay(r.cfg.Stagger, w.idx, r.cfg.Conns); d > 0 && !sleepUntil(ctx, time.Now().Add(d)) {
		return
	}
	for n := 0; ; n++ {
		if r.cfg.Chats > 0 && n >= r.cfg.Chats || r.deadline > 0 && r.since() >= r.deadline || ctx.Err() != nil {
			return
		}
		if w.conn == nil && !w.dial(ctx) {
			return
		}
		if err := w.one(ctx, r.t.prefix+strconv.Itoa(w.idx)+"-"+strconv.Itoa(n)); err != nil {
			if ctx.Err() == nil {
				r.errs.add(err.Error())
			}
			return
		}
	}
}

// one makes one chat, drops its socket after -resume-after tokens and
// resumes it on the next server.
func (w *resumeWorker) one(ctx context.Context, thread string) error {
	r := w.run
	msg := append(append(append(w.msg[:0], r.head...), thread...), r.tail...)
	w.msg = msg
	sentAt := r.since()
	if err := w.write(msg); err != nil {
		return errors.New("send: " + errKind(err))
	}
	w.sent++
	deadline := time.Now().Add(r.cfg.Timeout)
	var m resumeMsg
	var messageID, epoch, text string
	c := catchUp{liveGap: r.cfg.ResumeLiveGap}
	var first, prev time.Duration
	for c.last < int64(r.cfg.ResumeAfter) {
		now, err := w.next(&m, deadline)
		if err != nil {
			return w.readErr(err)
		}
		switch m.Type {
		case "session_started":
			w.started++
			messageID, epoch = m.MessageID, m.Epoch
		case "token":
			if e := seqError(c.last, m.Seq); e != "" {
				r.errs.add(e)
				w.seqErrs++
			}
			if c.last > 0 {
				w.gaps.add(micros(now - prev))
			} else {
				first = now
			}
			prev, c.last = now, m.Seq
			text += m.Content
			w.tokens++
		case "end":
			r.errs.add("resume: answer ended before -resume-after tokens")
			w.ended++
			return nil
		case "error":
			r.errs.add("error " + m.Code)
			w.failed++
			return nil
		}
	}
	// The client goes away: no close frame, as when a network drops.
	_ = w.conn.Close()
	w.conn = nil
	if !sleepUntil(ctx, time.Now().Add(awayFor(r.cfg, first, prev, c.last))) {
		return ctx.Err()
	}
	w.server = (w.server + 1) % len(r.t.urls)
	if !w.dial(ctx) {
		return errors.New("resume: dial failed")
	}
	if err := w.write(resumeMessage(thread, messageID, epoch, c.last)); err != nil {
		return errors.New("send: " + errKind(err))
	}
	w.resumes++
	c.resume(r.since())
	deadline = time.Now().Add(r.cfg.Timeout)
	for {
		now, err := w.next(&m, deadline)
		if err != nil {
			return w.readErr(err)
		}
		switch m.Type {
		case "resumed":
			w.toResumed.add(micros(now - c.resumedAt))
			if !m.Recovered {
				w.notRecovered++
				r.errs.add("resume: not recovered (state " + m.State + ")")
			}
			if m.State == "unknown" {
				return nil
			}
		case "snapshot":
			text, c.last = m.Content, m.Seq
		case "token":
			if e := seqError(c.last, m.Seq); e != "" {
				r.errs.add(e)
				w.seqErrs++
			}
			c.last = m.Seq
			text += m.Content
			w.tokens++
			last := c.prev
			done, gap, isGap := c.token(now)
			if done {
				w.catchUp.add(micros(last - c.resumedAt))
				w.catchTokens.add(c.burst)
			}
			if isGap {
				w.gaps.add(micros(gap))
			}
		case "end":
			if c.inBurst && c.burst > 0 {
				// The answer ended within the burst: all of it was missed.
				w.catchUp.add(micros(c.prev - c.resumedAt))
				w.catchTokens.add(c.burst)
			}
			if m.Seq != 0 && m.Seq != c.last {
				r.errs.add("resume: end seq is not the last token's")
				w.seqErrs++
			}
			if text == w.ref {
				w.textOK++
			} else {
				w.textBad++
				r.errs.add("resume: answer text differs from the reference")
			}
			w.ended++
			w.totals.add(micros(now - sentAt))
			w.perChat.add(int32(c.last))
			return nil
		case "error":
			r.errs.add("error " + m.Code)
			w.failed++
			return nil
		}
	}
}

func (w *resumeWorker) readErr(err error) error {
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		w.timedOut++
		return errors.New("chat: no end or error within -timeout")
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return errors.New("read: " + errKind(err))
}

// reference is the text of one uninterrupted chat on a new thread on the
// first server: what every resumed answer must come to.
func reference(ctx context.Context, r *chatRun) (string, error) {
	conn, err := dial(ctx, r.dialer, r.t.chatURL(0), r.errs)
	if err != nil {
		return "", errors.New("reference chat: dial failed")
	}
	w := &resumeWorker{run: r, conn: conn}
	defer func() { _ = conn.Close() }()
	msg := append(append(append([]byte{}, r.head...), r.t.prefix+"reference"...), r.tail...)
	if err := w.write(msg); err != nil {
		return "", err
	}
	var m resumeMsg
	var text string
	deadline := time.Now().Add(r.cfg.Timeout)
	for {
		if _, err := w.next(&m, deadline); err != nil {
			return "", fmt.Errorf("reference chat: %w", err)
		}
		switch m.Type {
		case "token":
			text += m.Content
		case "end":
			return text, nil
		case "error":
			return "", errors.New("reference chat: error " + m.Code)
		}
	}
}

// chatResume is the chat run in resume mode.
func chatResume(ctx context.Context, t *target, cfg chatConfig, log logger) (*chatReport, error) {
	b, err := startBench(t, cfg.Conns, log)
	if err != nil {
		return nil, err
	}
	r := &chatRun{cfg: cfg, t: t, dialer: t.dialer(), base: time.Now(), limit: max(1, cfg.MaxSamples/cfg.Conns), errs: b.errs, escalations: &tally{}}
	r.head, r.tail = chatMessage(cfg)
	ref, err := reference(ctx, r)
	if err != nil {
		return nil, err
	}
	log.printf("reference answer: %d chars", len(ref))
	workers := make([]*resumeWorker, cfg.Conns)
	for i := range workers {
		workers[i] = &resumeWorker{
			run: r, idx: i, server: i % len(t.urls), ref: ref,
			toResumed: newReservoir(r.limit, 64), catchUp: newReservoir(r.limit, 64), catchTokens: newReservoir(r.limit, 64),
			gaps: newReservoir(r.limit, 4096), totals: newReservoir(r.limit, 64), perChat: newReservoir(r.limit, 64),
		}
	}
	conn := b.connect(ctx, len(workers), func(ctx context.Context, i int) *client {
		if !workers[i].dial(ctx) {
			return nil
		}
		c := &client{idx: i, server: workers[i].server, conn: workers[i].conn}
		c.alive.Store(true)
		return c
	})
	log.printf("connected %d, failed %d in %.2fs", conn.ok, conn.failed, conn.elapsed.Seconds())
	var window, cpu time.Duration
	if ctx.Err() == nil && conn.ok > 0 {
		cpu = cpuOf(func() {
			start := r.since()
			if cfg.Duration > 0 {
				r.deadline = start + cfg.Duration
			}
			log.printf("chatting: %s; each answer dropped after %d tokens, resumed %s later on the next server", chatPlan(cfg), cfg.ResumeAfter, cfg.ResumeAway)
			var wg sync.WaitGroup
			for _, w := range workers {
				if w.conn != nil {
					wg.Go(func() { w.loop(ctx) })
				}
			}
			wg.Wait()
			window = r.since() - start
		})
	}
	b.finish(nil)
	rep := &chatReport{runHead: newHead(ctx, b, "chat", cfg), Resume: &resumeReport{}}
	c, rs := &rep.Chats, rep.Resume
	var toResumed, catch, catchTokens, gaps, totals, perChat []int32
	for _, w := range workers {
		c.Sent += w.sent
		c.Started += w.started
		c.Ended += w.ended
		c.Failed += w.failed
		c.TimedOut += w.timedOut
		rep.Tokens.Received += w.tokens
		rs.Resumes += w.resumes
		rs.NotRecovered += w.notRecovered
		rs.TextOK += w.textOK
		rs.TextBad += w.textBad
		rs.SeqErrors += w.seqErrs
		for _, m := range []*reservoir{&w.toResumed, &w.catchUp, &w.gaps, &w.totals} {
			rep.Sampled = rep.Sampled || m.n > int64(len(m.s))
		}
		toResumed = append(toResumed, w.toResumed.s...)
		catch = append(catch, w.catchUp.s...)
		catchTokens = append(catchTokens, w.catchTokens.s...)
		gaps = append(gaps, w.gaps.s...)
		totals = append(totals, w.totals.s...)
		perChat = append(perChat, w.perChat.s...)
	}
	rep.Tokens.PerChat = countsOf(perChat)
	c.Seconds = window.Seconds()
	c.PerSecond = rate(c.Ended, window)
	rep.Tokens.PerSecond = rate(rep.Tokens.Received, window)
	rs.ToResumed = summarize(toResumed)
	rs.CatchUp = summarize(catch)
	rs.CatchTokens = countsOf(catchTokens)
	rep.Gap = summarize(gaps)
	rep.Total = summarize(totals)
	rep.Escalations = r.escalations.snapshot()
	rep.runTail = b.tail()
	if rep.Tokens.Received > 0 {
		rep.CPUPerToken = float64(cpu.Nanoseconds()/rep.Tokens.Received) / 1000
	}
	return rep, nil
}

// printResume prints what resume mode measured.
func (r *chatReport) printResume(p *printer, sampled string) {
	rs := r.Resume
	cfg := r.Config
	away := cfg.ResumeAway.String()
	if cfg.ResumeMissed > 0 {
		away = fmt.Sprintf("%d tokens' time", cfg.ResumeMissed)
	}
	p.line("resume", "%d resumes after %d tokens and %s away, %d not recovered; %d answers whole (text = reference), %d not; %d seq errors",
		rs.Resumes, cfg.ResumeAfter, away, rs.NotRecovered, rs.TextOK, rs.TextBad, rs.SeqErrors)
	p.latency("resumed", rs.ToResumed, sampled+"; resume sent -> resumed")
	p.latency("catch-up", rs.CatchUp, fmt.Sprintf("%s; resume sent -> last missed token (burst ends at a gap >= %s)", sampled, cfg.ResumeLiveGap))
	ct := rs.CatchTokens
	p.line("caught up", "tokens per catch-up: mean %.1f  p50 %d  p99 %d  min %d  max %d", ct.Mean, ct.P50, ct.P99, ct.Min, ct.Max)
}
