package ports

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/wsserver/wsserver/core/wire"
)

// The ports of the conversation (PROTOCOL.md §3.7). Errors the core must recognise
// are declared in core/conversation: ErrThreadNotFound, ErrThreadBusy,
// ErrLeaseLost, ErrFenced, ErrUnstorable, ErrQueueFull and ErrTicketLost. Adapters return them (wrapped
// or not) so that errors.Is finds them.

// Role says who wrote a message.
type Role string

// Roles of a thread's messages.
const (
	RoleUser      Role = "user"
	RoleAssistant Role = "assistant"
)

// Message is one message of a thread, as stored and as shown by the
// history endpoint (PROTOCOL.md §8.4).
type Message struct {
	ID        string
	Role      Role
	Content   string
	CreatedAt time.Time
	// Cancelled marks an answer stopped by the client: Content is what was
	// sent before the cancel.
	Cancelled bool
}

// Usage counts a model call's tokens.
type Usage struct {
	InputTokens  int
	OutputTokens int
}

// Add returns the sum of u and v.
func (u Usage) Add(v Usage) Usage {
	return Usage{InputTokens: u.InputTokens + v.InputTokens, OutputTokens: u.OutputTokens + v.OutputTokens}
}

// StopReason says why a model stopped.
type StopReason string

// Stop reasons.
const (
	StopEndTurn   StopReason = "end_turn"
	StopMaxTokens StopReason = "max_tokens"
	// StopGuardrailIntervened: the provider's own guardrail replaced or cut
	// the output; what was streamed must not be trusted.
	StopGuardrailIntervened StopReason = "guardrail_intervened"
	// StopContentFiltered: the provider filtered the output.
	StopContentFiltered StopReason = "content_filtered"
)

// Purpose says what a model call is for, so that an adapter may pick a
// model per purpose (BEDROCK_MODEL_ID_CHAT, _SUMMARY, _ESCALATION).
type Purpose string

// Purposes of model calls.
const (
	PurposeChat     Purpose = "chat"
	PurposeSummary  Purpose = "summary"
	PurposeClassify Purpose = "classify"
)

// ChatRequest is what a model is asked.
type ChatRequest struct {
	Purpose Purpose
	// System is the system prompt.
	System string
	// Messages is the conversation so far, oldest first; the last one is
	// the user's. For PurposeSummary it is the thread to summarise, which
	// may end with an answer. Empty messages are never included.
	Messages []Message
	// Data is the client's context (the chat's "data"); nil when none.
	Data json.RawMessage
	// Rewrite, when set, asks the model to continue an answer whose next
	// sentence failed the guardrail. The tokens streamed continue
	// Rewrite.Said: they must not repeat it.
	Rewrite *Rewrite
}

// Rewrite tells the model why its answer is being rewritten.
type Rewrite struct {
	// Said is the part of the answer already sent to the client. It is
	// final: the continuation follows it.
	Said string
	// Rejected is the text that failed the guardrail; it was never sent.
	Rejected string
	// Reason is the guardrail's reason.
	Reason string
}

// Reply is how a model call ended.
type Reply struct {
	// Text is the whole answer of Complete. Stream leaves it empty: the
	// tokens are the answer.
	Text  string
	Stop  StopReason
	Usage Usage
}

// ChatModel is a large language model.
type ChatModel interface {
	// Stream generates an answer and calls token with each piece of it, in
	// order, one call at a time, on the calling goroutine or another. The
	// pieces concatenate to the answer. When token returns an error the
	// stream stops and Stream returns that error (wrapped or not). When ctx
	// ends the model call stops and Stream returns promptly.
	Stream(ctx context.Context, req ChatRequest, token func(piece string) error) (Reply, error)
	// Complete generates a whole answer at once: summaries and
	// classifications.
	Complete(ctx context.Context, req ChatRequest) (Reply, error)
}

// Verdict is a guardrail's decision on a text.
type Verdict struct {
	Pass bool
	// Reason says why the text failed, in words the model can act on.
	Reason string
}

// Guardrail checks what the model says before the client sees it.
type Guardrail interface {
	// WholeAnswer reports whether Check needs the whole answer at once.
	// When false, Check is given one chunk of the answer at a time (with
	// the spaces around it), in order, so that passed chunks can be sent
	// at once: a stream's first chunk is its first sentence or its first
	// words (GUARDRAIL_FIRST_CHUNK_CHARS, cut at a word boundary), later
	// ones one or more sentences or words, up to GUARDRAIL_CHUNK_CHARS
	// bytes. A chunk may end inside a sentence: Check judges the text it
	// is given on its own.
	WholeAnswer() bool
	// Check decides on text. An error means no decision: the text is not
	// sent.
	Check(ctx context.Context, text string) (Verdict, error)
}

// EscalationReason says why a conversation is handed to a human.
type EscalationReason string

// Escalation reasons (PROTOCOL.md §3.6 "reason").
const (
	ReasonUserRequested EscalationReason = "user_requested"
	ReasonGuardrail     EscalationReason = "guardrail"
	ReasonClassifier    EscalationReason = "classifier"
	ReasonRule          EscalationReason = "rule"
)

// Escalation is a decision to hand the conversation to a human.
type Escalation struct {
	Escalate bool
	Reason   EscalationReason
	// Detail explains the decision to the people who take over, for
	// example the rule that matched.
	Detail string
}

// EscalationDetector decides, before any answer, whether the user's
// message must go to a human.
type EscalationDetector interface {
	// Detect decides on message; history is the thread before it, oldest
	// first.
	Detect(ctx context.Context, message string, history []Message) (Escalation, error)
}

// Thread is a conversation as stored.
type Thread struct {
	ID string
	// Channel is the channel of the chat that created the thread.
	Channel   string
	CreatedAt time.Time
	// Messages are in the order they were appended.
	Messages []Message
	// Escalations are in the order they were recorded.
	Escalations []EscalationRecord
}

// EscalationRecord is an escalation as stored.
type EscalationRecord struct {
	// RunID names the graph run that decided it.
	RunID     string
	Reason    EscalationReason
	Detail    string
	CreatedAt time.Time
}

// Checkpoint is the state of a graph run after one step.
type Checkpoint struct {
	RunID string
	// Step counts the steps of the run from 0.
	Step int
	// Node names the step's node ("load", "generate", ...).
	Node string
	// State is the run's state after the step, as a JSON object. Stores
	// may normalise it (key order, spaces) but keep its value.
	State     json.RawMessage
	CreatedAt time.Time
}

// Turn is what one chat stores when it ends: SaveTurn writes it at once.
type Turn struct {
	ThreadID string
	// Channel is the channel of the chat; it is the thread's when the turn
	// creates the thread, and ignored otherwise.
	Channel string
	// Messages are appended in order: the user's message, then the answer
	// when there is one. Their IDs are unique in the thread.
	Messages []Message
	// Checkpoints are the run's, in the order of its steps.
	Checkpoints []Checkpoint
	// Escalation is the run's escalation; nil when there is none.
	Escalation *EscalationRecord
	// Fence is the fencing token of the lease the run held (Lease.Fence).
	// The store refuses, with ErrFenced, a turn whose fence is lower than
	// the highest it has stored for the thread: a newer lease took the
	// thread over, and this run's lease was lost. Zero means unfenced
	// (no lease): checked against nothing, raising nothing.
	Fence int64
}

// ThreadStore keeps threads, their messages, the checkpoints of the graph
// runs and the escalations. A chat writes its turn at once (SaveTurn); the
// conversation reads a thread back (Load, History). The checkpoints are
// kept to inspect runs: the conversation never reads them back, and stores
// offer their read outside the port. Messages are rows: saving a turn
// never rewrites what is stored. Load and History return
// ErrThreadNotFound for a thread that no turn created. Every store
// refuses, with ErrUnstorable, what PostgreSQL cannot keep: text that is
// not UTF-8 or holds NUL, ids longer than 255 characters, checkpoint states
// that are not JSON or hold the escape \u0000 or a lone surrogate escape
// (\ud800), so that a value never passes one store and fails another.
type ThreadStore interface {
	// Load returns the thread with its messages and escalations.
	Load(ctx context.Context, threadID string) (Thread, error)
	// History returns the thread's messages in order.
	History(ctx context.Context, threadID string) ([]Message, error)
	// SaveTurn stores a chat's turn all at once, or nothing of it when it
	// fails: it creates the thread unless it exists (two instances may
	// race to: neither fails, and the thread keeps the first turn's
	// channel), appends t.Messages in order (their IDs unique in the
	// thread), then records t.Checkpoints and t.Escalation. A turn with no
	// messages still creates its thread. The messages of turns saved at
	// once on one thread, from any instance, are not interleaved. A turn
	// that does not name its thread is refused. A turn whose t.Fence is
	// stale is refused with ErrFenced; otherwise the thread's fence is
	// raised to t.Fence with the turn.
	SaveTurn(ctx context.Context, t Turn) error
}

// ThreadLock lets one answer stream per thread at a time, across
// instances.
type ThreadLock interface {
	// Acquire takes the thread's lock for ttl, for owner (who holds it, for
	// diagnostics). It returns ErrThreadBusy while another lease holds it,
	// whoever the owner. A lease that is neither renewed nor released
	// expires after ttl.
	Acquire(ctx context.Context, threadID, owner string, ttl time.Duration) (Lease, error)
}

// Lease is a held thread lock.
type Lease interface {
	// Renew extends the lease by its ttl from now. It returns ErrLeaseLost
	// when the lease expired or was released.
	Renew(ctx context.Context) error
	// Release frees the lock if this lease still holds it; otherwise it
	// does nothing (it never frees another lease's lock).
	Release(ctx context.Context) error
	// Fence is the lease's fencing token: positive, and higher than the
	// token of every lease acquired on the thread before it, so that a
	// store can refuse the writes of a lease that was lost and taken over
	// (Turn.Fence).
	Fence() int64
}

// ChatEventKind is the kind of a chat event.
type ChatEventKind string

// Kinds of chat events (PROTOCOL.md §4.4 chat_event).
const (
	ChatUserMessage ChatEventKind = "user_message"
	ChatAnswer      ChatEventKind = "answer"
	ChatEscalation  ChatEventKind = "escalation"
)

// ChatEvent is one step of a conversation that listeners of the thread's
// session see.
type ChatEvent struct {
	Kind ChatEventKind
	// Content is the user's message, the whole final answer, or the
	// escalation's detail.
	Content string
	// Reason is set on escalations only.
	Reason EscalationReason
}

// ChatPublisher mirrors chat events to the session stream of the thread
// (PROTOCOL.md §4.4: session_id == thread_id). Delivery is best effort.
type ChatPublisher interface {
	PublishChat(ctx context.Context, threadID string, ev ChatEvent) error
}

// What every thread store can keep (ThreadStore). PostgreSQL sets these
// bounds; the checks below tell, before anything is written, why a value
// cannot be stored, so that the in-process store refuses what PostgreSQL
// would. Stores return these errors wrapped with ErrUnstorable.
const (
	// MaxStoredKey bounds ids, channels, run ids and node names, in
	// characters.
	MaxStoredKey = 255
	// MaxStoredReason bounds an escalation's reason, in characters.
	MaxStoredReason = 64
)

// CheckTurn tells why a store cannot keep t, or returns nil.
func CheckTurn(t Turn) error {
	if t.ThreadID == "" {
		return errors.New("the thread id is empty")
	}
	if err := CheckText("thread id", t.ThreadID, MaxStoredKey); err != nil {
		return err
	}
	if err := CheckText("channel", t.Channel, MaxStoredKey); err != nil {
		return err
	}
	ids := make(map[string]int, len(t.Messages))
	for i, m := range t.Messages {
		if err := CheckMessage(m); err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
		if j, ok := ids[m.ID]; ok {
			return fmt.Errorf("message %d: a message id is already in the thread: message %d has it", i, j)
		}
		ids[m.ID] = i
	}
	for i, cp := range t.Checkpoints {
		if err := CheckCheckpoint(cp); err != nil {
			return fmt.Errorf("checkpoint %d: %w", i, err)
		}
	}
	if t.Escalation != nil {
		if err := CheckEscalation(*t.Escalation); err != nil {
			return fmt.Errorf("escalation: %w", err)
		}
	}
	if t.Fence < 0 {
		return errors.New("the fence is negative")
	}
	return nil
}

// CheckMessage tells why a store cannot keep m, or returns nil.
func CheckMessage(m Message) error {
	if m.ID == "" {
		return errors.New("the message id is empty")
	}
	if m.Role != RoleUser && m.Role != RoleAssistant {
		return fmt.Errorf("unknown role %q", m.Role)
	}
	return errors.Join(CheckText("message id", m.ID, MaxStoredKey), CheckText("content", m.Content, 0), checkTime(m.CreatedAt))
}

// CheckCheckpoint tells why a store cannot keep cp, or returns nil.
func CheckCheckpoint(cp Checkpoint) error {
	if cp.Step < 0 || cp.Step > math.MaxInt32 {
		return fmt.Errorf("step %d is out of range", cp.Step)
	}
	return errors.Join(CheckJSON("state", cp.State), CheckText("run id", cp.RunID, MaxStoredKey),
		CheckText("node", cp.Node, MaxStoredKey), checkTime(cp.CreatedAt))
}

// CheckEscalation tells why a store cannot keep e, or returns nil.
func CheckEscalation(e EscalationRecord) error {
	return errors.Join(CheckText("run id", e.RunID, MaxStoredKey), CheckText("reason", string(e.Reason), MaxStoredReason),
		CheckText("detail", e.Detail, 0), checkTime(e.CreatedAt))
}

// CheckText tells why a store cannot keep s as a text of at most maxLen
// characters (no bound when maxLen is 0): PostgreSQL's text holds valid
// UTF-8 without NUL characters.
func CheckText(field, s string, maxLen int) error {
	switch {
	case !utf8.ValidString(s):
		return fmt.Errorf("the %s is not valid UTF-8", field)
	case strings.IndexByte(s, 0) >= 0:
		return fmt.Errorf("the %s holds a NUL character", field)
	case maxLen > 0 && utf8.RuneCountInString(s) > maxLen:
		return fmt.Errorf("the %s is longer than %d characters", field, maxLen)
	}
	return nil
}

// CheckJSON tells why a store cannot keep raw as a JSON value, or returns
// nil. PostgreSQL's jsonb refuses, besides invalid JSON and UTF-8, the
// escape \u0000, surrogate escapes that do not make a pair (\ud800 alone)
// and numbers beyond numeric's range (wire.ValidJSONText).
func CheckJSON(field string, raw []byte) error {
	if err := wire.ValidJSONText(raw); err != nil {
		return fmt.Errorf("the %s: %w", field, err)
	}
	if !json.Valid(raw) {
		return fmt.Errorf("the %s is not valid JSON", field)
	}
	return nil
}

// checkTime refuses times PostgreSQL's timestamptz cannot hold.
func checkTime(t time.Time) error {
	if y := t.Year(); y < -4712 || y > 294275 {
		return fmt.Errorf("the time %v is out of range", t)
	}
	return nil
}

// ThreadQueue orders the chats that wait for a busy thread, across
// instances (PROTOCOL.md §3.8): those sent with "multitask":"enqueue", at
// the back, and those that interrupt the running answer, at the front,
// while that answer ends. A waiter is named by a ticket, unique per chat;
// the thread is the waiter's to take (ThreadLock.Acquire) when its ticket
// is the head. A ticket that is not kept (Keep) for its ttl leaves by
// itself, so that the waiters of an instance that died do not hold the
// thread.
type ThreadQueue interface {
	// Join adds ticket to the thread's queue for ttl: at the back of the
	// chats that wait, or, with front, ahead of them and behind the front
	// tickets that joined before it. It returns ErrQueueFull when limit
	// tickets of the same kind (front or not) wait already, and otherwise
	// the ticket's place in the whole queue, 1 being its head.
	Join(ctx context.Context, threadID, ticket string, front bool, limit int, ttl time.Duration) (position int, err error)
	// Keep extends the ticket's ttl from now. It returns ErrTicketLost when
	// the ticket is no longer in the queue (it expired).
	Keep(ctx context.Context, threadID, ticket string, ttl time.Duration) error
	// Head returns the ticket at the head of the queue ("" when none
	// waits), after dropping the tickets whose ttl ran out.
	Head(ctx context.Context, threadID string) (string, error)
	// Leave removes ticket from the queue; a ticket not in it is no error.
	Leave(ctx context.Context, threadID, ticket string) error
	// Notify tells the watchers of the thread, on every instance, that it
	// may be free: its lock was released or its queue changed.
	Notify(ctx context.Context, threadID string) error
	// Watch returns a channel that receives after Notify on the thread,
	// from any instance, until stop. Delivery is best effort (a
	// notification may be lost while the backend is away, or merged with
	// another): waiters also look again at an interval.
	Watch(threadID string) (changed <-chan struct{}, stop func())
}

// ThreadGate takes a thread for a chat in one step where the thread lock
// and the thread queue live together (Redis: one script), instead of a
// look at the queue beside each acquisition: the rule of PROTOCOL.md §3.8
// (a chat takes a free thread only when no chat waits for it; a waiter
// takes it when its ticket heads the queue) costs one round trip then.
type ThreadGate interface {
	// TakeTurn acquires the thread's lock for ttl, for owner, as
	// ThreadLock.Acquire does, when ticket heads the thread's queue or,
	// for ticket "", when no live ticket waits in it. It returns
	// ErrWaitersAhead when another ticket heads the queue (or ticket is
	// not in it), and ErrThreadBusy when the turn is ticket's but another
	// lease holds the lock. A lease it returns tells the thread's
	// watchers, as ThreadQueue.Notify does, when it is released while
	// tickets wait: the caller does not notify them itself.
	TakeTurn(ctx context.Context, threadID, owner, ticket string, ttl time.Duration) (Lease, error)
}
