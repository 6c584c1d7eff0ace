// Package protocol owns what the two WebSocket endpoints share on the wire
// (PROTOCOL.md §3 for /ws/chat/, §4 for /ws/session/<id>/, codes §6.1): the error message and
// its codes, the pong, and the rule that refuses a frame that is no message
// at all. What is an endpoint's own (hello, broadcast, presence; chat,
// cancel and the chat events) stays in core/session and core/conversation.
package protocol

import "github.com/wsserver/wsserver/core/wire"

// Error codes sent to clients in {"type":"error","code":..}. Both endpoints
// use the first five; the others name what only one endpoint does.
const (
	CodeInvalidJSON = "invalid_json"
	CodeInvalidMsg  = "invalid_message"
	CodeUnknownType = "unknown_type"
	CodeRateLimited = "rate_limited"
	CodeInternal    = "internal"
	// CodeUnavailable: a backend did not answer. On a session, the shared
	// channel layer (Redis) is away: only this instance was reached, or
	// presence could not be read. On a chat, the thread store or the
	// thread lock did not answer in time or failed; nothing of the chat
	// was stored. Try again later.
	CodeUnavailable = "unavailable"

	// CodeHelloRequired (sessions): the first message was not a valid
	// hello, or none came in time.
	CodeHelloRequired = "hello_required"

	// CodeDataRequired (chats): a chat on the web channel without data.
	CodeDataRequired = "data_required"
	// CodeThreadBusy (chats): another answer is streaming on the thread or
	// on the connection.
	CodeThreadBusy = "thread_busy"
	// CodeNotSaved (chats): the answer (or part of it) may have been sent,
	// but the turn could not be stored: neither the message nor the answer
	// is in the thread's history. Send the message again to have it kept.
	CodeNotSaved = "not_saved"
)

// Error is a refusal or failure the client is told about, with its code.
// The core returns it; the edge sends it with EncodeError.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Pong is the reply to {"type":"ping"} on either endpoint.
var Pong = []byte(`{"type":"pong"}`)

// EncodeError is {"type":"error","code":..,"message":..}.
func EncodeError(code, message string) []byte { return AppendError(nil, code, message) }

// AppendError appends {"type":"error","code":..,"message":..} to b without
// allocating beyond growing b.
func AppendError(b []byte, code, message string) []byte {
	b = append(b, `{"type":"error","code":`...)
	b = wire.AppendString(b, code)
	b = append(b, `,"message":`...)
	b = wire.AppendString(b, message)
	return append(b, '}')
}
