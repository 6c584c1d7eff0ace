package conversation_test

import (
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/core/protocol"
	"github.com/wsserver/wsserver/ports"
)

func TestAppendEvent(t *testing.T) {
	tests := []struct {
		ev   conversation.Event
		want string
	}{
		{conversation.Event{Kind: conversation.EventStarted, ThreadID: "t1"},
			`{"type":"session_started","session_id":"t1","thread_id":"t1","connection_id":"c1"}`},
		{conversation.Event{Kind: conversation.EventToken, Content: " héllo \"x\"\n"},
			`{"type":"token","content":" héllo \"x\"\n"}`},
		{conversation.Event{Kind: conversation.EventEscalation, Reason: ports.ReasonGuardrail},
			`{"type":"escalation","should_escalate":true,"reason":"guardrail"}`},
		{conversation.Event{Kind: conversation.EventEnd, MessageID: "m1", Usage: ports.Usage{InputTokens: 12, OutputTokens: 3}},
			`{"type":"end","message_id":"m1","usage":{"input_tokens":12,"output_tokens":3},"cancelled":false}`},
		{conversation.Event{Kind: conversation.EventEnd, Cancelled: true},
			`{"type":"end","usage":{"input_tokens":0,"output_tokens":0},"cancelled":true}`},
		{conversation.Event{Kind: conversation.EventEnd, Cancelled: true, RolledBack: true, Usage: ports.Usage{InputTokens: 5, OutputTokens: 2}},
			`{"type":"end","usage":{"input_tokens":5,"output_tokens":2},"cancelled":true,"rolled_back":true}`},
		{conversation.Event{Kind: conversation.EventQueued, ThreadID: "t1", Position: 3},
			`{"type":"queued","thread_id":"t1","position":3}`},
		{conversation.Event{Kind: conversation.EventError, Code: "thread_busy", Message: "busy"},
			`{"type":"error","code":"thread_busy","message":"busy"}`},
	}
	for _, tt := range tests {
		got := conversation.AppendEvent([]byte("prefix:"), tt.ev, "c1")
		assert.Equal(t, "prefix:"+tt.want, string(got))
	}
	// An error event is the error message both endpoints send.
	for _, m := range []string{"x", "bad \"x\"\n", "caf\u00e9 \u2028 \xff"} {
		ev := conversation.Event{Kind: conversation.EventError, Code: protocol.CodeNotSaved, Message: m}
		assert.Equal(t, string(protocol.EncodeError(ev.Code, ev.Message)), string(conversation.AppendEvent(nil, ev, "c1")))
	}
}

func TestEncodeChatEvent(t *testing.T) {
	assert.JSONEq(t, `{"type":"chat_event","thread_id":"t1","event":{"kind":"user_message","content":"hi"}}`,
		string(conversation.EncodeChatEvent("t1", ports.ChatEvent{Kind: ports.ChatUserMessage, Content: "hi"})))
	assert.JSONEq(t, `{"type":"chat_event","thread_id":"t1","event":{"kind":"escalation","content":"asked","reason":"user_requested"}}`,
		string(conversation.EncodeChatEvent("t1", ports.ChatEvent{Kind: ports.ChatEscalation, Content: "asked", Reason: ports.ReasonUserRequested})))
}

// Token contents of every kind decode to themselves (invalid UTF-8 to
// U+FFFD, as encoding/json does).
func TestAppendEventStrings(t *testing.T) {
	odd := []string{"", "plain", "\x00\x1f\x7f", "\"\\/", "<&>", "\u2028\u2029", "ü€😀", "\xff\xfe", "a\xc3", "\t\r\n\b\f", "你好。"}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", " ", "\"", "\\", "\n", "\x01", "é", "😀", "\xff", "\u2028", "\xe2\x80"}
	for range 2000 {
		var b []byte
		for range rng.IntN(12) {
			b = append(b, alphabet[rng.IntN(len(alphabet))]...)
		}
		odd = append(odd, string(b))
	}
	for _, s := range odd {
		enc := conversation.AppendEvent(nil, conversation.Event{Kind: conversation.EventToken, Content: s}, "")
		var got struct{ Type, Content string }
		require.NoError(t, json.Unmarshal(enc, &got), "%q → %s", s, enc)
		var want string
		std, _ := json.Marshal(s)
		require.NoError(t, json.Unmarshal(std, &want))
		assert.Equal(t, want, got.Content, "%q", s)
	}
}
