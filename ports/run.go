package ports

import (
	"context"
	"errors"
)

// StopMode says what a run that is asked to stop does with its turn.
type StopMode string

// Stop modes (PROTOCOL.md §3.5; issue 12's multitask strategies).
const (
	// StopCancel is the client's cancel: the model stops, the part of the
	// answer already sent is stored marked cancelled, end says cancelled.
	StopCancel StopMode = "cancel"
	// StopInterrupt ends the answer for a newer chat on the same thread:
	// stored as StopCancel stores it, so that the newer chat sees it.
	StopInterrupt StopMode = "interrupt"
	// StopRollback ends the answer and stores nothing of its turn, neither
	// the user's message nor the partial answer: the thread is left as if
	// the turn never happened. end says rolled_back.
	StopRollback StopMode = "rollback"
)

// Valid reports whether m is one of the stop modes.
func (m StopMode) Valid() bool {
	switch m {
	case StopCancel, StopInterrupt, StopRollback:
		return true
	}
	return false
}

// ErrInvalidStopMode is returned by RunControl.Stop for a mode that is
// not one of the stop modes.
var ErrInvalidStopMode = errors.New("ports: invalid stop mode")

// RunControl routes a request to stop a thread's answer to whoever runs
// it, on any instance (issue 12: a cancel from any instance; interrupt and
// rollback of a busy thread). The instance that holds the thread's lock
// registers its run for as long as it runs; any instance may then ask it
// to stop.
//
// Delivery is at most once and best effort: a stop sent while no run is
// registered (or while its instance cannot be reached) is lost, and Stop
// reports it was not delivered, so that a caller that must see the thread
// free (interrupt, rollback) retries while the thread's lock is held.
type RunControl interface {
	// Register makes stop receive every request to stop threadID's run
	// until unregister is called. stop is given the request's mode; it
	// must not block, and may be called more than once (each request) and
	// from any goroutine. Register does not wait for the backend: the
	// returned live channel is closed once requests can reach stop (at
	// once in process). A second registration of the same thread (a run
	// whose lease was lost, and its successor) receives the requests too,
	// and unregistering one leaves the other. unregister is idempotent.
	Register(threadID string, stop func(StopMode)) (live <-chan struct{}, unregister func())
	// Stop asks the run of threadID, wherever it is registered, to stop
	// with mode. delivered reports whether a registered run received the
	// request; false when none is registered (no answer is streaming) or
	// none could be reached. An adapter may report false for a request
	// that did arrive (Redis Cluster): a run may receive a request again
	// when its caller retries. It may report true, for the moment a
	// shared backend takes to see it, for a run that just unregistered
	// (the run is not stopped: it is gone). An invalid mode is
	// ErrInvalidStopMode.
	Stop(ctx context.Context, threadID string, mode StopMode) (delivered bool, err error)
}
