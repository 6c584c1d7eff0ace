package session

import (
	"github.com/wsserver/wsserver/core/wire"
	"github.com/wsserver/wsserver/ports"
)

// EncodePresenceState is the whole state a presence-event listener gets
// first (PROTOCOL.md §4.7): the presence reply's shape, one entry per
// member, sorted as given. members is empty when countOnly.
func EncodePresenceState(sessionID string, members []ports.Member, count int, countOnly bool) []byte {
	b := append([]byte(nil), `{"type":"presence_state","session_id":`...)
	b = wire.AppendString(b, sessionID)
	b = append(b, `,"count":`...)
	b = appendInt(b, count)
	b = append(b, `,"count_only":`...)
	b = appendBool(b, countOnly)
	b = append(b, `,"connections":`...)
	b = appendMembers(b, members)
	return append(b, '}')
}

// EncodePresenceDiff is a batch of joins and leaves (PROTOCOL.md §4.7). A
// diff that resets the state is sent as a presence_state.
func EncodePresenceDiff(sessionID string, d PresenceDiff) []byte {
	if d.Reset {
		return EncodePresenceState(sessionID, d.Joins, d.Count, false)
	}
	b := append([]byte(nil), `{"type":"presence_diff","session_id":`...)
	b = wire.AppendString(b, sessionID)
	b = append(b, `,"joins":`...)
	b = appendMembers(b, d.Joins)
	b = append(b, `,"leaves":`...)
	b = appendMembers(b, d.Leaves)
	b = append(b, `,"count":`...)
	b = appendInt(b, d.Count)
	b = append(b, `,"count_only":`...)
	b = appendBool(b, d.CountOnly)
	return append(b, '}')
}

func appendMembers(b []byte, members []ports.Member) []byte {
	b = append(b, '[')
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
		b = append(b, `,"presence_key":`...)
		b = appendNullableString(b, m.PresenceKey)
		b = append(b, '}')
	}
	return append(b, ']')
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, "true"...)
	}
	return append(b, "false"...)
}
