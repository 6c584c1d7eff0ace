package conversation

import (
	"errors"

	"github.com/wsserver/wsserver/core/protocol"
)

// ErrThreadBusy means another answer is streaming on the thread, on this
// instance or another. Thread locks return it; clients get thread_busy.
var ErrThreadBusy = &protocol.Error{Code: protocol.CodeThreadBusy, Message: "another answer is streaming on this thread; wait for its end"}

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
// the client was sent protocol.CodeNotSaved. The Result is still complete (an
// escalated run says Escalated).
var ErrTurnNotSaved = errors.New("conversation: the turn was not saved")

// ErrStoreUnavailable is returned by Run when the thread could not be
// loaded, the store failing or not answering within StoreTimeout; the
// client was sent protocol.CodeUnavailable.
var ErrStoreUnavailable = errors.New("conversation: the thread store is unavailable")

// ErrQueueFull is returned by ThreadQueue.Join when the thread's queue
// holds as many waiters as it may.
var ErrQueueFull = errors.New("conversation: too many chats wait for the thread")

// ErrTicketLost is returned by ThreadQueue.Keep for a ticket that is no
// longer in the queue: it expired.
var ErrTicketLost = errors.New("conversation: the queue ticket expired")

// ErrWaitersAhead is returned by ThreadGate.TakeTurn when another chat's
// ticket heads the thread's queue: the thread is that chat's first.
var ErrWaitersAhead = errors.New("conversation: other chats wait for the thread first")
