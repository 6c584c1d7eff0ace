package conversation

import (
	"slices"
	"time"
)

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
	// scan finds where the held chunk ends (chunk.go); chunks sizes
	// them; checked counts the chunks of this stream handed to the
	// guardrail so far, and took is the run's longest check. out counts
	// the chunks handed over whose verdict is not applied yet, and outAt
	// is when the last one's last piece came.
	scan    scanner
	chunks  chunking
	checked int
	took    time.Duration
	out     int
	outAt   time.Time

	sched      schedule // when each released token is due
	pace       pacer    // sends the released tokens when they are due
	generating bool     // the model's stream is running: gaps may be stretched
}

// newAnswer returns the answer of a run whose tokens go to emit, paced by
// at most maxStretch more than the model's gaps (negative: not paced),
// checked in chunks. whole: the guardrail needs the whole answer.
func newAnswer(whole bool, maxStretch time.Duration, chunks chunking, emit func(Event)) answer {
	if whole {
		// The answer is released at once when the model is done: pacing
		// it would only delay its end by its whole generation time.
		maxStretch = -1
	}
	return answer{whole: whole, chunks: chunks, sched: schedule{maxStretch: maxStretch}, pace: pacer{emit: emit}}
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

// chunk is held text taken from the answer to be checked, with its
// pieces.
type chunk struct {
	text   string
	pieces []held
}

// take returns what is held as a chunk and holds nothing more.
func (a *answer) take() chunk {
	c := chunk{text: string(a.pending), pieces: slices.Clone(a.pieces)}
	a.discard()
	return c
}

// release hands the pieces of c, which passed, to the pacer.
func (a *answer) release(c chunk) {
	if len(c.pieces) > 0 {
		var now time.Time
		if a.sched.pacing() {
			now = time.Now()
		}
		a.sched.sentence(c.pieces, now)
		for _, p := range c.pieces {
			a.pace.push(p.text, a.sched.due(p.at, now, a.generating), now)
		}
	}
	a.released = append(a.released, c.text...)
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

// play lets the released tokens go out until halt is closed (the run's
// context is done); nothing goes out after.
func (a *answer) play(halt <-chan struct{}) { a.pace.halt = halt }

// wait returns true once every released token was sent, false when halt
// was closed first: the rest is never sent.
func (a *answer) wait() bool { return a.pace.wait() }

// stop drops the released tokens not sent yet; none goes out after it
// returns.
func (a *answer) stop() { a.pace.stop() }

// discard forgets what is held.
func (a *answer) discard() {
	a.pending = a.pending[:0]
	clear(a.pieces)
	a.pieces = a.pieces[:0]
	a.scan.reset()
}

// restart starts a model stream: its first chunk is a first chunk again.
func (a *answer) restart() {
	a.discard()
	a.checked = 0
}

// cut returns where in piece, which arrived at at, the held chunk ends,
// or -1.
func (a *answer) cut(piece string, at time.Time) int {
	return a.scan.cut(piece, len(a.pending), a.chunks.rule(a.checked, &a.sched, a.ahead(), a.took, at))
}

// ahead returns when the chunks out to the guardrail will have played
// out once they pass (their tokens are due a lag after they came), or
// zero when none is out.
func (a *answer) ahead() time.Time {
	if a.out == 0 || !a.sched.on {
		return time.Time{}
	}
	return a.outAt.Add(a.sched.lag)
}
