package conversation

import "errors"

// Error codes sent to clients in {"type":"error","code":..} (SPEC §1).
const (
	CodeInvalidJSON  = "invalid_json"
	CodeUnknownType  = "unknown_type"
	CodeInvalidMsg   = "invalid_message"
	CodeDataRequired = "data_required"
	CodeThreadBusy   = "thread_busy"
	CodeRateLimited  = "rate_limited"
	CodeInternal     = "internal"
)

// Error is a refusal or failure the client is told about, with its SPEC §1
// code.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// ErrThreadBusy means another answer is streaming on the thread, on this
// instance or another. Thread locks return it; clients get thread_busy.
var ErrThreadBusy = &Error{Code: CodeThreadBusy, Message: "another answer is streaming on this thread; wait for its end"}

// ErrThreadNotFound is returned by thread stores for a thread that was
// never created.
var ErrThreadNotFound = errors.New("conversation: thread not found")

// ErrLeaseLost is returned by Lease.Renew when the lease expired or was
// released: another answer may be streaming on the thread.
var ErrLeaseLost = errors.New("conversation: thread lease lost")
