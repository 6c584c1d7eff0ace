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
	// CodeUnavailable: the thread store or the thread lock did not answer
	// in time or failed; nothing of the chat was stored. Try again later.
	CodeUnavailable = "unavailable"
	// CodeNotSaved: the answer (or part of it) may have been sent, but the
	// turn could not be stored: neither the message nor the answer is in
	// the thread's history. Send the message again to have it kept.
	CodeNotSaved = "not_saved"
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

// ErrFenced is returned by SaveTurn for a turn whose lease was taken over:
// a newer lease's turn was stored on the thread (ports.Turn.Fence).
var ErrFenced = errors.New("conversation: the thread was taken over by a newer lease")

// ErrUnstorable is returned by thread stores for a value no store can keep
// (see ports.ThreadStore): every store refuses the same values with it.
var ErrUnstorable = errors.New("conversation: the value cannot be stored")

// ErrTurnNotSaved is returned by Run when the turn could not be stored;
// the client was sent CodeNotSaved. The Result is still complete (an
// escalated run says Escalated).
var ErrTurnNotSaved = errors.New("conversation: the turn was not saved")

// ErrStoreUnavailable is returned by Run when the thread could not be
// loaded, the store failing or not answering within StoreTimeout; the
// client was sent CodeUnavailable.
var ErrStoreUnavailable = errors.New("conversation: the thread store is unavailable")
