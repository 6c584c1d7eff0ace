package conversation_test

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/core/protocol"
	"github.com/wsserver/wsserver/core/session"
	"github.com/wsserver/wsserver/core/wire"
)

func TestDecodeChat(t *testing.T) {
	chat := func(c conversation.Chat) conversation.Inbound {
		return conversation.Inbound{Type: conversation.TypeChat, Chat: c}
	}
	tests := []struct {
		name  string
		frame string
		want  conversation.Inbound
		code  string
	}{
		{"the demo chat", `{"type":"chat","message":"Hello, how can you help?","thread_id":"optional","channel":"web","data":[]}`,
			chat(conversation.Chat{Message: "Hello, how can you help?", ThreadID: "optional", Channel: "web", Data: json.RawMessage(`[]`)}), ""},
		{"channel defaults to web", `{"type":"chat","message":"hi","data":{"a":1}}`,
			chat(conversation.Chat{Message: "hi", Channel: "web", Data: json.RawMessage(`{"a":1}`)}), ""},
		{"empty thread and channel are absent", `{"type":"chat","message":"hi","thread_id":"","channel":"","data":0}`,
			chat(conversation.Chat{Message: "hi", Channel: "web", Data: json.RawMessage(`0`)}), ""},
		{"null thread", `{"type":"chat","message":"hi","thread_id":null,"data":false}`,
			chat(conversation.Chat{Message: "hi", Channel: "web", Data: json.RawMessage(`false`)}), ""},
		{"another channel needs no data", `{"type":"chat","message":"hi","channel":"whatsapp"}`,
			chat(conversation.Chat{Message: "hi", Channel: "whatsapp"}), ""},
		{"another channel with null data", `{"type":"chat","message":"hi","channel":"sms","data":null}`,
			chat(conversation.Chat{Message: "hi", Channel: "sms"}), ""},
		{"a thread id of 128 characters", `{"type":"chat","message":"hi","thread_id":"` + strings.Repeat("a", 128) + `","data":[]}`,
			chat(conversation.Chat{Message: "hi", ThreadID: strings.Repeat("a", 128), Channel: "web", Data: json.RawMessage(`[]`)}), ""},
		{"a message of the maximum length", `{"type":"chat","message":"` + strings.Repeat("ü", 30) + `","data":[]}`,
			chat(conversation.Chat{Message: strings.Repeat("ü", 30), Channel: "web", Data: json.RawMessage(`[]`)}), ""},
		{"multitask enqueue", `{"type":"chat","message":"hi","data":[],"multitask":"enqueue"}`,
			chat(conversation.Chat{Message: "hi", Channel: "web", Data: json.RawMessage(`[]`), Multitask: conversation.MultitaskEnqueue}), ""},
		{"multitask interrupt", `{"type":"chat","message":"hi","data":[],"multitask":"interrupt"}`,
			chat(conversation.Chat{Message: "hi", Channel: "web", Data: json.RawMessage(`[]`), Multitask: conversation.MultitaskInterrupt}), ""},
		{"multitask rollback", `{"type":"chat","message":"hi","data":[],"multitask":"rollback"}`,
			chat(conversation.Chat{Message: "hi", Channel: "web", Data: json.RawMessage(`[]`), Multitask: conversation.MultitaskRollback}), ""},
		{"multitask reject", `{"type":"chat","message":"hi","data":[],"multitask":"reject"}`,
			chat(conversation.Chat{Message: "hi", Channel: "web", Data: json.RawMessage(`[]`)}), ""},
		{"multitask null and empty are reject", `{"type":"chat","message":"hi","data":[],"multitask":null}`,
			chat(conversation.Chat{Message: "hi", Channel: "web", Data: json.RawMessage(`[]`)}), ""},
		{"multitask empty is reject", `{"type":"chat","message":"hi","data":[],"multitask":""}`,
			chat(conversation.Chat{Message: "hi", Channel: "web", Data: json.RawMessage(`[]`)}), ""},
		{"ping", `{"type":"ping"}`, conversation.Inbound{Type: conversation.TypePing}, ""},
		{"cancel", `{"type":"cancel","message":7}`, conversation.Inbound{Type: conversation.TypeCancel}, ""},
		{"cancel of a thread", `{"type":"cancel","thread_id":"t-1:a"}`, conversation.Inbound{Type: conversation.TypeCancel, ThreadID: "t-1:a"}, ""},
		{"cancel with an empty or null thread", `{"type":"cancel","thread_id":null}`, conversation.Inbound{Type: conversation.TypeCancel}, ""},
		{"cancel of a bad thread id", `{"type":"cancel","thread_id":"a/b"}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"cancel of a numeric thread id", `{"type":"cancel","thread_id":5}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"cancel of a long thread id", `{"type":"cancel","thread_id":"` + strings.Repeat("a", 129) + `"}`, conversation.Inbound{}, protocol.CodeInvalidMsg},

		{"web without data", `{"type":"chat","message":"hi"}`, conversation.Inbound{}, protocol.CodeDataRequired},
		{"web with null data", `{"type":"chat","message":"hi","channel":"web","data":null}`, conversation.Inbound{}, protocol.CodeDataRequired},
		{"no message", `{"type":"chat","data":[]}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"null message", `{"type":"chat","message":null,"data":[]}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"empty message", `{"type":"chat","message":"","data":[]}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"blank message", `{"type":"chat","message":" \n\t ","data":[]}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"message too long", `{"type":"chat","message":"` + strings.Repeat("ü", 31) + `","data":[]}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"numeric message", `{"type":"chat","message":7,"data":[]}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"bad thread id", `{"type":"chat","message":"hi","thread_id":"a/b","data":[]}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"long thread id", `{"type":"chat","message":"hi","thread_id":"` + strings.Repeat("a", 129) + `","data":[]}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"numeric thread id", `{"type":"chat","message":"hi","thread_id":5,"data":[]}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"bad channel", `{"type":"chat","message":"hi","channel":"we b","data":[]}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"numeric channel", `{"type":"chat","message":"hi","channel":1,"data":[]}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"unknown multitask", `{"type":"chat","message":"hi","data":[],"multitask":"queue"}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"multitask in capitals", `{"type":"chat","message":"hi","data":[],"multitask":"ENQUEUE"}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"numeric multitask", `{"type":"chat","message":"hi","data":[],"multitask":1}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"multitask list", `{"type":"chat","message":"hi","data":[],"multitask":["enqueue"]}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"no type", `{"message":"hi","data":[]}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"numeric type", `{"type":1}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"unknown type", `{"type":"shout"}`, conversation.Inbound{}, protocol.CodeUnknownType},
		{"not JSON", `hello`, conversation.Inbound{}, protocol.CodeInvalidJSON},
		{"truncated", `{"type":"chat"`, conversation.Inbound{}, protocol.CodeInvalidJSON},
		{"an array", `[1]`, conversation.Inbound{}, protocol.CodeInvalidJSON},
		{"null", ` null`, conversation.Inbound{}, protocol.CodeInvalidJSON},
		{"empty", ``, conversation.Inbound{}, protocol.CodeInvalidJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := conversation.DecodeChat([]byte(tt.frame), 30)
			if tt.code != "" {
				var ce *protocol.Error
				require.ErrorAs(t, err, &ce)
				assert.Equal(t, tt.code, ce.Code)
				assert.NotEmpty(t, ce.Message)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestDecodeChatDefaultLimit(t *testing.T) {
	_, err := conversation.DecodeChat([]byte(`{"type":"chat","message":"`+strings.Repeat("a", 8000)+`","data":[]}`), 0)
	require.NoError(t, err)
	_, err = conversation.DecodeChat([]byte(`{"type":"chat","message":"`+strings.Repeat("a", 8001)+`","data":[]}`), 0)
	require.Error(t, err)
}

func TestThreadFor(t *testing.T) {
	newID := func() string { return "new" }
	assert.Equal(t, "asked", conversation.ThreadFor("asked", "current", newID))
	assert.Equal(t, "current", conversation.ThreadFor("", "current", newID))
	assert.Equal(t, "new", conversation.ThreadFor("", "", newID))
}

func FuzzDecodeChat(f *testing.F) {
	for _, s := range []string{
		`{"type":"chat","message":"Hello, how can you help?","thread_id":"optional","channel":"web","data":[]}`,
		`{"type":"chat","message":"hi","channel":"sms"}`,
		`{"type":"chat","message":"  ","data":[]}`,
		`{"type":"chat","message":"hi","thread_id":"a:b.c-d_e","data":null}`,
		`{"type":"ping"}`,
		`{"type":"cancel"}`,
		`{"type":"cancel","thread_id":"t-1"}`,
		`{"type":"resume","thread_id":"t-1","message_id":"m","seq":3,"epoch":"e"}`,
		`{"type":"resume","thread_id":"t-1","seq":-0.0e1}`,
		`{"type":"chat","message":"hi","data":[],"resumable":true}`,
		`{"type":"cancel","thread_id":{"x":1}}`,
		`{"type":"chat","message":"\u00fc\ud83d\ude00","data":{"k":[1,2,{"x":null}]}}`,
		`{"TYPE":"chat","Message":"case","DATA":1}`,
		`{"type":"chat","message":"dup","message":"again","data":[]}`,
		`[]`, `null`, `"chat"`, `{`, ``,
		`{"type":"chat","message":"hi","data":"\ud800"}`,
		`{"type":"chat","message":"hi","data":["\\u0000",1e-16383]}`,
		"{\"type\":\"chat\",\"message\":\"h\xffi\",\"data\":[]}",
		`{"type":"chat","message":"hi","data":1e131072}`,
		`{"type":"chat","message":"hi","data":[],"multitask":"enqueue"}`,
		`{"type":"chat","message":"hi","data":[],"multitask":"rollback","thread_id":"t"}`,
		`{"type":"chat","message":"hi","data":[],"multitask":"interrupt "}`,
		`{"type":"chat","message":"hi","data":[],"multitask":{"mode":"enqueue"}}`,
		`{"type":"chat","message":"hi","channel":"sms","multitask":"\u0065nqueue"}`,
	} {
		f.Add([]byte(s))
	}
	const maxChars = 50
	codes := map[string]bool{
		protocol.CodeInvalidJSON: true, protocol.CodeUnknownType: true,
		protocol.CodeInvalidMsg: true, protocol.CodeDataRequired: true,
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		in, err := conversation.DecodeChat(frame, maxChars)
		if err != nil {
			var ce *protocol.Error
			require.ErrorAs(t, err, &ce)
			assert.True(t, codes[ce.Code], "code %q", ce.Code)
			assert.NotEmpty(t, ce.Message)
			assert.True(t, utf8.ValidString(ce.Message))
			return
		}
		switch in.Type {
		case conversation.TypePing, conversation.TypeCancel:
			assert.Equal(t, conversation.Chat{}, in.Chat)
			return
		case conversation.TypeResume:
			r := in.Resume
			assert.True(t, conversation.ValidThreadID(r.ThreadID), "thread %q", r.ThreadID)
			assert.GreaterOrEqual(t, r.Seq, int64(0))
			assert.True(t, utf8.ValidString(r.MessageID) && utf8.ValidString(r.Epoch))
			return
		case conversation.TypeChat:
		default:
			t.Fatalf("type %q", in.Type)
		}
		c := in.Chat
		assert.NotEmpty(t, strings.TrimSpace(c.Message))
		assert.LessOrEqual(t, utf8.RuneCountInString(c.Message), maxChars)
		assert.True(t, c.ThreadID == "" || conversation.ValidThreadID(c.ThreadID), "thread %q", c.ThreadID)
		assert.NotEmpty(t, c.Channel)
		assert.LessOrEqual(t, c.Multitask, conversation.MultitaskRollback)
		// Everything accepted is storable: valid UTF-8, no NUL, and data
		// that PostgreSQL jsonb keeps.
		require.True(t, utf8.Valid(frame), "accepted a frame that is not UTF-8")
		assert.True(t, utf8.ValidString(c.Message))
		assert.NotContains(t, c.Message, "\x00")
		if c.Data != nil {
			assert.True(t, json.Valid(c.Data))
			assert.NotEqual(t, "null", string(c.Data))
			require.NoError(t, wire.ValidJSONText(c.Data))
		}
		if c.Channel == conversation.DefaultChannel {
			assert.NotNil(t, c.Data, "web needs data")
		}
		// What was decoded, written again as a client would, decodes to
		// the same, data byte for byte.
		again := wire.AppendString([]byte(`{"type":"chat","message":`), c.Message)
		again = wire.AppendString(append(again, `,"thread_id":`...), c.ThreadID)
		again = wire.AppendString(append(again, `,"channel":`...), c.Channel)
		if c.Data != nil {
			again = append(append(again, `,"data":`...), c.Data...)
		}
		again = wire.AppendString(append(again, `,"multitask":`...), c.Multitask.String())
		if c.Resumable {
			again = append(again, `,"resumable":true`...)
		}
		in2, err := conversation.DecodeChat(append(again, '}'), maxChars)
		require.NoError(t, err, "%s", again)
		assert.Equal(t, c, in2.Chat)
	})
}

// TestDecodeChatRefusesWhatNoStoreKeeps: a chat whose message or data a
// thread store would refuse (PostgreSQL jsonb above all) is refused before
// its answer streams; otherwise the whole turn is lost at the checkpoint.
func TestDecodeChatRefusesWhatNoStoreKeeps(t *testing.T) {
	tests := []struct {
		name  string
		frame string
		code  string
		says  string // in the message
	}{
		{"a NUL in the message", `{"type":"chat","message":"a\u0000b","data":[]}`, protocol.CodeInvalidMsg, "NUL"},
		{"a NUL escape in data", `{"type":"chat","message":"hi","data":["a\u0000b"]}`, protocol.CodeInvalidMsg, "NUL"},
		{"a lone high surrogate in data", `{"type":"chat","message":"hi","data":"\ud800"}`, protocol.CodeInvalidMsg, "surrogate"},
		{"a lone low surrogate in a data key", `{"type":"chat","message":"hi","data":{"\udfff":1}}`, protocol.CodeInvalidMsg, "surrogate"},
		{"a high surrogate without its low one", `{"type":"chat","message":"hi","data":["\ud83d\u0041"]}`, protocol.CodeInvalidMsg, "surrogate"},
		{"a number beyond numeric", `{"type":"chat","message":"hi","data":[1e131072]}`, protocol.CodeInvalidMsg, "number"},
		{"a number with too many decimals", `{"type":"chat","message":"hi","data":{"n":1e-16384}}`, protocol.CodeInvalidMsg, "number"},
		// The frame is not UTF-8: refused whole, whichever field holds it.
		{"invalid UTF-8 in data", "{\"type\":\"chat\",\"message\":\"hi\",\"data\":[\"\xff\"]}", protocol.CodeInvalidJSON, "UTF-8"},
		{"invalid UTF-8 in the message", "{\"type\":\"chat\",\"message\":\"h\xffi\",\"data\":[]}", protocol.CodeInvalidJSON, "UTF-8"},
		{"an encoded surrogate in the message", "{\"type\":\"chat\",\"message\":\"\xed\xa0\x80\",\"data\":[]}", protocol.CodeInvalidJSON, "UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := conversation.DecodeChat([]byte(tt.frame), 0)
			var ce *protocol.Error
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, tt.code, ce.Code)
			assert.Contains(t, ce.Message, tt.says)
		})
	}
}

// TestDecodeChatKeepsWhatStoresKeep: what looks like a refused value but
// is not one passes untouched.
func TestDecodeChatKeepsWhatStoresKeep(t *testing.T) {
	for _, data := range []string{
		`["\\u0000"]`,    // a backslash, then the letters u0000
		`"\ud83d\ude00"`, // a surrogate pair: one character
		`{"n":[1e131071,1e-16383,-0.5]}`,
		`"\ufffd"`,
	} {
		frame := `{"type":"chat","message":"hi","data":` + data + `}`
		in, err := conversation.DecodeChat([]byte(frame), 0)
		if assert.NoError(t, err, frame) {
			assert.Equal(t, data, string(in.Chat.Data))
		}
	}
}

// TestDecodersAgree: the chat and session endpoints refuse a frame that is
// not a message of theirs with the same code and words, one rule for both:
// invalid_json when it is not UTF-8, not JSON, or not a JSON object;
// invalid_message when its type is absent, null or not a string;
// unknown_type when its type is a string naming no message.
func TestDecodersAgree(t *testing.T) {
	tests := []struct {
		frame string
		code  string
	}{
		{``, protocol.CodeInvalidJSON},
		{` `, protocol.CodeInvalidJSON},
		{`hello`, protocol.CodeInvalidJSON},
		{`{`, protocol.CodeInvalidJSON},
		{`{"type":"ping"}x`, protocol.CodeInvalidJSON},
		{"\xff", protocol.CodeInvalidJSON},
		{"{\"type\":\"\xff\"}", protocol.CodeInvalidJSON},
		{"{\"type\":\"ping\",\"x\":\"\xc3\"}", protocol.CodeInvalidJSON},
		{`null`, protocol.CodeInvalidJSON},
		{` null `, protocol.CodeInvalidJSON},
		{`[]`, protocol.CodeInvalidJSON},
		{`[{"type":"ping"}]`, protocol.CodeInvalidJSON},
		{`5`, protocol.CodeInvalidJSON},
		{`"ping"`, protocol.CodeInvalidJSON},
		{`true`, protocol.CodeInvalidJSON},
		{`{}`, protocol.CodeInvalidMsg},
		{`{"type":null}`, protocol.CodeInvalidMsg},
		{`{"type":5}`, protocol.CodeInvalidMsg},
		{`{"type":true}`, protocol.CodeInvalidMsg},
		{`{"type":{}}`, protocol.CodeInvalidMsg},
		{`{"type":["ping"]}`, protocol.CodeInvalidMsg},
		{`{"type":""}`, protocol.CodeUnknownType},
		{`{"type":"shout"}`, protocol.CodeUnknownType},
		{` {"type":"\ud800"} `, protocol.CodeUnknownType},
	}
	for _, tt := range tests {
		t.Run(tt.frame, func(t *testing.T) {
			_, cerr := conversation.DecodeChat([]byte(tt.frame), 0)
			_, serr := session.Decode([]byte(tt.frame))
			var ce *protocol.Error
			var se *protocol.Error
			require.ErrorAs(t, cerr, &ce)
			require.ErrorAs(t, serr, &se)
			assert.Equal(t, tt.code, ce.Code, "chat")
			assert.Equal(t, tt.code, se.Code, "session")
			assert.Equal(t, ce.Message, se.Message, "the same words on both")
		})
	}
}
