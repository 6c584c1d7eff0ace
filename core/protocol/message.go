package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"

	"github.com/wsserver/wsserver/core/wire"
)

// The refusals of DecodeMessage. They are shared: never modify them.
var (
	refuseNotUTF8    = &Error{CodeInvalidJSON, "the message is not valid UTF-8"}
	refuseNotJSON    = &Error{CodeInvalidJSON, "the message is not valid JSON"}
	refuseNotObject  = &Error{CodeInvalidJSON, "a message must be a JSON object"}
	refuseNoType     = &Error{CodeInvalidMsg, "type is required"}
	refuseTypeNotStr = &Error{CodeInvalidMsg, "type must be a string"}
)

// DecodeMessage decodes frame, one client message, into v, a pointer to a
// struct whose fields are all json.RawMessage, and returns the message's
// type, read from *typ (v's "type" field). It applies the one rule of both
// WebSocket endpoints, so that they refuse the same frame alike:
//   - invalid_json when the frame is not valid UTF-8 (a text frame must be,
//     RFC 6455 §8.1, and nothing that is not may be relayed or stored), not
//     JSON, or not a JSON object (null included);
//   - invalid_message when type is absent, null or not a string.
//
// Telling known types from unknown ones (unknown_type) is the caller's.
func DecodeMessage(frame []byte, v any, typ *json.RawMessage) (string, *Error) {
	if !utf8.Valid(frame) {
		return "", refuseNotUTF8
	}
	if err := json.Unmarshal(frame, v); err != nil {
		// With raw fields only, a type error is a frame that is no object.
		if _, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
			return "", refuseNotObject
		}
		return "", refuseNotJSON
	}
	if t := bytes.TrimLeft(frame, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return "", refuseNotObject // null decodes into a struct without error
	}
	if wire.IsNull(*typ) {
		return "", refuseNoType
	}
	s, ok := wire.String(*typ)
	if !ok {
		return "", refuseTypeNotStr
	}
	return s, nil
}
