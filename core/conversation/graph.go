package conversation

import (
	"context"
	"errors"
	"fmt"

	"github.com/wsserver/wsserver/core/protocol"
	"github.com/wsserver/wsserver/ports"
)

// The conversation graph of PROTOCOL.md §3.7. Each node is a method below that does
// its work and returns the next node: its return statements are the edges.
//
//	node              next
//	load              escalation_check
//	escalation_check  escalate (a human must take over) | generate
//	generate          guardrail
//	guardrail         respond (passed) | rewrite (failed, rewrites left) | fallback (failed, none left)
//	rewrite           guardrail
//	fallback          respond, with an escalation for reason guardrail
//	respond           escalate (after a fallback) | done
//	escalate          done
//	any node          cancelled (the caller's context ended) | failed (an error), then done
//
// generate and rewrite stream the model's tokens; each sentence passes the
// guardrail before its tokens reach the client (the whole answer, when the
// guardrail needs it), and the first failing sentence stops the stream;
// guardrail then routes on that verdict. Tokens that passed go out at the
// model's pace (pace.go), so the answer may still be playing out when the
// model is done: respond and failed wait for it before the last events,
// and cancelled stops it. cancelled stores the part of the answer already
// sent, marked cancelled; failed stores nothing more. A checkpoint of the
// run's state is taken after every node.
//
// The turn is written once, when the graph is done: the user's message,
// the answer (if any), every checkpoint and the escalation, in one
// transaction (ThreadStore.SaveTurn). A turn reads the store once (load)
// and writes it once, whatever the number of nodes.

type node string

const (
	nodeLoad            node = "load"
	nodeEscalationCheck node = "escalation_check"
	nodeGenerate        node = "generate"
	nodeGuardrail       node = "guardrail"
	nodeRewrite         node = "rewrite"
	nodeFallback        node = "fallback"
	nodeRespond         node = "respond"
	nodeEscalate        node = "escalate"
	nodeCancelled       node = "cancelled"
	nodeFailed          node = "failed"
	nodeDone            node = "done"
)

// execute runs the graph from load to done.
func (r *run) execute(ctx context.Context) {
	r.ans.play(ctx.Done())
	defer r.ans.stop() // on every path: no token goes out after Run
	for n := nodeLoad; n != nodeDone; {
		next := r.visit(ctx, n)
		r.checkpoint(ctx, n, next)
		n = next
	}
	r.persist(ctx)
}

func (r *run) visit(ctx context.Context, n node) node {
	switch n {
	case nodeLoad:
		return r.load(ctx)
	case nodeEscalationCheck:
		return r.escalationCheck(ctx)
	case nodeGenerate:
		return r.generate(ctx)
	case nodeGuardrail:
		return r.guardrail()
	case nodeRewrite:
		return r.rewrite(ctx)
	case nodeFallback:
		return r.fallback()
	case nodeRespond:
		return r.respond(ctx)
	case nodeEscalate:
		return r.escalate(ctx)
	case nodeCancelled:
		return r.cancelled(ctx)
	case nodeFailed:
		return r.failed(ctx)
	}
	r.out.err = fmt.Errorf("conversation: no node %q", n)
	return nodeFailed
}

// load reads the thread (a new one has no history yet: the turn creates
// it when it is saved) and mirrors the user's message to the session.
func (r *run) load(ctx context.Context) node {
	lctx, cancel := context.WithTimeout(ctx, r.c.cfg.StoreTimeout)
	th, err := r.c.cfg.Store.Load(lctx, r.req.ThreadID)
	cancel()
	if err != nil && !isNotFound(err) {
		return r.fail(ctx, "load thread", fmt.Errorf("%w: %w", ErrStoreUnavailable, err))
	}
	r.history = th.Messages
	r.turn.userStored = true // it is part of the turn from now on
	r.publish(ctx, ports.ChatEvent{Kind: ports.ChatUserMessage, Content: r.req.Message})
	return nodeEscalationCheck
}

// escalationCheck asks the detector whether a human must take over before
// the model says anything. A detector that fails does not stop the chat.
func (r *run) escalationCheck(ctx context.Context) node {
	e, err := r.c.cfg.Escalation.Detect(ctx, r.req.Message, r.recent())
	switch {
	case err != nil && ctx.Err() != nil:
		return r.interrupted(ctx)
	case err != nil:
		r.c.cfg.Log.WarnContext(ctx, "escalation check failed; answering", "err", err)
		return nodeGenerate
	case e.Escalate:
		if e.Reason == "" {
			e.Reason = ports.ReasonRule
		}
		r.out.escalation = e
		return nodeEscalate
	}
	return nodeGenerate
}

// generate streams the model's answer through the guardrail.
func (r *run) generate(ctx context.Context) node {
	return r.stream(ctx, nil)
}

// guardrail routes on the verdict reached while streaming.
func (r *run) guardrail() node {
	switch {
	case r.guard.rejected == nil:
		return nodeRespond
	case r.guard.rewrites < r.c.cfg.MaxGuardrailRewrites:
		return nodeRewrite
	default:
		return nodeFallback
	}
}

// rewrite asks the model to continue after what was already sent, told
// why its last sentence failed.
func (r *run) rewrite(ctx context.Context) node {
	return r.stream(ctx, r.guard.rewrite(string(r.ans.released)))
}

// fallback ends the answer with the safe fallback text and decides to
// escalate: the model could not say it within the guardrail.
func (r *run) fallback() node {
	reason := r.guard.giveUp()
	r.ans.releaseText(r.c.cfg.FallbackAnswer)
	r.out.escalation = ports.Escalation{
		Escalate: true,
		Reason:   ports.ReasonGuardrail,
		Detail:   fmt.Sprintf("the answer failed the guardrail after %d rewrites: %s", r.guard.rewrites, reason),
	}
	return nodeRespond
}

// respond waits until the client was sent the whole answer, stores it and
// mirrors it to the session. A cancel while the answer plays out stops it
// there.
func (r *run) respond(ctx context.Context) node {
	if !r.ans.wait() {
		return r.interrupted(ctx)
	}
	r.storeAnswer(false)
	r.publish(ctx, ports.ChatEvent{Kind: ports.ChatAnswer, Content: r.ans.sent()})
	if r.out.escalation.Escalate {
		return nodeEscalate
	}
	r.emit(Event{Kind: EventEnd, MessageID: r.turn.answerID(), Usage: r.out.usage})
	return nodeDone
}

// escalate records the decision, mirrors it to the session and tells the
// client, whose socket the edge then closes.
func (r *run) escalate(ctx context.Context) node {
	r.turn.escalation = &ports.EscalationRecord{
		RunID: r.id, Reason: r.out.escalation.Reason, Detail: r.out.escalation.Detail, CreatedAt: r.c.cfg.Now(),
	}
	public := r.out.escalation.Detail
	if r.out.escalation.Reason == ports.ReasonGuardrail {
		// The guardrail's reason may quote what it blocked, which the
		// client was never sent: listeners get the reason code and a
		// fixed text. The stored escalation keeps the reason.
		public = guardrailNotice
	}
	r.publish(ctx, ports.ChatEvent{Kind: ports.ChatEscalation, Content: public, Reason: r.out.escalation.Reason})
	r.out.escalated = true
	r.emit(Event{Kind: EventEscalation, Reason: r.out.escalation.Reason})
	r.emit(Event{Kind: EventEnd, MessageID: r.turn.answerID(), Usage: r.out.usage})
	return nodeDone
}

// cancelled stops the tokens not sent yet and stores what the client was
// sent, marked cancelled; or, when another chat rolled the run back,
// stores nothing of the turn.
func (r *run) cancelled(ctx context.Context) node {
	r.ans.stop()
	r.out.cancelled = true
	if stopped, ok := errors.AsType[*Stopped](context.Cause(ctx)); ok && stopped.Mode == ports.StopRollback {
		r.turn.userStored = false // persist keeps nothing, not even the checkpoints
		r.emit(Event{Kind: EventEnd, Usage: r.out.usage, Cancelled: true, RolledBack: true})
		return nodeDone
	}
	if r.turn.userStored {
		r.storeAnswer(true)
	}
	r.emit(Event{Kind: EventEnd, MessageID: r.turn.answerID(), Usage: r.out.usage, Cancelled: true})
	return nodeDone
}

// failed tells the client, after the tokens that passed (unless the run's
// context ended); the part of the answer sent is not stored as an answer.
func (r *run) failed(ctx context.Context) node {
	r.ans.wait()
	r.c.cfg.Log.ErrorContext(ctx, "chat failed", "err", r.out.err)
	if errors.Is(r.out.err, ErrStoreUnavailable) {
		r.emit(Event{Kind: EventError, Code: protocol.CodeUnavailable, Message: "the conversation store is unavailable right now; nothing was stored; try again"})
		return nodeDone
	}
	r.emit(Event{Kind: EventError, Code: protocol.CodeInternal, Message: "the answer could not be completed; try again"})
	return nodeDone
}

// guardrailNotice is what listeners of the session are told of an
// escalation for reason guardrail, in place of the guardrail's reason.
const guardrailNotice = "the answer did not pass the guardrail"
