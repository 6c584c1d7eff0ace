package session

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/wsserver/wsserver/core/wire"
	"github.com/wsserver/wsserver/ports"
)

// Messages sent to clients are built by appending to a byte slice: they are
// small, their shape is fixed, and the broadcast path runs for every message.

// EncodeSessionMessage builds the envelope every connection of a session
// receives for a broadcast. msg must be valid JSON; data may be nil (null).
func EncodeSessionMessage(from ports.Member, msg, data json.RawMessage) []byte {
	b := make([]byte, 0, 80+len(from.UserType)+len(from.ClientType)+len(msg)+len(data))
	b = append(b, `{"type":"session_message","user_type":`...)
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

// EncodeHelloOK is the reply to a valid hello.
func EncodeHelloOK(sessionID, connID string) []byte {
	b := append([]byte(nil), `{"type":"hello_ok","session_id":`...)
	b = wire.AppendString(b, sessionID)
	b = append(b, `,"connection_id":`...)
	b = wire.AppendString(b, connID)
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
