package conversation

import (
	"context"
	"errors"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/wsserver/wsserver/ports"
)

// errHalted stops a model stream whose text failed the guardrail or could
// not be checked.
var errHalted = errors.New("conversation: stream halted by the guardrail")

// stream runs one model call of generate or rewrite. The model's pieces
// are held until the sentence they belong to passes the guardrail, then
// released to the pacer, which sends them as they came, at the model's
// pace (pace.go); the first sentence that fails stops the call. It
// returns the guardrail node, or cancelled or failed.
func (r *run) stream(ctx context.Context, rw *ports.Rewrite) node {
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.ans.discard()
	req := ports.ChatRequest{
		Purpose:  ports.PurposeChat,
		System:   r.c.cfg.SystemPrompt,
		Messages: r.modelMessages(),
		Data:     r.req.Data,
		Rewrite:  rw,
	}
	r.ans.generating = true
	reply, err := r.c.cfg.Model.Stream(mctx, req, func(piece string) error { return r.token(mctx, piece) })
	r.ans.generating = false
	r.out.usage = r.out.usage.Add(reply.Usage)
	r.out.stop = reply.Stop
	if err == nil && !r.guard.halted() && ctx.Err() == nil {
		switch reply.Stop {
		case ports.StopGuardrailIntervened, ports.StopContentFiltered:
			// The provider cut or replaced the output: what is held is
			// not the model's answer and is never sent.
			r.guard.reject(string(r.ans.pending), "the model provider stopped the answer ("+string(reply.Stop)+")")
		default:
			r.flush(mctx)
		}
	}
	switch {
	case r.guard.err != nil:
		err, r.guard.err = r.guard.err, nil
		return r.fail(ctx, "guardrail", err)
	case r.guard.rejected != nil:
		r.ans.discard()
		return nodeGuardrail
	case ctx.Err() != nil:
		return r.interrupted(ctx)
	case err != nil:
		return r.fail(ctx, "model stream", err)
	}
	return nodeGuardrail
}

// token takes one piece from the model. It is the per-token path: it
// allocates nothing but the text of each sentence it checks.
func (r *run) token(ctx context.Context, piece string) error {
	if r.guard.halted() {
		return errHalted // a model that keeps streaming after being told to stop
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	a := &r.ans
	var at time.Time
	if a.sched.pacing() {
		at = time.Now()
	}
	if a.whole {
		a.add(piece, at)
		return nil
	}
	for piece != "" {
		k := a.boundary(piece)
		if k < 0 {
			a.add(piece, at)
			return nil
		}
		a.add(piece[:k], at)
		if !r.check(ctx) {
			return errHalted
		}
		piece = piece[k:]
	}
	return nil
}

// flush checks what is held when the model is done.
func (r *run) flush(ctx context.Context) {
	a := &r.ans
	switch {
	case len(a.pending) == 0:
	case a.whole || a.hasText:
		r.check(ctx)
	default:
		a.release() // spaces only: nothing to check
	}
}

// check submits the held text to the guardrail and releases it when it
// passes. It reports whether it passed.
func (r *run) check(ctx context.Context) bool {
	text := string(r.ans.pending)
	v, err := r.c.cfg.Guardrail.Check(ctx, text)
	switch {
	case err != nil:
		r.guard.err = err
		return false
	case !v.Pass:
		r.guard.reject(text, v.Reason)
		return false
	}
	r.ans.release()
	return true
}

// verdicts is what the guardrail decided during a run: the sentence that
// stopped the last stream, every sentence it rejected, the rewrites asked
// for since, and the error of a guardrail that could not decide.
type verdicts struct {
	rewrites   int
	rejected   *rejection // the sentence that stopped the last stream
	rejections []rejection
	err        error // the guardrail could not decide
}

// halted reports whether the stream under way must stop.
func (v *verdicts) halted() bool { return v.rejected != nil || v.err != nil }

func (v *verdicts) reject(text, reason string) {
	rej := rejection{Text: text, Reason: reason}
	v.rejected = &rej
	v.rejections = append(v.rejections, rej)
}

// rewrite starts a rewrite of the rejected sentence, after said: the
// rejection is handed to the model and forgotten.
func (v *verdicts) rewrite(said string) *ports.Rewrite {
	v.rewrites++
	rw := &ports.Rewrite{Said: said, Rejected: v.rejected.Text, Reason: v.rejected.Reason}
	v.rejected = nil
	return rw
}

// giveUp forgets the rejected sentence and returns why it was rejected:
// no rewrite is left.
func (v *verdicts) giveUp() string {
	reason := v.rejected.Reason
	v.rejected = nil
	return reason
}

// answer is an answer while it streams: what was released to the client
// and when each of its tokens goes out, and what waits for the guardrail.
// It knows nothing of the run it belongs to: the run hands it the model's
// pieces and the guardrail's verdicts.
type answer struct {
	// whole: the guardrail needs the whole answer; nothing is released
	// before the model is done.
	whole bool
	// released is every text that passed, in order: what was sent to the
	// client, and what the pacer will send (its first pacer.sent bytes
	// are sent).
	released []byte
	// pending is held text; pieces is the same text as the model's pieces.
	pending []byte
	pieces  []held
	// The sentence scanner's state after pending: hasText is set once
	// pending holds more than spaces; term when it ends with a sentence's
	// end mark (and maybe closing quotes or brackets); cjk when that mark
	// needs no space after it.
	hasText, term, cjk bool

	sched      schedule // when each released token is due
	pace       pacer    // sends the released tokens when they are due
	generating bool     // the model's stream is running: gaps may be stretched
}

// newAnswer returns the answer of a run whose tokens go to emit, paced by
// at most maxStretch more than the model's gaps (negative: not paced).
// whole: the guardrail needs the whole answer.
func newAnswer(whole bool, maxStretch time.Duration, emit func(Event)) answer {
	if whole {
		// The answer is released at once when the model is done: pacing
		// it would only delay its end by its whole generation time.
		maxStretch = -1
	}
	return answer{whole: whole, sched: schedule{maxStretch: maxStretch}, pace: pacer{emit: emit}}
}

// held is a piece of the model's text waiting for the guardrail, and
// when it arrived (zero when pacing is off).
type held struct {
	text string
	at   time.Time
}

func (a *answer) add(text string, at time.Time) {
	if text == "" {
		return
	}
	a.pending = append(a.pending, text...)
	a.pieces = append(a.pieces, held{text: text, at: at})
}

// release hands the held pieces to the pacer and forgets them.
func (a *answer) release() {
	if len(a.pieces) > 0 {
		var now time.Time
		if a.sched.pacing() {
			now = time.Now()
		}
		a.sched.sentence(a.pieces, now)
		for _, p := range a.pieces {
			a.pace.push(p.text, a.sched.due(p.at, now, a.generating), now)
		}
	}
	a.released = append(a.released, a.pending...)
	a.discard()
}

// releaseText sends a text of the server's own (the fallback) after what
// was released.
func (a *answer) releaseText(text string) {
	if n := len(a.released); n > 0 && !isSpace(rune(a.released[n-1])) {
		text = " " + text
	}
	now := time.Now()
	a.pace.push(text, a.sched.after(now), now)
	a.released = append(a.released, text...)
}

// sent is the answer as the client received it. The pacer must be done
// (wait or stop).
func (a *answer) sent() string { return string(a.released[:a.pace.sent]) }

// discard forgets what is held.
func (a *answer) discard() {
	a.pending = a.pending[:0]
	clear(a.pieces)
	a.pieces = a.pieces[:0]
	a.hasText, a.term, a.cjk = false, false, false
}

// boundary returns where in piece the held sentence ends, or -1 when it
// does not end in piece. A sentence ends before the first space that
// follows its end mark (. ! ? …, then any closing quotes or brackets), so
// that "3.14" and "Hello." + "World" stay whole; right after a CJK end
// mark; and after a line break, so that list items and code lines are
// released line by line. Spaces after a sentence start the next one, and
// a sentence needs more than spaces.
func (a *answer) boundary(piece string) int {
	has, term, cjk := a.hasText, a.term, a.cjk
	for i := 0; i < len(piece); {
		r, size := rune(piece[i]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRuneInString(piece[i:])
		}
		if term && (isSpace(r) || cjk && !isCloser(r)) {
			return i
		}
		switch {
		case r == '\n' && has:
			return i + size
		case r == '.' || r == '!' || r == '?' || r == '…':
			has, term, cjk = true, true, false
		case r == '。' || r == '！' || r == '？':
			has, term, cjk = true, true, true
		case term && isCloser(r):
		case isSpace(r):
		default:
			has, term, cjk = true, false, false
		}
		i += size
	}
	a.hasText, a.term, a.cjk = has, term, cjk
	return -1
}

func isSpace(r rune) bool {
	switch r {
	case ' ', '\t', '\n', '\r', '\v', '\f':
		return true
	}
	return r >= utf8.RuneSelf && unicode.IsSpace(r)
}

func isCloser(r rune) bool {
	switch r {
	case '"', '\'', ')', ']', '}', '*', '_', '”', '’', '»', '」', '』', '）':
		return true
	}
	return false
}
