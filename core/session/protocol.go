// Package session holds the rules of the multi-subscriber session streams
// (SPEC §3): what a client may send, what it gets back, who is present and
// who receives a broadcast. It does no I/O of its own: the broker and the
// presence store are ports, and sockets are Subscribers.
package session

import (
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf8"

	"github.com/wsserver/wsserver/core/wire"
)

// Limits of the protocol.
const (
	MaxSessionIDLen = 128
	MaxUserTypeLen  = 64
	MaxClientType   = 64
)

// Error codes sent to clients in {"type":"error","code":..}.
const (
	CodeInvalidJSON   = "invalid_json"
	CodeUnknownType   = "unknown_type"
	CodeInvalidMsg    = "invalid_message"
	CodeHelloRequired = "hello_required"
	CodeRateLimited   = "rate_limited"
	CodeUnavailable   = "unavailable"
	CodeInternal      = "internal"
)

// Error is a refusal the client is told about, with the code of SPEC §3.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// ErrUnavailable means a request reached only part of what it should have
// because a shared backend (Redis) is away. The local part was done.
var ErrUnavailable = &Error{Code: CodeUnavailable, Message: "the shared channel layer is unavailable; only this instance was reached"}

// Kinds of inbound messages.
const (
	KindHello     = "hello"
	KindBroadcast = "broadcast"
	KindPresence  = "presence"
	KindPing      = "ping"
)

// Inbound is a decoded client message.
type Inbound struct {
	Type string
	// Hello.
	UserType   string
	ClientType string // empty when absent or null
	// Broadcast: raw JSON values, nil when absent.
	Msg  json.RawMessage
	Data json.RawMessage
}

type wireInbound struct {
	Type       *string         `json:"type"`
	UserType   json.RawMessage `json:"user_type"`
	ClientType json.RawMessage `json:"client_type"`
	Msg        json.RawMessage `json:"msg"`
	Data       json.RawMessage `json:"data"`
}

// Decode parses and validates one client frame. The frame's size is bounded
// by the socket's read limit before it gets here.
func Decode(frame []byte) (Inbound, error) {
	var w wireInbound
	if err := json.Unmarshal(frame, &w); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			return Inbound{}, &Error{Code: CodeInvalidJSON, Message: "a message must be a JSON object"}
		}
		return Inbound{}, &Error{Code: CodeInvalidJSON, Message: "the message is not valid JSON"}
	}
	if w.Type == nil {
		return Inbound{}, &Error{Code: CodeInvalidMsg, Message: "type is required"}
	}
	in := Inbound{Type: *w.Type}
	switch in.Type {
	case KindHello:
		ut, ok := wire.String(w.UserType)
		if !ok || ut == "" {
			return Inbound{}, &Error{Code: CodeInvalidMsg, Message: "user_type is required: a string of 1 to 64 characters"}
		}
		if utf8.RuneCountInString(ut) > MaxUserTypeLen {
			return Inbound{}, &Error{Code: CodeInvalidMsg, Message: "user_type is longer than 64 characters"}
		}
		in.UserType = ut
		if !wire.IsNull(w.ClientType) {
			ct, ok := wire.String(w.ClientType)
			if !ok {
				return Inbound{}, &Error{Code: CodeInvalidMsg, Message: "client_type must be a string or null"}
			}
			if utf8.RuneCountInString(ct) > MaxClientType {
				return Inbound{}, &Error{Code: CodeInvalidMsg, Message: "client_type is longer than 64 characters"}
			}
			in.ClientType = ct
		}
	case KindBroadcast:
		if w.Msg == nil {
			return Inbound{}, &Error{Code: CodeInvalidMsg, Message: "msg is required"}
		}
		in.Msg = w.Msg
		if !wire.IsNull(w.Data) {
			in.Data = w.Data
		}
	case KindPresence, KindPing:
	default:
		return Inbound{}, &Error{Code: CodeUnknownType, Message: "unknown message type " + strconv.Quote(wire.Truncate(in.Type, 64))}
	}
	return in, nil
}

// ValidID reports whether id may name a session: 1 to 128 characters of
// A-Z a-z 0-9 _ - . :
func ValidID(id string) bool { return wire.ValidID(id, MaxSessionIDLen) }
