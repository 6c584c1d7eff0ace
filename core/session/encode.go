package session

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"

	"github.com/wsserver/wsserver/core/wire"
	"github.com/wsserver/wsserver/ports"
)

// Messages sent to clients are built by appending to a byte slice: they are
// small, their shape is fixed, and the broadcast path runs for every message.

// EncodeSessionMessage builds the envelope every connection of a session
// receives for a broadcast. msg must be valid JSON; data may be nil (null).
// It has no offset: the session keeps no history (PROTOCOL.md §4.8).
func EncodeSessionMessage(from ports.Member, msg, data json.RawMessage) []byte {
	b := make([]byte, 0, 80+len(from.UserType)+len(from.ClientType)+len(msg)+len(data))
	b = append(b, sessionMessageType...)
	return appendSessionMessage(b, from, msg, data)
}

// sessionMessageType opens every session_message; numberedHead opens
// those that carry an offset, which comes right after it, so that the hub
// reads a delivery's offset without parsing the message.
const (
	sessionMessageType = `{"type":"session_message"`
	numberedHead       = sessionMessageType + `,"offset":`
)

// NumberSessionMessage is EncodeSessionMessage for a session that keeps
// history: the envelope with its offset, which the history fills in.
func NumberSessionMessage(from ports.Member, msg, data json.RawMessage) ports.Numbered {
	tail := make([]byte, 0, 70+len(from.UserType)+len(from.ClientType)+len(msg)+len(data))
	return ports.Numbered{Head: []byte(numberedHead), Tail: appendSessionMessage(tail, from, msg, data)}
}

func appendSessionMessage(b []byte, from ports.Member, msg, data json.RawMessage) []byte {
	b = append(b, `,"user_type":`...)
	b = wire.AppendString(b, from.UserType)
	b = append(b, `,"client_type":`...)
	b = appendNullableString(b, from.ClientType)
	b = append(b, `,"msg":`...)
	b = append(b, msg...)
	b = append(b, `,"data":`...)
	if data == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, data...)
	}
	return append(b, '}')
}

// offsetOf returns the offset of a numbered session_message, and false for
// any other message (one without offset, a chat_event).
func offsetOf(payload []byte) (uint64, bool) {
	if len(payload) <= len(numberedHead) || string(payload[:len(numberedHead)]) != numberedHead {
		return 0, false
	}
	var n uint64
	digits := 0
	for _, c := range payload[len(numberedHead):] {
		if c < '0' || c > '9' || digits == 20 {
			break
		}
		n = n*10 + uint64(c-'0')
		digits++
	}
	return n, digits > 0
}

// EncodeHelloOK is the reply to a valid hello, when the session keeps no
// history and the hello asked for none.
func EncodeHelloOK(sessionID, connID string) []byte {
	return append(appendHelloOK(nil, sessionID, connID), '}')
}

func appendHelloOK(b []byte, sessionID, connID string) []byte {
	b = append(b, `{"type":"hello_ok","session_id":`...)
	b = wire.AppendString(b, sessionID)
	b = append(b, `,"connection_id":`...)
	return wire.AppendString(b, connID)
}

// EncodeWelcome is the reply to a valid hello (PROTOCOL.md §4.1, §4.8):
// recovered when the hello had a since, and the position when the
// history was read (rec not nil).
func EncodeWelcome(sessionID, connID string, since bool, rec *ports.Recovery) []byte {
	b := appendHelloOK(nil, sessionID, connID)
	if since {
		b = append(b, `,"recovered":`...)
		b = strconv.AppendBool(b, rec != nil && rec.Recovered)
	}
	if rec != nil {
		b = append(b, `,"offset":`...)
		b = strconv.AppendUint(b, rec.Top.Offset, 10)
		b = append(b, `,"epoch":`...)
		b = wire.AppendString(b, rec.Top.Epoch)
	}
	return append(b, '}')
}

// EncodePresence is the reply to a presence query. Connections are sorted
// by id so that replies are stable.
func EncodePresence(sessionID string, members []ports.Member) []byte {
	members = slices.Clone(members)
	slices.SortFunc(members, func(a, b ports.Member) int { return strings.Compare(a.ConnectionID, b.ConnectionID) })
	// The reply is built in one allocation (a session of 100 connections
	// made it grow ten times, 50 KB of garbage a query): its size is known
	// but for the rare escapes.
	n := 64 + len(sessionID)
	for _, m := range members {
		n += 64 + len(m.ConnectionID) + len(m.UserType) + len(m.ClientType)
	}
	b := make([]byte, 0, n)
	b = append(b, `{"type":"presence","session_id":`...)
	b = wire.AppendString(b, sessionID)
	b = append(b, `,"count":`...)
	b = appendInt(b, len(members))
	b = append(b, `,"connections":[`...)
	for i, m := range members {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"connection_id":`...)
		b = wire.AppendString(b, m.ConnectionID)
		b = append(b, `,"user_type":`...)
		b = wire.AppendString(b, m.UserType)
		b = append(b, `,"client_type":`...)
		b = appendNullableString(b, m.ClientType)
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

func appendNullableString(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	return wire.AppendString(b, s)
}

func appendInt(b []byte, n int) []byte {
	if n == 0 {
		return append(b, '0')
	}
	var d [20]byte
	i := len(d)
	for n > 0 {
		i--
		d[i] = byte('0' + n%10)
		n /= 10
	}
	return append(b, d[i:]...)
}
