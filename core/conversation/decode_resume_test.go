package conversation_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/core/protocol"
)

func TestDecodeResume(t *testing.T) {
	resume := func(r conversation.ResumeRequest) conversation.Inbound {
		return conversation.Inbound{Type: conversation.TypeResume, Resume: r}
	}
	tests := []struct {
		name, in string
		want     conversation.Inbound
		code     string
	}{
		{"all fields", `{"type":"resume","thread_id":"t1","message_id":"m-1","seq":42,"epoch":"e.1"}`,
			resume(conversation.ResumeRequest{ThreadID: "t1", MessageID: "m-1", Seq: 42, Epoch: "e.1"}), ""},
		{"the thread alone", `{"type":"resume","thread_id":"t1"}`, resume(conversation.ResumeRequest{ThreadID: "t1"}), ""},
		{"nulls are absent", `{"type":"resume","thread_id":"t1","message_id":null,"seq":null,"epoch":null}`, resume(conversation.ResumeRequest{ThreadID: "t1"}), ""},
		{"seq 0", `{"type":"resume","thread_id":"t1","seq":0}`, resume(conversation.ResumeRequest{ThreadID: "t1"}), ""},
		{"the largest seq", `{"type":"resume","thread_id":"t1","seq":9007199254740991}`, resume(conversation.ResumeRequest{ThreadID: "t1", Seq: 1<<53 - 1}), ""},

		{"no thread", `{"type":"resume","seq":1}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"a bad thread", `{"type":"resume","thread_id":"a b"}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"a numeric thread", `{"type":"resume","thread_id":1}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"a bad message id", `{"type":"resume","thread_id":"t1","message_id":"x/y"}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"a long message id", `{"type":"resume","thread_id":"t1","message_id":"` + strings.Repeat("m", 129) + `"}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"a negative seq", `{"type":"resume","thread_id":"t1","seq":-1}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"a fractional seq", `{"type":"resume","thread_id":"t1","seq":1.5}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"an exponent seq", `{"type":"resume","thread_id":"t1","seq":1e3}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"a string seq", `{"type":"resume","thread_id":"t1","seq":"4"}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"a seq too large", `{"type":"resume","thread_id":"t1","seq":9007199254740992}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"a numeric epoch", `{"type":"resume","thread_id":"t1","epoch":5}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"an odd epoch", `{"type":"resume","thread_id":"t1","epoch":"a\nb"}`, conversation.Inbound{}, protocol.CodeInvalidMsg},

		{"a resumable chat", `{"type":"chat","message":"hi","data":[],"resumable":true}`,
			conversation.Inbound{Type: conversation.TypeChat, Chat: conversation.Chat{Message: "hi", Channel: "web", Data: []byte(`[]`), Resumable: true}}, ""},
		{"resumable false", `{"type":"chat","message":"hi","data":[],"resumable":false}`,
			conversation.Inbound{Type: conversation.TypeChat, Chat: conversation.Chat{Message: "hi", Channel: "web", Data: []byte(`[]`)}}, ""},
		{"resumable not a boolean", `{"type":"chat","message":"hi","data":[],"resumable":1}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
		{"resumable a string", `{"type":"chat","message":"hi","data":[],"resumable":"true"}`, conversation.Inbound{}, protocol.CodeInvalidMsg},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := conversation.DecodeChat([]byte(tt.in), 0)
			if tt.code == "" {
				require.NoError(t, err)
				assert.Equal(t, tt.want, got)
				return
			}
			var pe *protocol.Error
			require.ErrorAs(t, err, &pe)
			assert.Equal(t, tt.code, pe.Code, pe.Message)
		})
	}
}
