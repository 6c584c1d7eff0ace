package protocol

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/core/wire"
)

// encodeErrorBefore is EncodeError as core/session and core/conversation
// each wrote it before the two moved here, kept to prove that the bytes
// sent did not change.
func encodeErrorBefore(code, message string) []byte {
	b := append([]byte(nil), `{"type":"error","code":`...)
	b = wire.AppendString(b, code)
	b = append(b, `,"message":`...)
	b = wire.AppendString(b, message)
	return append(b, '}')
}

func TestEncodeError(t *testing.T) {
	tests := []struct {
		code, message string
		want          string
	}{
		{CodeInvalidJSON, `bad "x"`, `{"type":"error","code":"invalid_json","message":"bad \"x\""}`},
		{CodeRateLimited, "too many messages; slow down", `{"type":"error","code":"rate_limited","message":"too many messages; slow down"}`},
		{CodeNotSaved, "line\nbreak\ttab\\", `{"type":"error","code":"not_saved","message":"line\nbreak\ttab\\"}`},
		{CodeUnknownType, "unknown message type \"caf\u00e9\u2028\"", `{"type":"error","code":"unknown_type","message":"unknown message type \"café\u2028\""}`},
		{CodeInternal, "\xff\x00", `{"type":"error","code":"internal","message":"\ufffd\u0000"}`},
		{"", "", `{"type":"error","code":"","message":""}`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			got := EncodeError(tt.code, tt.message)
			assert.Equal(t, tt.want, string(got))
			assert.Equal(t, string(encodeErrorBefore(tt.code, tt.message)), string(got))
			assert.Equal(t, "prefix:"+tt.want, string(AppendError([]byte("prefix:"), tt.code, tt.message)))
			var m map[string]string
			require.NoError(t, json.Unmarshal(got, &m))
			assert.Equal(t, "error", m["type"])
		})
	}
}

// TestPong holds the pong to its exact bytes, not only to equal JSON: a
// client of the original may compare the frame as text.
func TestPong(t *testing.T) {
	want := []byte(`{"type":"pong"}`)
	assert.True(t, bytes.Equal(want, Pong), "Pong = %s, want %s", Pong, want)
}

func TestErrorText(t *testing.T) {
	err := &Error{Code: CodeThreadBusy, Message: "wait"}
	assert.Equal(t, "thread_busy: wait", err.Error())
}
