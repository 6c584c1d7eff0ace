package conversation

import (
	"encoding/json"
	"strconv"

	"github.com/wsserver/wsserver/core/protocol"
	"github.com/wsserver/wsserver/core/wire"
	"github.com/wsserver/wsserver/ports"
)

// EventKind is the kind of an Event.
type EventKind uint8

// Kinds of events, in the order of PROTOCOL.md §3.2: started, tokens, escalation
// (when decided), then end — or error instead of anything after started.
const (
	EventStarted EventKind = iota + 1
	EventToken
	EventEscalation
	EventEnd
	EventError
	// EventQueued comes before EventStarted, alone, for a chat that waits
	// for its thread ("multitask":"enqueue").
	EventQueued
	// EventResumed answers a resume (resume.go): ThreadID, MessageID,
	// Recovered, State.
	EventResumed
	// EventSnapshot follows an EventResumed that did not recover: the
	// answer's text so far (Content) up to Seq.
	EventSnapshot
	// EventRaw is a frame encoded already (Raw): the logged end of an
	// answer that a resume replays.
	EventRaw
)

// Event is one thing a run tells its client. It is passed by value and
// holds no pointers to the run, so that the per-token path boxes and
// allocates nothing; AppendEvent turns it into the PROTOCOL.md §3.2 JSON message.
type Event struct {
	Kind EventKind
	// ThreadID is set on EventStarted (the session id is the same value)
	// and EventQueued.
	ThreadID string
	// Position is set on EventQueued: the chat's place in its thread's
	// queue, 1 being the next to run.
	Position int
	// Content is a token's text.
	Content string
	// Reason is set on EventEscalation.
	Reason ports.EscalationReason
	// MessageID, Usage and Cancelled are set on EventEnd. MessageID is the
	// stored answer's id, empty when no answer was stored.
	MessageID string
	Usage     ports.Usage
	Cancelled bool
	// RolledBack is set on the EventEnd of an answer that another chat
	// rolled back: nothing of its turn was stored.
	RolledBack bool
	// Seq is a token's number in its answer (1, 2, 3…), and on EventEnd
	// and EventSnapshot the last token's; 0 when none was numbered.
	Seq int64
	// MessageID (above) and Epoch are set on EventStarted too: the id the
	// answer will have in history, and the answer log's epoch (resume.go).
	Epoch string
	// Recovered and State are set on EventResumed.
	Recovered bool
	State     string
	// Raw is set on EventRaw.
	Raw []byte
	// Code and Message are set on EventError; Code is one of the
	// protocol codes of PROTOCOL.md §6.1.
	Code    string
	Message string
}

// AppendEvent appends ev to b as the JSON message a chat client receives.
// connID is the connection's id; only session_started carries it. It does
// not allocate beyond growing b, so a caller that reuses b pays nothing
// per token here.
func AppendEvent(b []byte, ev Event, connID string) []byte {
	switch ev.Kind {
	case EventToken:
		b = append(b, `{"type":"token","content":`...)
		b = wire.AppendString(b, ev.Content)
		b = appendSeq(b, ev.Seq)
	case EventStarted:
		b = append(b, `{"type":"session_started","session_id":`...)
		b = wire.AppendString(b, ev.ThreadID)
		b = append(b, `,"thread_id":`...)
		b = wire.AppendString(b, ev.ThreadID)
		b = append(b, `,"connection_id":`...)
		b = wire.AppendString(b, connID)
		if ev.MessageID != "" {
			b = append(b, `,"message_id":`...)
			b = wire.AppendString(b, ev.MessageID)
		}
		if ev.Epoch != "" {
			b = append(b, `,"epoch":`...)
			b = wire.AppendString(b, ev.Epoch)
		}
	case EventResumed:
		b = append(b, `{"type":"resumed","thread_id":`...)
		b = wire.AppendString(b, ev.ThreadID)
		if ev.MessageID != "" {
			b = append(b, `,"message_id":`...)
			b = wire.AppendString(b, ev.MessageID)
		}
		b = append(b, `,"recovered":`...)
		b = strconv.AppendBool(b, ev.Recovered)
		b = append(b, `,"state":`...)
		b = wire.AppendString(b, ev.State)
	case EventSnapshot:
		b = append(b, `{"type":"snapshot","message_id":`...)
		b = wire.AppendString(b, ev.MessageID)
		b = append(b, `,"content":`...)
		b = wire.AppendString(b, ev.Content)
		b = append(b, `,"seq":`...)
		b = strconv.AppendInt(b, ev.Seq, 10)
	case EventRaw:
		return append(b, ev.Raw...)
	case EventEscalation:
		b = append(b, `{"type":"escalation","should_escalate":true,"reason":`...)
		b = wire.AppendString(b, string(ev.Reason))
	case EventEnd:
		b = append(b, `{"type":"end"`...)
		if ev.MessageID != "" {
			b = append(b, `,"message_id":`...)
			b = wire.AppendString(b, ev.MessageID)
		}
		b = append(b, `,"usage":{"input_tokens":`...)
		b = strconv.AppendInt(b, int64(ev.Usage.InputTokens), 10)
		b = append(b, `,"output_tokens":`...)
		b = strconv.AppendInt(b, int64(ev.Usage.OutputTokens), 10)
		b = append(b, `},"cancelled":`...)
		b = strconv.AppendBool(b, ev.Cancelled)
		if ev.RolledBack {
			b = append(b, `,"rolled_back":true`...)
		}
		b = appendSeq(b, ev.Seq)
	case EventQueued:
		b = append(b, `{"type":"queued","thread_id":`...)
		b = wire.AppendString(b, ev.ThreadID)
		b = append(b, `,"position":`...)
		b = strconv.AppendInt(b, int64(ev.Position), 10)
	case EventError:
		return protocol.AppendError(b, ev.Code, ev.Message)
	default:
		b = append(b, `{"type":"unknown"`...)
	}
	return append(b, '}')
}

// appendSeq appends a token's seq, or the last one's on end; nothing when
// it is 0 (no token was numbered).
func appendSeq(b []byte, seq int64) []byte {
	if seq <= 0 {
		return b
	}
	b = append(b, `,"seq":`...)
	return strconv.AppendInt(b, seq, 10)
}

// EncodeChatEvent is the message that listeners of session threadID
// receive for a chat event (PROTOCOL.md §4.4).
func EncodeChatEvent(threadID string, ev ports.ChatEvent) []byte {
	b := make([]byte, 0, 80+len(threadID)+len(ev.Content)+len(ev.Reason))
	b = append(b, `{"type":"chat_event","thread_id":`...)
	b = wire.AppendString(b, threadID)
	b = append(b, `,"event":{"kind":`...)
	b = wire.AppendString(b, string(ev.Kind))
	b = append(b, `,"content":`...)
	b = wire.AppendString(b, ev.Content)
	if ev.Reason != "" {
		b = append(b, `,"reason":`...)
		b = wire.AppendString(b, string(ev.Reason))
	}
	return append(b, "}}"...)
}

// validJSON is used where a value from outside may be copied into JSON.
func validJSON(raw json.RawMessage) bool { return len(raw) > 0 && json.Valid(raw) }
