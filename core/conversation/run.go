package conversation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/wsserver/wsserver/ports"
)

// run is one chat going through the graph: the request and what it is
// answered with, and one part of its state per job, each with the methods
// that only touch it.
type run struct {
	c    *Conversation
	req  Request
	emit func(Event)
	id   string // the run's id: its checkpoints' and its log lines' run_id

	history  []ports.Message // the thread before this chat
	messages []ports.Message // what the model is given, built once

	ans   answer   // the answer being streamed, paced and sent (answer.go)
	guard verdicts // what the guardrail decided (verdicts.go)
	chk   checks   // the chunks out to the guardrail (stream.go)
	turn  turn     // what is saved when the graph is done (turn.go)
	out   outcome  // how the run ended: its Result
}

// outcome is how a run ended, as its Result, its checkpoints and its last
// events tell it.
type outcome struct {
	escalation ports.Escalation // a human must take over: the detector's, or the fallback's
	escalated  bool             // the client was told so
	stop       ports.StopReason // why the model's last stream stopped
	usage      ports.Usage      // every model call's, summed
	cancelled  bool
	persistErr error // the turn could not be saved
	err        error // the run ended with an error event
}

func newRun(c *Conversation, req Request, emit func(Event), fence int64) *run {
	r := &run{c: c, req: req, emit: emit, id: c.cfg.NewID(), turn: turn{fence: fence, answerMsgID: c.cfg.NewID()}}
	r.turn.user = ports.Message{ID: c.cfg.NewID(), Role: ports.RoleUser, Content: req.Message, CreatedAt: c.cfg.Now()}
	r.ans = newAnswer(c.cfg.Guardrail.WholeAnswer(), c.cfg.MaxStretch, chunking{firstChars: c.cfg.FirstChunkChars, maxChars: c.cfg.ChunkChars}, emit)
	return r
}

func (r *run) result() Result {
	return r.out.result(r.req.ThreadID, r.turn.answerID())
}

// result is the Result of a run on threadID whose stored answer is
// messageID (empty when none is).
func (o *outcome) result(threadID, messageID string) Result {
	return Result{
		ThreadID:  threadID,
		MessageID: messageID,
		Escalated: o.escalated,
		Reason:    o.escalation.Reason,
		Cancelled: o.cancelled,
		Usage:     o.usage,
	}
}

// recent is the part of the thread's history the model and the detector
// see.
func (r *run) recent() []ports.Message {
	if n := len(r.history) - r.c.cfg.HistoryLimit; n > 0 {
		return r.history[n:]
	}
	return r.history
}

func (r *run) modelMessages() []ports.Message {
	if r.messages == nil {
		r.messages = append(nonEmpty(r.recent()), r.turn.user)
	}
	return r.messages
}

// fail ends the run on err, unless the run's context ended first.
func (r *run) fail(ctx context.Context, op string, err error) node {
	if ctx.Err() != nil {
		return r.interrupted(ctx)
	}
	r.out.err = fmt.Errorf("conversation: %s: %w", op, err)
	return nodeFailed
}

// interrupted tells why the run's context ended: the client's cancel, or
// a lost thread lock, which is an error.
func (r *run) interrupted(ctx context.Context) node {
	if cause := context.Cause(ctx); errors.Is(cause, ErrLeaseLost) {
		r.out.err = fmt.Errorf("conversation: %w", cause)
		return nodeFailed
	}
	return nodeCancelled
}

// write runs a store write or a publication. It outlives the run's
// context, bounded by WriteTimeout, so that what was sent is stored even
// when the client cancelled.
func (r *run) write(ctx context.Context, fn func(ctx context.Context) error) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.c.cfg.WriteTimeout)
	defer cancel()
	return fn(wctx)
}

// storeAnswer adds what the client received to the turn. The pacer must
// be done.
func (r *run) storeAnswer(cancelled bool) {
	r.turn.keepAnswer(r.ans.sent(), cancelled, r.c.cfg.Now())
}

// persist saves the turn in one transaction: the user's message, the
// answer, the checkpoints and the escalation, fenced by the lease's token
// so that a run whose lease was taken over stores nothing. A run that
// failed before its user message became part of the turn saves nothing.
// When the save fails, the run fails: Run then tells the client
// (protocol.CodeNotSaved) instead of sending end; the run's result is kept.
func (r *run) persist(ctx context.Context) {
	if !r.turn.userStored {
		return
	}
	t := r.turn.saved(r.req.ThreadID, r.req.Channel)
	err := r.write(ctx, func(ctx context.Context) error { return r.c.cfg.Store.SaveTurn(ctx, t) })
	if err != nil {
		r.turn.notSaved()
		r.out.persistErr = fmt.Errorf("%w: save turn: %w", ErrTurnNotSaved, err)
		// The save's error is the run's: it is what the client is told.
		r.out.err = r.out.persistErr
		r.c.cfg.Log.ErrorContext(ctx, "turn not saved", "err", err)
	}
}

// publish mirrors a chat event to the thread's session; it is best effort.
func (r *run) publish(ctx context.Context, ev ports.ChatEvent) {
	if err := r.write(ctx, func(ctx context.Context) error {
		return r.c.cfg.Publisher.PublishChat(ctx, r.req.ThreadID, ev)
	}); err != nil {
		r.c.cfg.Log.WarnContext(ctx, "chat event not published", "kind", ev.Kind, "err", err)
	}
}

// checkpointState is the run's state as stored after each node.
type checkpointState struct {
	RunID      string          `json:"run_id"`
	ThreadID   string          `json:"thread_id"`
	Node       string          `json:"node"`
	Next       string          `json:"next"`
	Channel    string          `json:"channel"`
	Data       json.RawMessage `json:"data,omitempty"`
	Message    string          `json:"message"`
	MessageID  string          `json:"message_id"`
	History    int             `json:"history"`
	Escalation *escalationJSON `json:"escalation,omitempty"`
	Released   string          `json:"released"`
	Rewrites   int             `json:"rewrites"`
	Rejections []rejection     `json:"rejections,omitempty"`
	Stop       string          `json:"stop,omitempty"`
	Usage      usageJSON       `json:"usage"`
	AnswerID   string          `json:"answer_id,omitempty"`
	Cancelled  bool            `json:"cancelled,omitempty"`
	Error      string          `json:"error,omitempty"`
}

type escalationJSON struct {
	Reason string `json:"reason"`
	Detail string `json:"detail,omitempty"`
}

type usageJSON struct {
	InputTokens  int `json:"input_tokens"`
	OutputTokens int `json:"output_tokens"`
}

// checkpoint stores the state after node n. A checkpoint that cannot be
// stored is logged, not fatal: it is there to inspect runs.
func (r *run) checkpoint(ctx context.Context, n, next node) {
	st := checkpointState{
		RunID:      r.id,
		ThreadID:   r.req.ThreadID,
		Node:       string(n),
		Next:       string(next),
		Channel:    r.req.Channel,
		Message:    r.req.Message,
		MessageID:  r.turn.user.ID,
		History:    len(r.history),
		Released:   string(r.ans.released),
		Rewrites:   r.guard.rewrites,
		Rejections: r.guard.rejections,
		Stop:       string(r.out.stop),
		Usage:      usageJSON{InputTokens: r.out.usage.InputTokens, OutputTokens: r.out.usage.OutputTokens},
		AnswerID:   r.turn.answerID(),
		Cancelled:  r.out.cancelled,
	}
	if n == nodeLoad && validJSON(r.req.Data) {
		st.Data = r.req.Data // once per run: it may be large
	}
	if r.out.escalation.Escalate {
		st.Escalation = &escalationJSON{Reason: string(r.out.escalation.Reason), Detail: r.out.escalation.Detail}
	}
	if r.out.err != nil {
		st.Error = r.out.err.Error()
	}
	raw, err := json.Marshal(st)
	if err == nil {
		r.turn.checkpoints = append(r.turn.checkpoints, ports.Checkpoint{RunID: r.id, Step: r.turn.step, Node: string(n), State: raw, CreatedAt: r.c.cfg.Now()})
	} else {
		r.c.cfg.Log.WarnContext(ctx, "checkpoint not taken", "node", n, "err", err)
	}
	r.turn.step++
}

func isNotFound(err error) bool { return errors.Is(err, ErrThreadNotFound) }
