package protocol

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestDecodeMessage(t *testing.T) {
	tests := []struct {
		frame string
		typ   string
		code  string
	}{
		{`{"type":"ping"}`, "ping", ""},
		{" \t\r\n{\"type\":\"\"} ", "", ""},
		{`{"type":"x","other":[1]}`, "x", ""},
		{`{"type":"\ud800"}`, "\ufffd", ""}, // decoded strings never hold a lone surrogate
		{"\xff", "", CodeInvalidJSON},
		{"{\"type\":\"ping\",\"n\":\"\xed\xa0\x80\"}", "", CodeInvalidJSON},
		{``, "", CodeInvalidJSON},
		{`{"type":`, "", CodeInvalidJSON},
		{`{"type":"ping"} {}`, "", CodeInvalidJSON},
		{`null`, "", CodeInvalidJSON},
		{`[]`, "", CodeInvalidJSON},
		{`1`, "", CodeInvalidJSON},
		{`"ping"`, "", CodeInvalidJSON},
		{`{}`, "", CodeInvalidMsg},
		{`{"type":null}`, "", CodeInvalidMsg},
		{`{"type":1}`, "", CodeInvalidMsg},
		{`{"type":["ping"]}`, "", CodeInvalidMsg},
	}
	for _, tt := range tests {
		t.Run(tt.frame, func(t *testing.T) {
			var w struct {
				Type json.RawMessage `json:"type"`
			}
			typ, r := DecodeMessage([]byte(tt.frame), &w, &w.Type)
			if tt.code != "" {
				if assert.NotNil(t, r) {
					assert.Equal(t, tt.code, r.Code)
					assert.NotEmpty(t, r.Message)
				}
				return
			}
			assert.Nil(t, r)
			assert.Equal(t, tt.typ, typ)
		})
	}
}
