// Package conversation runs a chat message through the conversation graph
// of PROTOCOL.md §3.7: load the thread, check for escalation, generate an answer
// that streams to the client chunk by chunk as the guardrail passes it (a
// short first chunk, then larger ones: chunk.go; at the model's own pace:
// pace.go), rewrite what fails, respond
// or escalate. It does no I/O of its own: the model, the guardrail, the
// escalation detector, the thread store, the thread lock and the session
// stream are ports. The graph itself is in graph.go.
package conversation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/wsserver/wsserver/core/logctx"
	"github.com/wsserver/wsserver/core/protocol"
	"github.com/wsserver/wsserver/ports"
)

// DefaultFallbackAnswer is sent when every rewrite failed the guardrail.
const DefaultFallbackAnswer = "I'm sorry, I can't help with that here. I'm passing this conversation to a person who can."

// DefaultSummaryPrompt is the system prompt of summaries.
const DefaultSummaryPrompt = "Summarise the following conversation between a user and an assistant in a few sentences. Keep names, numbers and open questions."

// Config configures a Conversation.
type Config struct {
	// Store, Lock, Model, Guardrail and Escalation are required.
	Store      ports.ThreadStore
	Lock       ports.ThreadLock
	Model      ports.ChatModel
	Guardrail  ports.Guardrail
	Escalation ports.EscalationDetector
	// Publisher mirrors chat events to the thread's session stream. Nil
	// mirrors nothing.
	Publisher ports.ChatPublisher
	// Answers logs the answers of resumable chats (Request.Resumable) for
	// Resume. Nil: chats are not resumable, and Resume knows nothing.
	Answers ports.AnswerLog
	// AnswerLogInterval is the least time between two appends of one
	// answer's log after its first: the events sent meanwhile go in the
	// next append, so that a streaming answer costs the log one call an
	// interval, not one a token. The answer's end is appended at once.
	// Zero appends each event as soon as the previous append returned.
	AnswerLogInterval time.Duration
	// Epoch names the answer log's continuity, given in every
	// session_started: the process's start for an in-process log. Empty
	// means a random one.
	Epoch string
	// Runs routes Stop to the run of a thread on whichever instance holds
	// its lock: each run registers there while it runs. Nil routes
	// nothing: Stop reports every request undelivered, and only the
	// caller's context stops a run.
	Runs ports.RunControl
	// Queue orders the chats that wait for a busy thread (multitask.go).
	// Nil: no chat waits; every strategy but reject is refused with
	// thread_busy, as reject is.
	Queue ports.ThreadQueue
	// Gate takes a thread under its lock and a look at its queue in one
	// call (ports.ThreadGate), where the two live together: Redis's Lock
	// on the Queue's prefix. It is used with Queue only. Nil: Lock.Acquire
	// then Queue.Head, two calls per chat, and Queue.Notify after each
	// release.
	Gate ports.ThreadGate
	// MaxQueued bounds the chats waiting for a thread in its queue
	// (MAX_QUEUED_PER_THREAD). Zero means none may: enqueue is refused as
	// reject is. Negative is invalid.
	MaxQueued int
	// QueueTTL is how long a queue ticket lives without its waiter's sign
	// of life; it is renewed every third of it. Zero means
	// DefaultQueueTTL.
	QueueTTL time.Duration
	// QueuePoll is how often a waiter looks at the queue without a
	// notification. Zero means DefaultQueuePoll.
	QueuePoll time.Duration

	// SystemPrompt is given to the model with every chat (appdata).
	SystemPrompt string
	// SummaryPrompt is the system prompt of summaries. Empty means
	// DefaultSummaryPrompt.
	SummaryPrompt string
	// MaxGuardrailRewrites bounds the rewrites of an answer that failed
	// the guardrail (MAXIMUM_GUARDRAIL_REWRITES). Zero means none: the
	// first failure sends the fallback. Negative is invalid.
	MaxGuardrailRewrites int
	// FallbackAnswer is sent when the rewrites are exhausted. Empty means
	// DefaultFallbackAnswer.
	FallbackAnswer string
	// HistoryLimit is how many earlier messages of the thread the model
	// and the escalation detector see. Zero means 50.
	HistoryLimit int
	// LockTTL is the thread lock's time to live; the lock is renewed every
	// third of it while the answer streams. Zero means 30 seconds.
	LockTTL time.Duration
	// WriteTimeout bounds each store write (the turn's save), lock call
	// and publication. Writes outlive the caller's context, so that a
	// cancelled answer is still stored. Zero means 5 seconds.
	WriteTimeout time.Duration
	// StoreTimeout bounds each read of the thread store (loading the
	// thread), so that a database that accepts connections but no longer
	// answers fails the chat with protocol.CodeUnavailable and frees the thread
	// instead of holding its lock for ever. Zero means 5 seconds.
	StoreTimeout time.Duration
	// MaxStretch bounds how much longer than the model's own gap the gap
	// between two tokens may be made while the pacer builds up the lead
	// that keeps later, longer sentences from stalling (pace.go). Zero
	// means DefaultMaxStretch (7 ms); negative turns pacing off: tokens go
	// out the moment their sentence passes, in bursts. Pacing is always
	// off with a guardrail that needs whole answers.
	MaxStretch time.Duration
	// FirstChunkChars is the length, in bytes, at which a stream's first
	// chunk goes to the guardrail at a word boundary if no sentence has
	// ended before (GUARDRAIL_FIRST_CHUNK_CHARS; chunk.go). Zero means
	// DefaultFirstChunkChars; negative is invalid.
	FirstChunkChars int
	// ChunkChars bounds the chunks the guardrail checks, in bytes
	// (GUARDRAIL_CHUNK_CHARS): later chunks grow toward it while the
	// text released before them plays out. Zero means DefaultChunkChars;
	// negative, or less than FirstChunkChars, is invalid.
	ChunkChars int
	// NewID names messages and runs. Nil means random UUIDs.
	NewID func() string
	// Now stamps messages. Nil means time.Now. (Pacing reads the clock
	// of the time package: tests run it in a testing/synctest bubble.)
	Now func() time.Time
	// Log is nil for no logs. A run's lines name its thread and run
	// through the context (logctx): its handler should be a logctx.Handler.
	Log *slog.Logger
}

// Conversation runs chats. It is safe for concurrent use; each thread
// runs one chat at a time, on every instance, through the thread lock.
// Close ends the background work it may hold: releases of thread locks
// that failed and are retried (release.go).
type Conversation struct {
	cfg      Config
	releases releases
	logs     sync.WaitGroup // the answer log writers (resume.go)
}

// New validates cfg and returns a Conversation.
func New(cfg Config) (*Conversation, error) {
	if cfg.Store == nil || cfg.Lock == nil || cfg.Model == nil || cfg.Guardrail == nil || cfg.Escalation == nil {
		return nil, errors.New("conversation: store, lock, model, guardrail and escalation detector are required")
	}
	if cfg.MaxGuardrailRewrites < 0 {
		return nil, errors.New("conversation: max guardrail rewrites must not be negative")
	}
	if cfg.LockTTL < 0 || cfg.WriteTimeout < 0 || cfg.StoreTimeout < 0 || cfg.HistoryLimit < 0 {
		return nil, errors.New("conversation: lock ttl, write timeout, store timeout and history limit must not be negative")
	}
	if cfg.FirstChunkChars == 0 {
		cfg.FirstChunkChars = DefaultFirstChunkChars
	}
	if cfg.ChunkChars == 0 {
		cfg.ChunkChars = DefaultChunkChars
	}
	if cfg.FirstChunkChars < 0 || cfg.ChunkChars < cfg.FirstChunkChars {
		return nil, errors.New("conversation: first chunk chars must be positive and no more than chunk chars")
	}
	if cfg.MaxQueued < 0 || cfg.QueueTTL < 0 || cfg.QueuePoll < 0 {
		return nil, errors.New("conversation: max queued, queue ttl and queue poll must not be negative")
	}
	if cfg.QueueTTL == 0 {
		cfg.QueueTTL = DefaultQueueTTL
	}
	if cfg.QueuePoll == 0 {
		cfg.QueuePoll = DefaultQueuePoll
	}
	if cfg.Publisher == nil {
		cfg.Publisher = noPublisher{}
	}
	if cfg.SummaryPrompt == "" {
		cfg.SummaryPrompt = DefaultSummaryPrompt
	}
	if cfg.FallbackAnswer == "" {
		cfg.FallbackAnswer = DefaultFallbackAnswer
	}
	if cfg.HistoryLimit == 0 {
		cfg.HistoryLimit = 50
	}
	if cfg.LockTTL == 0 {
		cfg.LockTTL = 30 * time.Second
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 5 * time.Second
	}
	if cfg.StoreTimeout == 0 {
		cfg.StoreTimeout = 5 * time.Second
	}
	if cfg.MaxStretch == 0 {
		cfg.MaxStretch = DefaultMaxStretch
	}
	if cfg.NewID == nil {
		cfg.NewID = uuid.NewString
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Epoch == "" {
		cfg.Epoch = uuid.NewString()
	}
	return &Conversation{cfg: cfg, releases: newReleases()}, nil
}

type noPublisher struct{}

func (noPublisher) PublishChat(context.Context, string, ports.ChatEvent) error { return nil }

// Request is one chat message to answer.
type Request struct {
	// ThreadID is required (see ThreadFor).
	ThreadID string
	// Message is the user's message; it must not be blank.
	Message string
	// Channel empty means DefaultChannel.
	Channel string
	// Data is the client's context, passed to the model; nil for none.
	Data json.RawMessage
	// Owner names who runs the chat in the thread lock, for diagnostics:
	// the instance and connection, say.
	Owner string
	// Multitask says what to do when the thread is busy (multitask.go).
	Multitask Multitask
	// Resumable: the answer's events are logged for Resume (Config.Answers),
	// and the caller lets it run when its client goes (resume.go).
	Resumable bool
}

// Result sums up a run.
type Result struct {
	ThreadID string
	// MessageID is the stored answer's id; empty when none was stored.
	MessageID string
	// Escalated tells the edge to close the socket after end (PROTOCOL.md §3.6).
	Escalated bool
	Reason    ports.EscalationReason
	Cancelled bool
	Usage     ports.Usage
}

// Run answers req. Events go to emit in the order of PROTOCOL.md §3.2, one call at
// a time: each call starts after the previous one returned. They come from
// Run's goroutine (the one running the model's stream), except tokens
// paced to the model's timing, which come from one goroutine of the run's
// own; every goroutine of the run has ended when Run returns. emit must
// not block: it should encode the event (AppendEvent) and queue the bytes.
// A refused request (invalid, ErrThreadBusy) gets one EventError and no
// EventStarted.
//
// Cancelling ctx is the client's cancel: the model call stops, tokens not
// sent yet are dropped, the part of the answer sent is stored marked
// cancelled, and end says cancelled. The returned error is non-nil when
// the run ended with an EventError; errors.Is(err, ErrThreadBusy) tells a
// busy thread, ErrStoreUnavailable a thread that could not be loaded and
// ErrTurnNotSaved a turn that could not be stored (the Result still says
// what the client was sent: Escalated, Cancelled).
func (c *Conversation) Run(ctx context.Context, req Request, emit func(Event)) (Result, error) {
	if req.Channel == "" {
		req.Channel = DefaultChannel
	}
	if !ValidThreadID(req.ThreadID) || strings.TrimSpace(req.Message) == "" {
		err := &protocol.Error{Code: protocol.CodeInvalidMsg, Message: "a chat needs a valid thread id and a message"}
		emit(Event{Kind: EventError, Code: err.Code, Message: err.Message})
		return Result{}, err
	}
	// Every line logged for this chat, here or by the adapters it calls,
	// names its thread, and from its run on the run (its checkpoints'
	// run_id), through the context.
	ctx = logctx.With(ctx, slog.String("thread_id", req.ThreadID))
	owner := req.Owner
	if owner == "" {
		owner = "conversation"
	}
	g, err := c.take(ctx, req, owner, emit)
	if err != nil {
		return Result{}, err
	}
	lease := g.lease
	num := &numbering{out: emit}
	emit = num.emit
	defer func() {
		if num.log != nil {
			// After end it was closed already; after a panic it was not.
			// Run returns once the log holds the answer's end, so that a
			// resume after it finds the answer done.
			num.log.close()
			num.log.wait()
		}
	}()

	// The run's last event (end or error) is held until the lock is
	// released: a client that sends its next message on seeing end must
	// not find its own thread busy.
	var last *Event
	hold := func(ev Event) {
		if ev.Kind == EventEnd || ev.Kind == EventError {
			// A copy: taking ev's own address would move every event,
			// each token's too, to the heap.
			held := ev
			last = &held
			return
		}
		emit(ev)
	}
	runCtx, stop := context.WithCancelCause(ctx)
	// The run streams only while its lease is surely held: a token due
	// when the lease may have expired (the renewals late or failing) goes
	// out only after a renewal proves the lease is still this run's;
	// otherwise it is never sent and the run stops as one that lost its
	// lease, so that a run that lost its thread to another cannot stream
	// beside it.
	var valid leaseClock
	valid.renewed(g.asked, c.cfg.LockTTL)
	fenced := func(ev Event) {
		if ev.Kind == EventToken && !valid.holds(time.Now()) {
			asked := time.Now()
			rctx, cancel := context.WithTimeout(runCtx, max(c.cfg.LockTTL/3, time.Millisecond))
			err := lease.Renew(rctx)
			cancel()
			if err != nil {
				stop(fmt.Errorf("%w: the lease may have expired before a token went out: %w", ErrLeaseLost, err))
				return
			}
			valid.renewed(asked, c.cfg.LockTTL)
		}
		hold(ev)
	}
	r := newRun(c, req, fenced, lease.Fence())
	ctx = logctx.With(ctx, slog.String("run_id", r.id))
	runCtx = logctx.With(runCtx, slog.String("run_id", r.id))
	kept := c.keepLease(runCtx, stop, lease, &valid)
	unregister := c.register(req.ThreadID, stop)
	release := func() {
		// No stop request reaches the run once the thread is free: it
		// would be meant for the next one.
		unregister()
		// The renewals end with the run, whatever the release does.
		stop(nil)
		renewed := <-kept
		c.free(ctx, req.ThreadID, lease, renewed)
	}

	if req.Resumable && c.cfg.Answers != nil {
		num.log = c.newAnswerWriter(ctx, ports.AnswerKey{ThreadID: req.ThreadID, MessageID: r.turn.answerMsgID, Epoch: c.cfg.Epoch})
		// The log knows the answer before its client does: a resume
		// right after session_started finds it (as streaming).
		num.log.begin()
	}
	emit(Event{Kind: EventStarted, ThreadID: req.ThreadID, MessageID: r.turn.answerMsgID, Epoch: c.cfg.Epoch})
	func() {
		defer release() // on every path, a panic's included
		r.execute(runCtx)
	}()
	if r.out.persistErr != nil {
		// The answer went out but could not be saved: say so rather
		// than end as if the thread held it.
		msg := "the answer could not be saved: neither your message nor the answer is in the thread's history; send the message again"
		if errors.Is(r.out.persistErr, ErrFenced) {
			msg = "another answer took this thread over: neither your message nor this answer was saved"
		}
		last = &Event{Kind: EventError, Code: protocol.CodeNotSaved, Message: msg}
	}
	if last != nil {
		emit(*last)
	}
	return r.result(), r.out.err
}

// Stopped is the cause of a run's context when the run was asked to stop
// through Stop (context.Cause): its Mode says what the run stores.
type Stopped struct{ Mode ports.StopMode }

func (s *Stopped) Error() string {
	return "conversation: the answer was stopped (" + string(s.Mode) + ")"
}

// register makes Stop requests for threadID stop the run through stop,
// until the returned function is called.
func (c *Conversation) register(threadID string, stop context.CancelCauseFunc) (unregister func()) {
	if c.cfg.Runs == nil {
		return func() {}
	}
	_, unregister = c.cfg.Runs.Register(threadID, func(mode ports.StopMode) { stop(&Stopped{Mode: mode}) })
	return unregister
}

// Stop asks the answer streaming on threadID, on whichever instance runs
// it, to stop with mode (PROTOCOL.md §3.5): StopCancel and StopInterrupt
// store what was sent marked cancelled, as the client's cancel does. It
// reports whether a running answer received the request: false when none
// streams on the thread, or its instance could not be reached. The
// request is bounded by WriteTimeout.
func (c *Conversation) Stop(ctx context.Context, threadID string, mode ports.StopMode) (delivered bool, err error) {
	if !ValidThreadID(threadID) {
		return false, &protocol.Error{Code: protocol.CodeInvalidMsg, Message: "thread_id must be 1 to 128 characters of A-Z a-z 0-9 _ - . :"}
	}
	if c.cfg.Runs == nil {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.WriteTimeout)
	defer cancel()
	delivered, err = c.cfg.Runs.Stop(ctx, threadID, mode)
	if err != nil {
		return false, fmt.Errorf("conversation: stop: %w", err)
	}
	return delivered, nil
}

// keepLease renews lease every third of its TTL until ctx ends. When the
// lease is lost, or renewals keep failing for a whole TTL, it stops the
// run with ErrLeaseLost: another answer may start on the thread. When it
// has ended, the channel it returns gives the time the lease was last
// acquired or renewed: the lease expires by itself a TTL after it.
func (c *Conversation) keepLease(ctx context.Context, stop context.CancelCauseFunc, lease ports.Lease, valid *leaseClock) <-chan time.Time {
	done := make(chan time.Time, 1)
	renewed := time.Now() // Acquire has returned: the lease expires after this plus its TTL
	go func() {
		defer func() { done <- renewed }()
		every := max(c.cfg.LockTTL/3, time.Millisecond)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			asked := time.Now()
			rctx, cancel := context.WithTimeout(ctx, every)
			err := lease.Renew(rctx)
			cancel()
			switch {
			case err == nil:
				renewed = time.Now()
				valid.renewed(asked, c.cfg.LockTTL)
			case ctx.Err() != nil:
				return
			case errors.Is(err, ErrLeaseLost):
				stop(fmt.Errorf("renew thread lock: %w", err))
				return
			case time.Since(renewed) >= c.cfg.LockTTL:
				stop(fmt.Errorf("%w: renewals failed for a whole ttl: %w", ErrLeaseLost, err))
				return
			default:
				c.cfg.Log.WarnContext(ctx, "thread lock renewal failed; retrying", "err", err)
			}
		}
	}()
	return done
}

// History returns a thread's messages; ErrThreadNotFound for an unknown
// thread. The read is bounded by StoreTimeout.
func (c *Conversation) History(ctx context.Context, threadID string) ([]ports.Message, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.StoreTimeout)
	defer cancel()
	msgs, err := c.cfg.Store.History(ctx, threadID)
	if err != nil {
		return nil, fmt.Errorf("conversation: history: %w", err)
	}
	return msgs, nil
}

// Summarize asks the model for a summary of a thread; ErrThreadNotFound
// for an unknown thread. Reading the thread is bounded by StoreTimeout.
func (c *Conversation) Summarize(ctx context.Context, threadID string) (string, error) {
	hctx, cancel := context.WithTimeout(ctx, c.cfg.StoreTimeout)
	msgs, err := c.cfg.Store.History(hctx, threadID)
	cancel()
	if err != nil {
		return "", fmt.Errorf("conversation: summarize: %w", err)
	}
	msgs = nonEmpty(msgs)
	if len(msgs) == 0 {
		return "The thread has no messages yet.", nil
	}
	reply, err := c.cfg.Model.Complete(ctx, ports.ChatRequest{
		Purpose:  ports.PurposeSummary,
		System:   c.cfg.SummaryPrompt,
		Messages: msgs,
	})
	if err != nil {
		return "", fmt.Errorf("conversation: summarize: %w", err)
	}
	return strings.TrimSpace(reply.Text), nil
}

// nonEmpty drops messages without content (an answer cancelled before its
// first sentence): models refuse empty turns.
func nonEmpty(msgs []ports.Message) []ports.Message {
	out := make([]ports.Message, 0, len(msgs))
	for _, m := range msgs {
		if m.Content != "" {
			out = append(out, m)
		}
	}
	return out
}

// leaseClock is until when a run's lease is surely held: a TTL after the
// last acquisition or renewal was asked for (the lock's server may have
// started the TTL any time after). It is read by the pacer's goroutine
// and written by the renewals'.
type leaseClock struct{ until atomic.Int64 }

func (l *leaseClock) renewed(asked time.Time, ttl time.Duration) {
	l.until.Store(asked.Add(ttl).UnixNano())
}

func (l *leaseClock) holds(now time.Time) bool { return now.UnixNano() < l.until.Load() }
