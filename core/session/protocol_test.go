package session

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/core/protocol"
	"github.com/wsserver/wsserver/core/wire"
	"github.com/wsserver/wsserver/ports"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name  string
		frame string
		want  Inbound
		code  string
	}{
		{"hello", `{"type":"hello","user_type":"admin","client_type":"web"}`, Inbound{Type: KindHello, UserType: "admin", ClientType: "web"}, ""},
		{"hello without client_type", `{"type":"hello","user_type":"admin"}`, Inbound{Type: KindHello, UserType: "admin"}, ""},
		{"hello with null client_type", `{"type":"hello","user_type":"admin","client_type":null}`, Inbound{Type: KindHello, UserType: "admin"}, ""},
		{"hello of 64 characters", `{"type":"hello","user_type":"` + strings.Repeat("ü", 64) + `"}`, Inbound{Type: KindHello, UserType: strings.Repeat("ü", 64)}, ""},
		{"hello of 65 characters", `{"type":"hello","user_type":"` + strings.Repeat("a", 65) + `"}`, Inbound{}, protocol.CodeInvalidMsg},
		{"hello without user_type", `{"type":"hello","client_type":"web"}`, Inbound{}, protocol.CodeInvalidMsg},
		{"hello with empty user_type", `{"type":"hello","user_type":""}`, Inbound{}, protocol.CodeInvalidMsg},
		{"hello with numeric user_type", `{"type":"hello","user_type":7}`, Inbound{}, protocol.CodeInvalidMsg},
		{"hello with numeric client_type", `{"type":"hello","user_type":"a","client_type":7}`, Inbound{}, protocol.CodeInvalidMsg},
		{"hello with long client_type", `{"type":"hello","user_type":"a","client_type":"` + strings.Repeat("c", 65) + `"}`, Inbound{}, protocol.CodeInvalidMsg},
		{"hello asking for presence events", `{"type":"hello","user_type":"a","presence_events":true,"presence_key":"user-7:ann"}`, Inbound{Type: KindHello, UserType: "a", PresenceEvents: true, PresenceKey: "user-7:ann"}, ""},
		{"hello with presence_events false", `{"type":"hello","user_type":"a","presence_events":false,"presence_key":null}`, Inbound{Type: KindHello, UserType: "a"}, ""},
		{"hello with presence_events null", `{"type":"hello","user_type":"a","presence_events":null}`, Inbound{Type: KindHello, UserType: "a"}, ""},
		{"hello with a key but no events", `{"type":"hello","user_type":"a","presence_key":"k"}`, Inbound{Type: KindHello, UserType: "a", PresenceKey: "k"}, ""},
		{"hello with a key of 128 characters", `{"type":"hello","user_type":"a","presence_key":"` + strings.Repeat("k", 128) + `"}`, Inbound{Type: KindHello, UserType: "a", PresenceKey: strings.Repeat("k", 128)}, ""},
		{"hello with a key of 129 characters", `{"type":"hello","user_type":"a","presence_key":"` + strings.Repeat("k", 129) + `"}`, Inbound{}, protocol.CodeInvalidMsg},
		{"hello with an empty key", `{"type":"hello","user_type":"a","presence_key":""}`, Inbound{}, protocol.CodeInvalidMsg},
		{"hello with a key of odd characters", `{"type":"hello","user_type":"a","presence_key":"ann smith"}`, Inbound{}, protocol.CodeInvalidMsg},
		{"hello with a numeric key", `{"type":"hello","user_type":"a","presence_key":7}`, Inbound{}, protocol.CodeInvalidMsg},
		{"hello with presence_events as a string", `{"type":"hello","user_type":"a","presence_events":"true"}`, Inbound{}, protocol.CodeInvalidMsg},
		{"hello with presence_events as a number", `{"type":"hello","user_type":"a","presence_events":1}`, Inbound{}, protocol.CodeInvalidMsg},
		{"hello with since", `{"type":"hello","user_type":"a","since":{"offset":17,"epoch":"e1f0-3"}}`, Inbound{Type: KindHello, UserType: "a", Since: &ports.Position{Offset: 17, Epoch: "e1f0-3"}}, ""},
		{"hello with since at offset 0", `{"type":"hello","user_type":"a","since":{"offset":0,"epoch":"e"}}`, Inbound{Type: KindHello, UserType: "a", Since: &ports.Position{Epoch: "e"}}, ""},
		{"hello with the largest offset", `{"type":"hello","user_type":"a","since":{"offset":9007199254740991,"epoch":"e"}}`, Inbound{Type: KindHello, UserType: "a", Since: &ports.Position{Offset: 1<<53 - 1, Epoch: "e"}}, ""},
		{"hello with null since", `{"type":"hello","user_type":"a","since":null}`, Inbound{Type: KindHello, UserType: "a"}, ""},
		{"hello with since not an object", `{"type":"hello","user_type":"a","since":17}`, Inbound{}, protocol.CodeInvalidMsg},
		{"hello with since without offset", `{"type":"hello","user_type":"a","since":{"epoch":"e"}}`, Inbound{}, protocol.CodeInvalidMsg},
		{"hello with since without epoch", `{"type":"hello","user_type":"a","since":{"offset":1}}`, Inbound{}, protocol.CodeInvalidMsg},
		{"hello with a negative offset", `{"type":"hello","user_type":"a","since":{"offset":-1,"epoch":"e"}}`, Inbound{}, protocol.CodeInvalidMsg},
		{"hello with a fractional offset", `{"type":"hello","user_type":"a","since":{"offset":1.5,"epoch":"e"}}`, Inbound{}, protocol.CodeInvalidMsg},
		{"hello with an exponent offset", `{"type":"hello","user_type":"a","since":{"offset":1e3,"epoch":"e"}}`, Inbound{}, protocol.CodeInvalidMsg},
		{"hello with an offset beyond 2^53-1", `{"type":"hello","user_type":"a","since":{"offset":9007199254740992,"epoch":"e"}}`, Inbound{}, protocol.CodeInvalidMsg},
		{"hello with a string offset", `{"type":"hello","user_type":"a","since":{"offset":"1","epoch":"e"}}`, Inbound{}, protocol.CodeInvalidMsg},
		{"hello with an empty epoch", `{"type":"hello","user_type":"a","since":{"offset":1,"epoch":""}}`, Inbound{}, protocol.CodeInvalidMsg},
		{"hello with a long epoch", `{"type":"hello","user_type":"a","since":{"offset":1,"epoch":"` + strings.Repeat("e", 65) + `"}}`, Inbound{}, protocol.CodeInvalidMsg},
		{"hello with an odd epoch", `{"type":"hello","user_type":"a","since":{"offset":1,"epoch":"e f"}}`, Inbound{}, protocol.CodeInvalidMsg},
		{"hello with a numeric epoch", `{"type":"hello","user_type":"a","since":{"offset":1,"epoch":3}}`, Inbound{}, protocol.CodeInvalidMsg},
		{"broadcast", `{"type":"broadcast","msg":"hello","data":{"a":1}}`, Inbound{Type: KindBroadcast, Msg: json.RawMessage(`"hello"`), Data: json.RawMessage(`{"a":1}`)}, ""},
		{"broadcast of any msg", `{"type":"broadcast","msg":{"x":[1,2]}}`, Inbound{Type: KindBroadcast, Msg: json.RawMessage(`{"x":[1,2]}`)}, ""},
		{"broadcast with null data", `{"type":"broadcast","msg":1,"data":null}`, Inbound{Type: KindBroadcast, Msg: json.RawMessage(`1`)}, ""},
		{"broadcast with null msg", `{"type":"broadcast","msg":null}`, Inbound{Type: KindBroadcast, Msg: json.RawMessage(`null`)}, ""},
		{"broadcast without msg", `{"type":"broadcast","data":{}}`, Inbound{}, protocol.CodeInvalidMsg},
		{"presence", `{"type":"presence"}`, Inbound{Type: KindPresence}, ""},
		{"ping", `{"type":"ping"}`, Inbound{Type: KindPing}, ""},
		{"unknown type", `{"type":"shout"}`, Inbound{}, protocol.CodeUnknownType},
		{"numeric type", `{"type":3}`, Inbound{}, protocol.CodeInvalidMsg},
		{"null type", `{"type":null}`, Inbound{}, protocol.CodeInvalidMsg},
		{"no type", `{"msg":"x"}`, Inbound{}, protocol.CodeInvalidMsg},
		{"null", `null`, Inbound{}, protocol.CodeInvalidJSON},
		{"a number", `5`, Inbound{}, protocol.CodeInvalidJSON},

		// Nothing relayed may be invalid UTF-8: a browser drops the
		// connection of every listener on such a text frame.
		{"invalid UTF-8 in msg", "{\"type\":\"broadcast\",\"msg\":\"a\xffb\"}", Inbound{}, protocol.CodeInvalidJSON},
		{"invalid UTF-8 in data", "{\"type\":\"broadcast\",\"msg\":1,\"data\":[\"\xc3\"]}", Inbound{}, protocol.CodeInvalidJSON},
		{"invalid UTF-8 in a key", "{\"type\":\"broadcast\",\"msg\":{\"\xff\":1}}", Inbound{}, protocol.CodeInvalidJSON},
		{"invalid UTF-8 in user_type", "{\"type\":\"hello\",\"user_type\":\"\xff\"}", Inbound{}, protocol.CodeInvalidJSON},
		{"an encoded surrogate in msg", "{\"type\":\"broadcast\",\"msg\":\"\xed\xa0\x80\"}", Inbound{}, protocol.CodeInvalidJSON},
		// Lone surrogate escapes in what is relayed verbatim are refused,
		// as in chat data; a pair is one character.
		{"a lone surrogate in msg", `{"type":"broadcast","msg":"\ud800"}`, Inbound{}, protocol.CodeInvalidMsg},
		{"a lone surrogate in data", `{"type":"broadcast","msg":1,"data":{"\udc00":1}}`, Inbound{}, protocol.CodeInvalidMsg},
		{"a surrogate pair in msg", `{"type":"broadcast","msg":"\ud83d\ude00"}`, Inbound{Type: KindBroadcast, Msg: json.RawMessage(`"\ud83d\ude00"`)}, ""},
		// What only a store refuses passes: nothing of a session is stored.
		{"a NUL escape in msg", `{"type":"broadcast","msg":"a\u0000"}`, Inbound{Type: KindBroadcast, Msg: json.RawMessage(`"a\u0000"`)}, ""},
		{"a huge number in data", `{"type":"broadcast","msg":1,"data":1e999999}`, Inbound{Type: KindBroadcast, Msg: json.RawMessage(`1`), Data: json.RawMessage(`1e999999`)}, ""},
		{"not JSON", `hello`, Inbound{}, protocol.CodeInvalidJSON},
		{"truncated", `{"type":"ping"`, Inbound{}, protocol.CodeInvalidJSON},
		{"an array", `[1,2]`, Inbound{}, protocol.CodeInvalidJSON},
		{"a string", `"ping"`, Inbound{}, protocol.CodeInvalidJSON},
		{"empty", ``, Inbound{}, protocol.CodeInvalidJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode([]byte(tt.frame))
			if tt.code != "" {
				var se *protocol.Error
				require.ErrorAs(t, err, &se)
				assert.Equal(t, tt.code, se.Code)
				assert.NotEmpty(t, se.Message)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestValidID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"11", true},
		{"a-b_c.d:e", true},
		{strings.Repeat("x", 128), true},
		{strings.Repeat("x", 129), false},
		{"", false},
		{"a b", false},
		{"a/b", false},
		{"ü", false},
		{"a%20", false},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, ValidID(tt.id), "%q", tt.id)
	}
}

func TestEncodeSessionMessage(t *testing.T) {
	tests := []struct {
		name      string
		from      ports.Member
		msg, data string
		want      string
	}{
		{"no data", ports.Member{UserType: "admin", ClientType: "web"}, `"hello"`, "", `{"type":"session_message","user_type":"admin","client_type":"web","msg":"hello","data":null}`},
		{"no client type", ports.Member{UserType: "admin"}, `1`, `{"a":[1]}`, `{"type":"session_message","user_type":"admin","client_type":null,"msg":1,"data":{"a":[1]}}`},
		{"escaped strings", ports.Member{UserType: "a\"<b>\n", ClientType: "ü"}, `"x"`, "", `{"type":"session_message","user_type":"a\"\u003cb\u003e\n","client_type":"ü","msg":"x","data":null}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var data json.RawMessage
			if tt.data != "" {
				data = json.RawMessage(tt.data)
			}
			got := EncodeSessionMessage(tt.from, json.RawMessage(tt.msg), data)
			assert.JSONEq(t, tt.want, string(got))
			assert.True(t, json.Valid(got))
		})
	}
}

func TestEncodePresenceIsSortedAndCounts(t *testing.T) {
	got := EncodePresence("s", []ports.Member{
		{ConnectionID: "b", UserType: "agent"},
		{ConnectionID: "a", UserType: "admin", ClientType: "web"},
	})
	assert.JSONEq(t, `{"type":"presence","session_id":"s","count":2,"connections":[
		{"connection_id":"a","user_type":"admin","client_type":"web"},
		{"connection_id":"b","user_type":"agent","client_type":null}]}`, string(got))
	assert.JSONEq(t, `{"type":"presence","session_id":"s","count":0,"connections":[]}`, string(EncodePresence("s", nil)))
}

// FuzzDecode checks that no frame makes the decoder panic, that every
// refusal carries a known code, that a frame that is not UTF-8 is refused,
// and that whatever is accepted is bounded and relays as valid UTF-8 JSON
// that a client reads back to the very values sent.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"type":"hello","user_type":"admin","client_type":"web"}`,
		`{"type":"broadcast","msg":"hello","data":{"a":[1,2,{"b":null}]}}`,
		`{"type":"presence"}`, `{"type":"ping"}`, `{"type":"hello","user_type":7}`,
		`{"type":"broadcast","msg":"\ud800"}`, `[]`, `null`, `{"type":"hello","user_type":"\u0000"}`,
		"{\"type\":\"broadcast\",\"msg\":\"a\xffb\"}", `{"type":"broadcast","msg":"\ud83d\ude00","data":"\\ud800"}`,
		`{"type":"hello","user_type":"a","presence_events":true,"presence_key":"k:1"}`, `{"type":"hello","user_type":"a","presence_events":1,"presence_key":""}`,
		`{"type":5}`, `{"type":null}`, `{}`, `{"type":"broadcast","msg":1e999999,"data":" \u2028"}`,
		`{"type":"hello","user_type":"a","since":{"offset":17,"epoch":"e1f0-3"}}`,
		`{"type":"hello","user_type":"a","since":{"offset":-0,"epoch":"e"}}`,
		`{"type":"hello","user_type":"a","since":{"offset":18446744073709551616,"epoch":"e"}}`,
		`{"type":"hello","user_type":"a","since":{"offset":1,"epoch":"\u0065"}}`,
	} {
		f.Add([]byte(s))
	}
	codes := map[string]bool{protocol.CodeInvalidJSON: true, protocol.CodeInvalidMsg: true, protocol.CodeUnknownType: true}
	f.Fuzz(func(t *testing.T, frame []byte) {
		in, err := Decode(frame)
		if err != nil {
			var se *protocol.Error
			if !errors.As(err, &se) || !codes[se.Code] || se.Message == "" || !utf8.ValidString(se.Message) {
				t.Fatalf("refusal without a known code and words: %v", err)
			}
			return
		}
		if !utf8.Valid(frame) {
			t.Fatalf("accepted a frame that is not UTF-8: %q", frame)
		}
		switch in.Type {
		case KindHello:
			if in.UserType == "" || utf8.RuneCountInString(in.UserType) > MaxUserTypeLen || utf8.RuneCountInString(in.ClientType) > MaxClientType {
				t.Fatalf("hello out of bounds: %q %q", in.UserType, in.ClientType)
			}
			if in.Since != nil && (in.Since.Offset > MaxOffset || !wire.ValidID(in.Since.Epoch, MaxEpochLen)) {
				t.Fatalf("since out of bounds: %+v", *in.Since)
			}
			if in.PresenceKey != "" && !wire.ValidID(in.PresenceKey, MaxPresenceKeyLen) {
				t.Fatalf("presence_key out of bounds: %q", in.PresenceKey)
			}
			m := ports.Member{ConnectionID: "c", UserType: in.UserType, ClientType: in.ClientType, PresenceKey: in.PresenceKey}
			if out := EncodePresence("s", []ports.Member{m}); !json.Valid(out) || !utf8.Valid(out) {
				t.Fatalf("invalid presence JSON %q", out)
			}
			if out := EncodePresenceState("s", []ports.Member{m}, 1, false); !json.Valid(out) || !utf8.Valid(out) {
				t.Fatalf("invalid presence_state JSON %q", out)
			}
		case KindBroadcast:
			if in.Msg == nil || wire.IsNull(in.Data) && in.Data != nil {
				t.Fatalf("msg %q, data %q", in.Msg, in.Data)
			}
			out := EncodeSessionMessage(ports.Member{UserType: "u"}, in.Msg, in.Data)
			if !json.Valid(out) || wire.ValidJSONUnicode(out) != nil {
				t.Fatalf("session_message a browser cannot read: %q", out)
			}
			// A listener reads back exactly what was sent.
			var back struct{ Msg, Data json.RawMessage }
			if err := json.Unmarshal(out, &back); err != nil {
				t.Fatal(err)
			}
			want := in.Data
			if want == nil {
				want = json.RawMessage("null")
			}
			if !bytes.Equal(back.Msg, in.Msg) || !bytes.Equal(back.Data, want) {
				t.Fatalf("sent msg %q data %q, read %q %q", in.Msg, in.Data, back.Msg, back.Data)
			}
			// And sending it again is accepted alike.
			again := append(append(append(append([]byte(`{"type":"broadcast","msg":`), in.Msg...), `,"data":`...), want...), '}')
			in2, err := Decode(again)
			if err != nil || !bytes.Equal(in2.Msg, in.Msg) || !bytes.Equal(in2.Data, in.Data) {
				t.Fatalf("%q decodes as %+v, %v", again, in2, err)
			}
		case KindPresence, KindPing:
		default:
			t.Fatalf("accepted unknown type %q", in.Type)
		}
	})
}
