package conversation

import (
	"encoding/json"
	"strconv"

	"github.com/wsserver/wsserver/core/wire"
)

// TypeResume is a client's resume of an answer (PROTOCOL.md §3.9).
const TypeResume = "resume"

// Bounds of a resume's fields.
const (
	// MaxMessageIDLen bounds a message id a client names.
	MaxMessageIDLen = 128
	// MaxEpochLen bounds an epoch a client gives back.
	MaxEpochLen = 128
	// maxSeq is the largest seq a client may name: beyond, JSON numbers
	// lose integers in clients.
	maxSeq = 1<<53 - 1
)

// parseResumable reads a chat's optional "resumable": absent or null is
// false.
func parseResumable(raw json.RawMessage) (resumable, ok bool) {
	if wire.IsNull(raw) {
		return false, true
	}
	switch string(raw) {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	return false, false
}

// decodeResume reads {"type":"resume","thread_id":T,"message_id":M,
// "seq":n,"epoch":E}: thread_id required, the others optional.
func decodeResume(w wireChat) (Inbound, error) {
	var r ResumeRequest
	var ok bool
	if wire.IsNull(w.ThreadID) {
		return Inbound{}, invalid("a resume needs thread_id")
	}
	if r.ThreadID, ok = wire.String(w.ThreadID); !ok || !ValidThreadID(r.ThreadID) {
		return Inbound{}, invalid("thread_id must be 1 to 128 characters of A-Z a-z 0-9 _ - . :")
	}
	if !wire.IsNull(w.MessageID) {
		if r.MessageID, ok = wire.String(w.MessageID); !ok || r.MessageID != "" && !wire.ValidID(r.MessageID, MaxMessageIDLen) {
			return Inbound{}, invalid("message_id must be 1 to 128 characters of A-Z a-z 0-9 _ - . :")
		}
	}
	if !wire.IsNull(w.Seq) {
		n, err := strconv.ParseInt(string(w.Seq), 10, 64)
		if err != nil || n < 0 || n > maxSeq {
			return Inbound{}, invalid("seq must be a whole number from 0 (the last seq the client saw)")
		}
		r.Seq = n
	}
	if !wire.IsNull(w.Epoch) {
		if r.Epoch, ok = wire.String(w.Epoch); !ok || r.Epoch != "" && !wire.ValidID(r.Epoch, MaxEpochLen) {
			return Inbound{}, invalid("epoch must be the string session_started gave")
		}
	}
	return Inbound{Type: TypeResume, Resume: r}, nil
}
