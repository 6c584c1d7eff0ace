package conversation

import (
	"context"
	"errors"
	"time"

	"github.com/wsserver/wsserver/ports"
)

// errHalted stops a model stream whose text failed the guardrail or could
// not be checked.
var errHalted = errors.New("conversation: stream halted by the guardrail")

// stream runs one model call of generate or rewrite. The model's pieces
// are held until the chunk they belong to (chunk.go) passes the
// guardrail, then released to the pacer, which sends them as they came,
// at the model's pace (pace.go); the first chunk that fails stops the
// call. It returns the guardrail node, or cancelled or failed.
func (r *run) stream(ctx context.Context, rw *ports.Rewrite) node {
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.ans.restart()
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
// allocates nothing but the text of each chunk it checks.
func (r *run) token(ctx context.Context, piece string) error {
	if r.guard.halted() {
		return errHalted // a model that keeps streaming after being told to stop
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
	case a.whole || a.scan.has:
		r.check(ctx)
	default:
		a.release() // spaces only: nothing to check
	}
}

// check submits the held text to the guardrail and releases it when it
// passes. It reports whether it passed.
func (r *run) check(ctx context.Context) bool {
	text := string(r.ans.pending)
	start := time.Now()
	v, err := r.c.cfg.Guardrail.Check(ctx, text)
	r.ans.took = max(r.ans.took, time.Since(start))
	r.ans.checked++
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
