package conversation

import (
	"time"

	"github.com/wsserver/wsserver/ports"
)

// turn is what a run saves when the graph is done, in one transaction
// (ports.Turn): the user's message, the answer, the checkpoints and the
// escalation, fenced by the lease's token.
type turn struct {
	fence int64 // the lease's fencing token

	user       ports.Message
	userStored bool // the user's message is part of the turn

	answerMsgID  string         // the answer's id, chosen when the run starts
	answerStored bool           // the answer is stored (false again when the save fails)
	answer       *ports.Message // saved with the turn

	checkpoints []ports.Checkpoint
	step        int // the next checkpoint's
	escalation  *ports.EscalationRecord
}

// answerID is the id of the stored answer, empty while none is stored.
func (t *turn) answerID() string {
	if !t.answerStored {
		return ""
	}
	return t.answerMsgID
}

// keepAnswer adds sent, what the client received, to the turn as the
// answer.
func (t *turn) keepAnswer(sent string, cancelled bool, now time.Time) {
	t.answer = &ports.Message{
		ID:        t.answerMsgID,
		Role:      ports.RoleAssistant,
		Content:   sent,
		CreatedAt: now,
		Cancelled: cancelled,
	}
	t.answerStored = true
}

// notSaved follows a save that failed: no answer is stored.
func (t *turn) notSaved() { t.answerStored = false }

// saved is the turn as the store saves it.
func (t *turn) saved(threadID, channel string) ports.Turn {
	st := ports.Turn{
		ThreadID:    threadID,
		Channel:     channel,
		Messages:    []ports.Message{t.user},
		Checkpoints: t.checkpoints,
		Escalation:  t.escalation,
		Fence:       t.fence,
	}
	if t.answer != nil {
		st.Messages = append(st.Messages, *t.answer)
	}
	return st
}
