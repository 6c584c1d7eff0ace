// Package session holds the rules of the multi-subscriber session streams
// (PROTOCOL.md §4): what a client may send, what it gets back, who is present and
// who receives a broadcast. It does no I/O of its own: the broker and the
// presence store are ports, and sockets are Subscribers.
package session

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"github.com/wsserver/wsserver/core/protocol"
	"github.com/wsserver/wsserver/core/wire"
	"github.com/wsserver/wsserver/ports"
)

// Limits of the protocol.
const (
	MaxSessionIDLen = 128
	MaxUserTypeLen  = 64
	MaxClientType   = 64
	// MaxEpochLen bounds the epoch a hello's since may name: the server's
	// epochs are shorter, so a longer one is no epoch of it.
	MaxEpochLen = 64
	// MaxOffset is the largest offset a hello's since may name: the
	// largest integer every JSON reader (JavaScript's numbers) keeps exact.
	MaxOffset = 1<<53 - 1
)

// ErrUnavailable means a request reached only part of what it should have
// because a shared backend (Redis) is away. The local part was done.
var ErrUnavailable = &protocol.Error{Code: protocol.CodeUnavailable, Message: "the shared channel layer is unavailable; only this instance was reached"}

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
	// PresenceEvents and PresenceKey: see presence_decode.go.
	PresenceEvents bool
	PresenceKey    string // empty when absent or null
	// Since is the last position the client has of the session's
	// numbered broadcasts; nil when absent or null (PROTOCOL.md §4.8).
	Since *ports.Position
	// Broadcast: raw JSON values, nil when absent.
	Msg  json.RawMessage
	Data json.RawMessage
}

type wireInbound struct {
	Type       json.RawMessage `json:"type"`
	UserType   json.RawMessage `json:"user_type"`
	ClientType json.RawMessage `json:"client_type"`
	Since      json.RawMessage `json:"since"`
	wirePresence
	Msg  json.RawMessage `json:"msg"`
	Data json.RawMessage `json:"data"`
}

// Decode parses and validates one client frame. The frame's size is bounded
// by the socket's read limit before it gets here. A frame that is no
// message at all is refused by the rule the chat endpoint shares
// (protocol.DecodeMessage): invalid_json when it is not UTF-8, not JSON or not
// an object, invalid_message when its type is absent or not a string.
func Decode(frame []byte) (Inbound, error) {
	var w wireInbound
	typ, r := protocol.DecodeMessage(frame, &w, &w.Type)
	if r != nil {
		return Inbound{}, r
	}
	in := Inbound{Type: typ}
	switch in.Type {
	case KindHello:
		ut, ok := wire.String(w.UserType)
		if !ok || ut == "" {
			return Inbound{}, &protocol.Error{Code: protocol.CodeInvalidMsg, Message: "user_type is required: a string of 1 to 64 characters"}
		}
		if utf8.RuneCountInString(ut) > MaxUserTypeLen {
			return Inbound{}, &protocol.Error{Code: protocol.CodeInvalidMsg, Message: "user_type is longer than 64 characters"}
		}
		in.UserType = ut
		if !wire.IsNull(w.ClientType) {
			ct, ok := wire.String(w.ClientType)
			if !ok {
				return Inbound{}, &protocol.Error{Code: protocol.CodeInvalidMsg, Message: "client_type must be a string or null"}
			}
			if utf8.RuneCountInString(ct) > MaxClientType {
				return Inbound{}, &protocol.Error{Code: protocol.CodeInvalidMsg, Message: "client_type is longer than 64 characters"}
			}
			in.ClientType = ct
		}
		if err := w.decodePresence(&in); err != nil {
			return Inbound{}, err
		}
		if !wire.IsNull(w.Since) {
			since, err := decodeSince(w.Since)
			if err != nil {
				return Inbound{}, err
			}
			in.Since = since
		}
	case KindBroadcast:
		if w.Msg == nil {
			return Inbound{}, &protocol.Error{Code: protocol.CodeInvalidMsg, Message: "msg is required"}
		}
		// msg and data are relayed verbatim to every listener, so each must
		// be readable by every client. The frame is valid UTF-8 already;
		// lone surrogate escapes are refused too, though JSON.parse takes
		// them: they name no character, strict parsers (Rust's serde_json)
		// refuse them, and the chat endpoint refuses them in data, so one
		// rule holds for everything the server relays or stores. NUL and
		// numbers beyond PostgreSQL's pass: nothing of a session is stored.
		if err := wire.ValidJSONUnicode(w.Msg); err != nil {
			return Inbound{}, &protocol.Error{Code: protocol.CodeInvalidMsg, Message: "msg cannot be relayed: " + err.Error()}
		}
		in.Msg = w.Msg
		if !wire.IsNull(w.Data) {
			if err := wire.ValidJSONUnicode(w.Data); err != nil {
				return Inbound{}, &protocol.Error{Code: protocol.CodeInvalidMsg, Message: "data cannot be relayed: " + err.Error()}
			}
			in.Data = w.Data
		}
	case KindPresence, KindPing:
	default:
		return Inbound{}, &protocol.Error{Code: protocol.CodeUnknownType, Message: "unknown message type " + strconv.Quote(wire.Truncate(in.Type, 64))}
	}
	return in, nil
}

var errSince = &protocol.Error{Code: protocol.CodeInvalidMsg, Message: "since must be an object with offset (an integer from 0 to 2^53-1) and epoch (as hello_ok gave it)"}

// decodeSince reads a hello's since: {"offset":n,"epoch":E}.
func decodeSince(raw json.RawMessage) (*ports.Position, error) {
	var w struct {
		Offset json.RawMessage `json:"offset"`
		Epoch  json.RawMessage `json:"epoch"`
	}
	if raw[0] != '{' || json.Unmarshal(raw, &w) != nil {
		return nil, errSince
	}
	// Digits only: no sign, fraction or exponent, and no leading zero
	// but for 0 itself, as JSON writes integers.
	o := w.Offset
	if len(o) == 0 || len(o) > 16 || len(o) > 1 && o[0] == '0' {
		return nil, errSince
	}
	for _, c := range o {
		if c < '0' || c > '9' {
			return nil, errSince
		}
	}
	offset, err := strconv.ParseUint(string(o), 10, 64)
	if err != nil || offset > MaxOffset {
		return nil, errSince
	}
	epoch, ok := wire.String(w.Epoch)
	if !ok || !wire.ValidID(epoch, MaxEpochLen) {
		return nil, errSince
	}
	return &ports.Position{Offset: offset, Epoch: epoch}, nil
}

// ValidID reports whether id may name a session: 1 to 128 characters of
// A-Z a-z 0-9 _ - . :
func ValidID(id string) bool { return wire.ValidID(id, MaxSessionIDLen) }
