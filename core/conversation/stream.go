package conversation

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/wsserver/wsserver/ports"
)

// errHalted stops a model stream whose text failed the guardrail or could
// not be checked.
var errHalted = errors.New("conversation: stream halted by the guardrail")

// stream runs one model call of generate or rewrite. The model's pieces
// are held until the chunk they belong to (chunk.go) passes the
// guardrail, then released to the pacer, which sends them as they came,
// at the model's pace (pace.go). The model's stream is read on while a
// chunk is checked (checks); the first chunk that fails stops the call.
// It returns the guardrail node, or cancelled or failed.
func (r *run) stream(ctx context.Context, rw *ports.Rewrite) node {
	mctx, cancel := context.WithCancel(ctx)
	defer r.chk.running.Wait() // after cancel: no check outlives the stream
	defer cancel()
	r.ans.restart()
	r.chk.start()
	req := ports.ChatRequest{
		Purpose:  ports.PurposeChat,
		System:   r.c.cfg.SystemPrompt,
		Messages: r.modelMessages(),
		Data:     r.req.Data,
		Rewrite:  rw,
	}
	r.ans.generating = true
	reply, err := r.c.cfg.Model.Stream(mctx, req, func(piece string) error { return r.token(mctx, piece) })
	r.chk.mu.Lock()
	r.ans.generating = false
	r.chk.mu.Unlock()
	r.out.usage = r.out.usage.Add(reply.Usage)
	r.out.stop = reply.Stop
	if err == nil && ctx.Err() == nil {
		switch reply.Stop {
		case ports.StopGuardrailIntervened, ports.StopContentFiltered:
			// The provider cut or replaced the output: what is held is
			// not the model's answer and is never sent.
			r.settle()
			if !r.guard.halted() {
				r.guard.reject(string(r.ans.pending), "the model provider stopped the answer ("+string(reply.Stop)+")")
			}
		default:
			r.flush(mctx)
		}
	}
	r.settle()
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
// allocates nothing but each chunk it hands to the guardrail.
func (r *run) token(ctx context.Context, piece string) error {
	r.chk.mu.Lock()
	defer r.chk.mu.Unlock()
	if r.guard.halted() {
		return errHalted // a chunk failed, or a model that keeps streaming after being told to stop
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	a := &r.ans
	if a.whole {
		a.add(piece, time.Time{})
		return nil
	}
	var at time.Time
	if a.sched.pacing() {
		at = time.Now()
	}
	for piece != "" {
		k := a.cut(piece, at)
		if k < 0 {
			a.add(piece, at)
			return nil
		}
		a.add(piece[:k], at)
		if !r.submit(ctx) {
			return errHalted
		}
		piece = piece[k:]
	}
	return nil
}

// flush checks what is held when the model is done, and waits for every
// verdict.
func (r *run) flush(ctx context.Context) {
	a := &r.ans
	if a.whole || a.scan.has {
		r.chk.mu.Lock()
		r.submit(ctx)
		r.chk.mu.Unlock()
	}
	r.settle()
	if len(a.pending) > 0 && !r.guard.halted() {
		a.release(a.take()) // spaces only: nothing to check
	}
}

// maxChecks bounds the chunks out to the guardrail at once: the one whose
// verdict is awaited and the next, so that a chunk is checked without
// waiting for the verdict before it, while a guardrail that hangs holds
// two calls, not one a chunk. A third chunk waits, and the model's
// stream with it.
const maxChecks = 2

// checks is a stream's chunks out to the guardrail. The model's stream
// is read on while a chunk is checked: each chunk is checked on a
// goroutine of its own, at most maxChecks at a time, and the verdicts are
// applied in the chunks' order as soon as each is known, so that a chunk
// that passed is released even while the model is silent. A chunk that
// fails (or could not be checked) halts the stream: the verdicts of the
// chunks after it are void, nothing after it is ever released, and the
// model is told to stop at its next piece. While checks run, mu guards
// the run's answer and verdicts (r.ans, r.guard).
type checks struct {
	mu       sync.Mutex
	slots    chan struct{} // one per chunk out
	last     *chunkCheck   // the chunk handed over last, nil when none was
	running  sync.WaitGroup
	panicked any // what emit panicked with on a check's goroutine
}

// chunkCheck is a chunk out to the guardrail.
type chunkCheck struct {
	chunk
	asked   chan struct{} // the guardrail was asked: the next chunk may be
	applied chan struct{} // its verdict was applied: the next one's may be
}

// start readies the checks of a stream; none is out.
func (k *checks) start() {
	if k.slots == nil {
		k.slots = make(chan struct{}, maxChecks)
	}
	k.last = nil
}

// submit hands what is held to the guardrail as a chunk, without waiting
// for its verdict: while maxChecks chunks are out it waits for one to
// return, with r.chk.mu (which the caller holds) unlocked meanwhile. It
// reports false when the stream must stop: a chunk failed, or ctx ended.
func (r *run) submit(ctx context.Context) bool {
	k := &r.chk
	select {
	case k.slots <- struct{}{}:
	default:
		k.mu.Unlock()
		select {
		case k.slots <- struct{}{}:
		case <-ctx.Done():
			k.mu.Lock()
			return false
		}
		k.mu.Lock()
	}
	if r.guard.halted() {
		<-k.slots
		return false
	}
	a := &r.ans
	// A model too fast to be paced leaves no playout to keep fed: the
	// stream waits for each verdict, as it did before chunks were checked
	// while others are out, and a failed chunk is the last one asked.
	wait := !a.sched.on && (!a.sched.pacing() || !slowPieces(a.pieces, time.Now()))
	c := &chunkCheck{chunk: a.take(), asked: make(chan struct{}), applied: make(chan struct{})}
	a.checked++
	a.out++
	a.outAt = c.pieces[len(c.pieces)-1].at
	prev := k.last
	k.last = c
	k.running.Add(1)
	go r.verify(ctx, c, prev)
	if wait {
		k.mu.Unlock()
		<-c.applied
		k.mu.Lock()
	}
	return !r.guard.halted()
}

// verify checks c, which was handed over after prev (nil: the stream's
// first), and applies its verdict after prev's.
func (r *run) verify(ctx context.Context, c, prev *chunkCheck) {
	k := &r.chk
	defer k.running.Done()
	defer func() { <-k.slots }()
	defer close(c.applied)
	if prev != nil {
		<-prev.asked // the guardrail sees the chunks in order
	}
	close(c.asked)
	start := time.Now()
	v, err := r.c.cfg.Guardrail.Check(ctx, c.text)
	took := time.Since(start)
	if prev != nil {
		<-prev.applied
	}
	r.apply(c.chunk, v, err, took)
}

// apply applies the verdict of chunk c, whose check took took: it is
// released when it passed and every chunk before it did.
func (r *run) apply(c chunk, v ports.Verdict, err error, took time.Duration) {
	k := &r.chk
	k.mu.Lock()
	defer k.mu.Unlock()
	defer func() {
		// Raised again on the run's goroutine (settle), where Run's
		// caller can recover it: here it would end the process.
		if p := recover(); p != nil {
			k.panicked = p
		}
	}()
	r.ans.took = max(r.ans.took, took)
	r.ans.out--
	switch {
	case r.guard.halted() || k.panicked != nil:
		// A chunk before this one failed: this verdict is void.
	case err != nil:
		r.guard.err = err
	case !v.Pass:
		r.guard.reject(c.text, v.Reason)
	default:
		r.ans.release(c)
	}
}

// settle waits until every chunk out has its verdict applied, and raises
// what emit panicked with on a check's goroutine.
func (r *run) settle() {
	r.chk.running.Wait()
	if p := r.chk.panicked; p != nil {
		r.chk.panicked = nil
		panic(p)
	}
}
