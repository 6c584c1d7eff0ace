package conversation

import (
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/wsserver/wsserver/core/protocol"
	"github.com/wsserver/wsserver/core/wire"
)

// Types of the messages a chat client sends (PROTOCOL.md §3.1).
const (
	TypeChat   = "chat"
	TypePing   = "ping"
	TypeCancel = "cancel"
)

// Limits and defaults of the chat protocol.
const (
	// DefaultMaxMessageChars is MAX_MESSAGE_CHARS's default.
	DefaultMaxMessageChars = 8000
	// MaxThreadIDLen bounds a thread id, which is also a session id.
	MaxThreadIDLen = 128
	// MaxChannelLen bounds a channel name.
	MaxChannelLen = 64
	// DefaultChannel is the channel of a chat that names none.
	DefaultChannel = "web"
)

// Inbound is a decoded chat client message.
type Inbound struct {
	// Type is TypeChat, TypePing or TypeCancel.
	Type string
	// Chat is set when Type is TypeChat.
	Chat Chat
	// Resume is set when Type is TypeResume.
	Resume ResumeRequest
	// ThreadID is the thread a cancel names (a valid id), empty when it
	// names none: then it stops the connection's own answer.
	ThreadID string
}

// Chat is a valid chat request as the client sent it.
type Chat struct {
	// Message is not blank and at most the allowed characters long.
	Message string
	// ThreadID is empty when the client named no thread (see ThreadFor);
	// otherwise it is a valid id (ValidThreadID).
	ThreadID string
	// Channel is never empty: DefaultChannel when the client gave none.
	Channel string
	// Data is the client's context: any JSON value, never null on the web
	// channel; nil when absent or null on other channels.
	Data json.RawMessage
	// Resumable: the answer keeps running when the socket goes, and may
	// be resumed (PROTOCOL.md §3.9).
	Resumable bool
	// Multitask says what to do when the thread is busy (PROTOCOL.md
	// §3.4); the zero value is MultitaskReject.
	Multitask Multitask
}

// Multitask is what a chat asks for when its thread is busy: another
// answer streams on it, or chats wait for it (PROTOCOL.md §3.4).
type Multitask uint8

// The strategies of a chat's "multitask" field.
const (
	// MultitaskReject refuses the chat with thread_busy (the default).
	MultitaskReject Multitask = iota
	// MultitaskEnqueue waits in the thread's queue; the chat runs when
	// the chats before it are done.
	MultitaskEnqueue
	// MultitaskInterrupt stops the running answer (stored as cancelled)
	// and runs next.
	MultitaskInterrupt
	// MultitaskRollback stops the running answer, stores nothing of its
	// turn, and runs next.
	MultitaskRollback
)

var multitaskNames = [...]string{"reject", "enqueue", "interrupt", "rollback"}

// String is the strategy's name in the protocol.
func (m Multitask) String() string {
	if int(m) < len(multitaskNames) {
		return multitaskNames[m]
	}
	return "multitask(" + strconv.Itoa(int(m)) + ")"
}

// parseMultitask reads the "multitask" field: absent, null or "" is
// MultitaskReject.
func parseMultitask(raw json.RawMessage) (Multitask, bool) {
	if wire.IsNull(raw) {
		return MultitaskReject, true
	}
	s, ok := wire.String(raw)
	if !ok {
		return 0, false
	}
	if s == "" {
		return MultitaskReject, true
	}
	for i, name := range multitaskNames {
		if s == name {
			return Multitask(i), true
		}
	}
	return 0, false
}

type wireChat struct {
	Type     json.RawMessage `json:"type"`
	Message  json.RawMessage `json:"message"`
	ThreadID json.RawMessage `json:"thread_id"`
	Channel  json.RawMessage `json:"channel"`
	Data     json.RawMessage `json:"data"`
	// Multitask is read only once the rest is valid.
	Multitask json.RawMessage `json:"multitask"`
	// Resumable, and the resume's fields (decode_resume.go).
	Resumable json.RawMessage `json:"resumable"`
	MessageID json.RawMessage `json:"message_id"`
	Seq       json.RawMessage `json:"seq"`
	Epoch     json.RawMessage `json:"epoch"`
}

// DecodeChat parses and validates one frame of a chat socket. maxChars
// bounds a message in Unicode characters; zero means
// DefaultMaxMessageChars. Errors are *protocol.Error with the code of PROTOCOL.md §6.1. A
// frame that is no message at all is refused by the rule the session
// endpoint shares (protocol.DecodeMessage): invalid_json when it is not UTF-8,
// not JSON or not an object, invalid_message when its type is absent or
// not a string. Strings the decoder reads (message, thread_id, channel)
// cannot hold a lone surrogate: encoding/json turns its escape into U+FFFD.
func DecodeChat(frame []byte, maxChars int) (Inbound, error) {
	if maxChars <= 0 {
		maxChars = DefaultMaxMessageChars
	}
	var w wireChat
	typ, r := protocol.DecodeMessage(frame, &w, &w.Type)
	if r != nil {
		return Inbound{}, r
	}
	switch typ {
	case TypePing:
		return Inbound{Type: typ}, nil
	case TypeCancel:
		return decodeCancel(w)
	case TypeResume:
		return decodeResume(w)
	case TypeChat:
	default:
		return Inbound{}, &protocol.Error{Code: protocol.CodeUnknownType, Message: "unknown message type " + strconv.Quote(wire.Truncate(typ, 64))}
	}

	var c Chat
	var ok bool
	if w.Message == nil || wire.IsNull(w.Message) {
		return Inbound{}, invalid("message is required")
	}
	if c.Message, ok = wire.String(w.Message); !ok {
		return Inbound{}, invalid("message must be a string")
	}
	if strings.TrimSpace(c.Message) == "" {
		return Inbound{}, invalid("message is empty")
	}
	if strings.IndexByte(c.Message, 0) >= 0 {
		// No store can keep it (PostgreSQL text refuses NUL), so refuse
		// it here rather than fail the answer later.
		return Inbound{}, invalid("message must not contain NUL characters")
	}
	if utf8.RuneCountInString(c.Message) > maxChars {
		return Inbound{}, invalid("message is longer than " + strconv.Itoa(maxChars) + " characters")
	}

	if !wire.IsNull(w.ThreadID) {
		if c.ThreadID, ok = wire.String(w.ThreadID); !ok {
			return Inbound{}, invalid("thread_id must be a string")
		}
		if c.ThreadID != "" && !ValidThreadID(c.ThreadID) {
			return Inbound{}, invalid("thread_id must be 1 to 128 characters of A-Z a-z 0-9 _ - . :")
		}
	}

	c.Channel = DefaultChannel
	if !wire.IsNull(w.Channel) {
		ch, ok := wire.String(w.Channel)
		if !ok {
			return Inbound{}, invalid("channel must be a string")
		}
		if ch != "" {
			if !wire.ValidID(ch, MaxChannelLen) {
				return Inbound{}, invalid("channel must be 1 to 64 characters of A-Z a-z 0-9 _ - . :")
			}
			c.Channel = ch
		}
	}

	if !wire.IsNull(w.Data) {
		// The data is stored as it is (PostgreSQL jsonb), which the JSON
		// decoder does not check in a raw value: refused now rather than
		// at the checkpoint after the answer streamed, which loses the turn.
		if err := wire.ValidJSONText(w.Data); err != nil {
			return Inbound{}, invalid("data cannot be stored: " + err.Error())
		}
		c.Data = w.Data
	} else if c.Channel == DefaultChannel {
		return Inbound{}, &protocol.Error{Code: protocol.CodeDataRequired, Message: "data is required with channel=web (any JSON value but null, for example [])"}
	}
	if c.Multitask, ok = parseMultitask(w.Multitask); !ok {
		return Inbound{}, invalid("multitask must be one of reject, enqueue, interrupt, rollback")
	}
	if c.Resumable, ok = parseResumable(w.Resumable); !ok {
		return Inbound{}, invalid("resumable must be true or false")
	}
	return Inbound{Type: TypeChat, Chat: c}, nil
}

// decodeCancel reads a cancel's optional thread_id.
func decodeCancel(w wireChat) (Inbound, error) {
	in := Inbound{Type: TypeCancel}
	if wire.IsNull(w.ThreadID) {
		return in, nil
	}
	id, ok := wire.String(w.ThreadID)
	if !ok {
		return Inbound{}, invalid("thread_id must be a string")
	}
	if id != "" && !ValidThreadID(id) {
		return Inbound{}, invalid("thread_id must be 1 to 128 characters of A-Z a-z 0-9 _ - . :")
	}
	in.ThreadID = id
	return in, nil
}

func invalid(msg string) error { return &protocol.Error{Code: protocol.CodeInvalidMsg, Message: msg} }

// ThreadFor returns the thread a chat goes to (PROTOCOL.md §3.4): the one the client
// named, else the connection's current thread, else a new one.
func ThreadFor(requested, current string, newID func() string) string {
	switch {
	case requested != "":
		return requested
	case current != "":
		return current
	default:
		return newID()
	}
}

// ValidThreadID reports whether id may name a thread, and so a session: 1
// to 128 characters of A-Z a-z 0-9 _ - . :
func ValidThreadID(id string) bool { return wire.ValidID(id, MaxThreadIDLen) }

// Bounds of MAX_QUEUED_PER_THREAD: how many chats may wait for a busy
// thread, across instances.
const (
	DefaultMaxQueued = 5
	MaxQueuedLimit   = 100
)
