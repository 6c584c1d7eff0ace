package conversation_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/core/conversation"
)

func TestSentences(t *testing.T) {
	tests := []struct {
		name        string
		pieces      []string
		wantChecked []string
		wantTokens  []string // nil means the pieces as they came
	}{
		{"a decimal point ends nothing", []string{"3.14", " is", " pi."}, []string{"3.14 is pi."}, nil},
		{"a piece holding two sentences is cut between them", []string{"Hello. World."}, []string{"Hello.", " World."}, []string{"Hello.", " World."}},
		{"the end mark waits for a space", []string{"Hello.", "World."}, []string{"Hello.World."}, nil},
		{"a line break ends a line", []string{"- one\n", "- two"}, []string{"- one\n", "- two"}, nil},
		{"a line break inside a piece", []string{"- one\n- two"}, []string{"- one\n", "- two"}, []string{"- one\n", "- two"}},
		{"paragraphs", []string{"First.\n\n", "Second."}, []string{"First.", "\n\nSecond."}, []string{"First.", "\n\n", "Second."}},
		{"closing quotes stay with their sentence", []string{`He said "hi."`, " Then", " left."}, []string{`He said "hi."`, " Then left."}, nil},
		{"several end marks", []string{"Wait...", " what?!", " Yes."}, []string{"Wait...", " what?!", " Yes."}, nil},
		{"CJK end marks need no space", []string{"你好。再见。"}, []string{"你好。", "再见。"}, []string{"你好。", "再见。"}},
		{"spaces alone are not checked", []string{"  ", "\n"}, nil, nil},
		{"trailing spaces are sent unchecked", []string{"Done.", " "}, []string{"Done."}, nil},
		{"no end mark at all", []string{"just", " words"}, []string{"just words"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := newHarness([]script{{pieces: tt.pieces}}, false, 0)
			require.NoError(t, err)
			var s sink
			_, err = h.conv.Run(context.Background(), conversation.Request{ThreadID: thread, Message: "hi", Data: json.RawMessage(`[]`)}, s.emit)
			require.NoError(t, err)
			assert.Equal(t, tt.wantChecked, h.guard.checked)
			want := tt.wantTokens
			if want == nil {
				want = tt.pieces
			}
			assert.Equal(t, want, s.tokens())
			assert.Equal(t, strings.Join(tt.pieces, ""), strings.Join(s.tokens(), ""))
		})
	}
}
