package conversation

import (
	"slices"
	"sync"
	"time"
)

// Pacing: a playout buffer between the guardrail and the client.
//
// (A "sentence" below is what the guardrail releases at once: a chunk of
// chunk.go, which is a sentence when the answer is not paced.)
//
// The guardrail holds a sentence until the model has finished it, then
// releases it whole. Sent as released, an answer reaches the client in
// bursts: nothing inside a sentence, then the next sentence's whole
// generation time. Like an audio jitter buffer, the pacer plays released
// tokens with the model's own timing shifted by a lag. The first paced
// sentence sets the lag to its own generation time, so its first token
// goes out the moment it passes (time to first token is unchanged) and the
// others follow with the model's gaps.
//
// A token cannot go out before its sentence passes, so a later sentence
// that takes longer to generate than the lag still leaves one long gap.
// Its length is unknown until it ends, and by the time a sentence is seen
// to run long the tokens queued before it are too few to spread the wait
// over. So, while the model is generating, the pacer builds the lag up
// ahead of need, to twice the longest sentence so far, making each gap at
// most MaxStretch longer than the model's: twice, because the sentences
// of one answer vary about that much (the local model's run from 6 to 15
// words), and ahead, because the lag grows by one MaxStretch per token at
// most. That keeps every gap within the model's gap plus MaxStretch,
// unless a sentence outgrows the lag even so, or the model itself, a
// rewrite or the guardrail keeps the next token back. A token released
// after its slot goes out on release and the lag grows to match, so that
// the next sentence as long does not stall again. The lag never shrinks: a
// pacer catching up would send bursts again. Once the model is done,
// nothing is stretched any more; the rest plays at the model's pace.
//
// The lag also hides the delivery's own jitter. Pieces that reach the
// server late (a busy CPU on either end of the model's connection, a
// retransmit, a proxy's buffer) show as a gap longer than the model's
// pace followed by shorter ones, down to a burst: the model did not pause
// there, the delivery did, and then caught up. The pacer plays such pieces
// where they would have come at the model's pace (even). A stall of the
// model keeps its place: what follows it comes at the model's pace, not
// in a burst; a burst that does follow one is spread at the pace, which
// shortens the stall by that much and no more.
//
// The price is the lag itself: end, which follows the last token, comes
// that much later than the model's last token (about 320 ms for the local
// model's answer at 50 tokens/s), so chats sent back to back deliver that
// many fewer tokens per second.

// DefaultMaxStretch is the default of Config.MaxStretch. The target
// (docs/BENCHMARKS.md) is 10 ms above the model's pace at p99, and a loaded server's scheduling
// takes 2 to 3 ms of it (measured with 250 chats on 2 cores: 8 ms gave a
// p99 of 30.5 to 31 ms, 7 ms 29.4 to 29.7 ms). 7 ms is still enough for
// the local model's answer, whose 12-word third sentence after a 7-word
// first needs 6.7 ms on each of the 15 gaps before it.
const DefaultMaxStretch = 7 * time.Millisecond

// paceGap is the model's pace from which tokens are paced: pacing starts
// with the first sentence most of whose pieces came at least paceGap
// apart. The bursts of a faster model are closer together than a reader
// can tell, and a model with no delay then costs nothing: no timer, no
// goroutine, no lag added to the answer. Most, not the sentence's whole
// time: a fast stream stalled once (a pause of the collector, a busy CPU)
// is not a slow model, and pacing it would add the stall to every answer.
const paceGap = 2 * time.Millisecond

// schedule decides when each released token is due. It belongs to the
// run's goroutine.
type schedule struct {
	maxStretch time.Duration // negative: no pacing
	on         bool          // the model was seen to be slow enough
	fresh      bool          // the next token is the first paced one
	lag        time.Duration // due = arrival + lag
	longest    time.Duration // the longest sentence's generation time
	last       time.Time     // when the previous token is due

	// pace is the model's gap: the median gap of the last sentence of
	// four pieces or more. prevAt is when the previous sentence's last
	// piece arrived, evened. gaps is even's scratch.
	pace   time.Duration
	prevAt time.Time
	gaps   [maxPaceGaps]time.Duration
}

// maxPaceGaps is how many of a sentence's last gaps the model's pace is
// taken from.
const maxPaceGaps = 16

// pacing reports whether tokens may be paced at all: arrivals need
// stamping only then.
func (s *schedule) pacing() bool { return s.maxStretch >= 0 }

// sentence starts the release at now of a sentence made of pieces.
func (s *schedule) sentence(pieces []held, now time.Time) {
	if !s.pacing() || len(pieces) == 0 {
		return
	}
	took := now.Sub(pieces[0].at)
	if !s.on {
		if !slowPieces(pieces, now) {
			return
		}
		s.on, s.fresh, s.lag = true, true, took
	}
	s.longest = max(s.longest, took)
	s.even(pieces, now)
}

// slowPieces reports whether most of pieces came at least paceGap apart:
// the model is slow enough to be paced. now stands for the piece after
// the last: the gap after a sentence's last piece is its wait for the
// piece that ends it, or for the model to end.
func slowPieces(pieces []held, now time.Time) bool {
	slow := 0
	for i, p := range pieces {
		next := now
		if i+1 < len(pieces) {
			next = pieces[i+1].at
		}
		if next.Sub(p.at) >= paceGap {
			slow++
		}
	}
	return 2*slow > len(pieces)
}

// even moves pieces that came late back to where they would have come,
// before their due times are set. A run is a piece that came after a gap
// longer than the model's pace and the pieces that followed it closer
// than the pace: late deliveries, caught up by the run's last piece, which
// the next came a full pace after. When the gap before the run has room
// for the run at the model's pace, its pieces are put that pace apart,
// ending at its last; when it has not (the model sped up), evenly over
// the gap and the run. No piece moves later than it came. now stands for
// the piece after the last (the piece that ended the sentence, or the
// model's end), which a run may end with: a slow guardrail makes it
// later, which only moves less.
func (s *schedule) even(pieces []held, now time.Time) {
	if n := min(len(pieces)-1, maxPaceGaps); n >= 3 {
		// Gaps under paceGap are not the model's pace but pieces
		// delivered at once after a hold-up: a guardrail check that
		// kept the stream from being read (chunk.go), a busy CPU. They
		// are left out while enough others remain.
		g := s.gaps[:0]
		for i := len(pieces) - n; i < len(pieces); i++ {
			d := pieces[i].at.Sub(pieces[i-1].at)
			if d < paceGap && s.on {
				continue
			}
			g = append(g, d)
		}
		if len(g) >= 3 {
			slices.Sort(g)
			s.pace = g[len(g)/2]
		}
	}
	at := func(i int) time.Time { // now follows the last piece
		if i == len(pieces) {
			return now
		}
		return pieces[i].at
	}
	prev := s.prevAt
	for j := 0; j < len(pieces); {
		if s.pace <= 0 || prev.IsZero() || pieces[j].at.Sub(prev) <= s.pace {
			prev = pieces[j].at
			j++
			continue
		}
		m := j // the run is pieces[j:m+1], its last maybe now
		for m < len(pieces) && at(m+1).Sub(at(m)) < s.pace {
			m++
		}
		n := time.Duration(m - j + 1)
		span := at(m).Sub(prev) // the gap before the run, and the run
		for i := j; i < min(m, len(pieces)); i++ {
			var t time.Time
			if k := time.Duration(i - j + 1); span >= n*s.pace {
				t = at(m).Add(-(n - k) * s.pace)
			} else {
				t = prev.Add(span * k / n)
			}
			if t.Before(pieces[i].at) {
				pieces[i].at = t
			}
		}
		prev = at(m)
		j = m + 1
	}
	s.prevAt = pieces[len(pieces)-1].at
}

// due returns when a token of the sentence released at now, whose piece
// arrived at at, goes out. generating tells that the model may still
// send more: only then is a gap stretched.
func (s *schedule) due(at, now time.Time, generating bool) time.Time {
	if !s.on {
		s.last = now
		return now
	}
	t := at.Add(s.lag)
	switch {
	case s.fresh:
		s.fresh = false // time to first token is not stretched
	case generating && s.lag < 2*s.longest:
		stretch := min(s.maxStretch, 2*s.longest-s.lag)
		s.lag += stretch
		t = t.Add(stretch)
	}
	if t.Before(now) { // the buffer ran dry: the lag was too short
		s.lag += now.Sub(t)
		t = now
	}
	if t.Before(s.last) {
		t = s.last
	}
	s.last = t
	return t
}

// after returns when a text of the server's own released at now (the
// fallback) goes out: right after the tokens before it.
func (s *schedule) after(now time.Time) time.Time {
	if now.Before(s.last) {
		return s.last
	}
	s.last = now
	return now
}

// pacer sends tokens when they are due. While every token is due when
// released, the run's goroutine sends it at once: no goroutine, no timer.
// The first token due later starts one goroutine, with one timer, that
// sends every token from then on, in order; the run's goroutine waits for
// it (wait, stop) before it sends the run's last events. So emit is
// called one call at a time, each call after the previous one returned.
type pacer struct {
	emit func(Event)
	halt <-chan struct{} // the run's context is done: send nothing more

	// sent counts the bytes of the tokens sent: the answer that reached
	// the client is released[:sent]. It belongs to the run's goroutine,
	// except while the pacer's goroutine runs.
	sent    int
	running bool // the pacer's goroutine was started and not waited for

	mu        sync.Mutex
	queue     []pacedToken // queue[next:] are waiting
	next      int
	finishing bool // wait was called: end once the queue is empty
	drained   bool // the goroutine ended with the queue empty

	wake     chan struct{} // a token was queued, or wait was called
	quit     chan struct{} // stop was called
	done     chan struct{} // the goroutine ended
	panicked any           // what emit panicked with on the goroutine
}

type pacedToken struct {
	text string
	due  time.Time
}

// push sends text, a token released at now, when it is due.
func (p *pacer) push(text string, due, now time.Time) {
	if !p.running {
		if !due.After(now) {
			p.sent += len(text)
			p.emit(Event{Kind: EventToken, Content: text})
			return
		}
		p.start()
	}
	p.mu.Lock()
	if p.next > len(p.queue)/2 {
		// A paced queue seldom empties (keeping it from running dry is
		// what the lag is for): drop what was sent, so that it holds
		// only what waits.
		n := copy(p.queue, p.queue[p.next:])
		clear(p.queue[n:])
		p.queue, p.next = p.queue[:n], 0
	}
	p.queue = append(p.queue, pacedToken{text: text, due: due})
	p.mu.Unlock()
	p.poke()
}

func (p *pacer) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *pacer) start() {
	p.running = true
	p.finishing, p.drained = false, false
	p.wake = make(chan struct{}, 1)
	p.quit = make(chan struct{})
	p.done = make(chan struct{})
	go p.loop()
}

func (p *pacer) loop() {
	defer close(p.done)
	defer func() {
		// Raised again on the run's goroutine (ended), where Run's
		// caller can recover it: here it would end the process.
		p.panicked = recover()
	}()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		p.mu.Lock()
		if p.next == len(p.queue) {
			clear(p.queue)
			p.queue, p.next = p.queue[:0], 0
			if p.finishing {
				p.drained = true
				p.mu.Unlock()
				return
			}
			p.mu.Unlock()
			select {
			case <-p.wake:
				continue
			case <-p.quit:
				return
			case <-p.halt:
				return
			}
		}
		tok := p.queue[p.next]
		p.next++
		p.mu.Unlock()

		if d := time.Until(tok.due); d > 0 {
			if timer == nil {
				timer = time.NewTimer(d)
			} else {
				timer.Reset(d)
			}
			select {
			case <-timer.C:
			case <-p.quit:
				return
			case <-p.halt:
				return
			}
		}
		select { // a cancel wins over a token that fell due with it
		case <-p.quit:
			return
		case <-p.halt:
			return
		default:
		}
		p.sent += len(tok.text)
		p.emit(Event{Kind: EventToken, Content: tok.text})
	}
}

// wait returns true once every token pushed was sent. When the run's
// context ends first it stops the pacer, so that nothing more is sent,
// and returns false.
func (p *pacer) wait() bool {
	if !p.running {
		return true
	}
	p.mu.Lock()
	p.finishing = true
	p.mu.Unlock()
	p.poke()
	select {
	case <-p.done:
	case <-p.halt:
		p.stop()
		return false
	}
	p.ended()
	return p.drained
}

// stop ends the pacer at once: tokens not sent yet are not sent. It
// returns when the pacer's goroutine has ended.
func (p *pacer) stop() {
	if !p.running {
		return
	}
	close(p.quit)
	<-p.done
	p.ended()
}

// ended follows the end of the pacer's goroutine.
func (p *pacer) ended() {
	p.running = false
	if v := p.panicked; v != nil {
		p.panicked = nil
		panic(v)
	}
}
