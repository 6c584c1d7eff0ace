package session

import (
	"encoding/json"

	"github.com/wsserver/wsserver/core/protocol"
	"github.com/wsserver/wsserver/core/wire"
)

// MaxPresenceKeyLen bounds a hello's presence_key, as other ids are.
const MaxPresenceKeyLen = 128

// wirePresence is the part of a hello that asks for presence events
// (PROTOCOL.md §4.7).
type wirePresence struct {
	PresenceEvents json.RawMessage `json:"presence_events"`
	PresenceKey    json.RawMessage `json:"presence_key"`
}

// decodePresence reads presence_events (a boolean; absent and null are
// false) and presence_key (an id, or null) into in.
func (w *wirePresence) decodePresence(in *Inbound) error {
	switch string(w.PresenceEvents) {
	case "", "null", "false":
	case "true":
		in.PresenceEvents = true
	default:
		return &protocol.Error{Code: protocol.CodeInvalidMsg, Message: "presence_events must be true, false or null"}
	}
	if wire.IsNull(w.PresenceKey) {
		return nil
	}
	key, ok := wire.String(w.PresenceKey)
	if !ok || !wire.ValidID(key, MaxPresenceKeyLen) {
		return &protocol.Error{Code: protocol.CodeInvalidMsg, Message: "presence_key must be null or 1 to 128 characters of A-Z a-z 0-9 _ - . :"}
	}
	in.PresenceKey = key
	return nil
}
