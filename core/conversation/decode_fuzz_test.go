package conversation_test

import (
	"encoding/json"
	"errors"
	"testing"
	"unicode/utf8"

	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/core/protocol"
	"github.com/wsserver/wsserver/core/session"
)

// FuzzDecodersAgree: a frame that is no message of either endpoint — not
// UTF-8, not JSON, not an object, without a string type, or of a type
// neither knows — is refused by /ws/chat/ and /ws/session/ with the same
// code and words; a ping is accepted by both.
func FuzzDecodersAgree(f *testing.F) {
	for _, s := range []string{
		``, `null`, `[]`, `5`, `"ping"`, `{}`, `{"type":null}`, `{"type":5}`, `{"type":{}}`,
		`{"type":"shout"}`, `{"type":""}`, `{"type":"\ud800"}`, `{"type":"ping","x":[1]}`,
		"\xff", "{\"type\":\"ping\",\"m\":\"\xc3\"}", `{"type":"ping"} x`, ` {"type":"Ping"} `,
		`{"type":"chat","message":"hi","data":[]}`, `{"type":"hello","user_type":"a"}`,
	} {
		f.Add([]byte(s))
	}
	known := map[string]bool{
		conversation.TypeChat: true, conversation.TypePing: true, conversation.TypeCancel: true,
		session.KindHello: true, session.KindBroadcast: true, session.KindPresence: true,
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		cin, cerr := conversation.DecodeChat(frame, 0)
		sin, serr := session.Decode(frame)
		var w struct {
			Type json.RawMessage `json:"type"`
		}
		var typ string
		if utf8.Valid(frame) && json.Unmarshal(frame, &w) == nil && json.Unmarshal(w.Type, &typ) == nil {
			switch {
			case typ == conversation.TypePing:
				if cerr == nil && serr == nil && cin.Type == typ && sin.Type == typ {
					return
				}
			case known[typ]:
				return // one endpoint's message: each has its own rules
			}
		}
		var ce *protocol.Error
		var se *protocol.Error
		if !errors.As(cerr, &ce) || !errors.As(serr, &se) {
			t.Fatalf("%q: chat %v, session %v: want both refused", frame, cerr, serr)
		}
		if ce.Code != se.Code || ce.Message != se.Message {
			t.Fatalf("%q: chat %s %q, session %s %q", frame, ce.Code, ce.Message, se.Code, se.Message)
		}
	})
}
