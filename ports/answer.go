package ports

import "context"

// AnswerEntry is one released event of a resumable answer, as its log
// keeps it (issue 12, PROTOCOL.md §3.8).
type AnswerEntry struct {
	// Seq is a token's seq (1, 2, 3… contiguous in the answer); the final
	// entry's is the last token's (0 when the answer has none).
	Seq int64
	// Text is a token's content; empty on the final entry.
	Text string
	// Final, set on the answer's last entry only, holds the frames that
	// end it, encoded, one per line (escalation and end, or error).
	Final []byte
}

// AnswerKey names one answer's log.
type AnswerKey struct {
	ThreadID  string
	MessageID string
	// Epoch is the writer's: it names the log's continuity (the process's
	// start for an in-process log). A log that finds the answer's earlier
	// entries lost starts a new epoch instead, which a resume then sees
	// differ from the client's.
	Epoch string
}

// AnswerCatchUp is what Follow found of an answer when it joined it.
type AnswerCatchUp struct {
	// Found: the log knows the answer. When false nothing else is set.
	Found     bool
	MessageID string
	Epoch     string
	// Top is the highest seq logged; Done that the final entry is.
	Top  int64
	Done bool
	// Text is every token's text logged, in order: the snapshot.
	Text string
	// Complete: Entries are every entry after the seq asked for, in
	// order, none missing. False when some are gone (trimmed past the
	// log's bound, or lost): Entries is then empty.
	Complete bool
	Entries  []AnswerEntry
}

// AnswerLog keeps the released events of resumable answers for a while
// after their last one, so that a client that lost its socket resumes the
// answer on any instance: the events it missed, then the live ones.
type AnswerLog interface {
	// Append logs entries of the answer key, in order, after those logged
	// before (one writer per answer), and hands them to its followers. It
	// also makes the answer its thread's latest. Entries already logged
	// (a seq not above the top) are skipped, so a retry is harmless.
	Append(ctx context.Context, key AnswerKey, entries []AnswerEntry) error
	// Follow joins the answer messageID of threadID (the thread's latest
	// answer when messageID is empty): it returns what is logged after
	// seq after, and from then on hands deliver every entry logged after
	// those, in order, without gap or repeat, until stop is called (or
	// the final entry was delivered). deliver must not block.
	Follow(ctx context.Context, threadID, messageID string, after int64, deliver func(AnswerEntry)) (c AnswerCatchUp, stop func(), err error)
}
