package conversation

import "github.com/wsserver/wsserver/ports"

// verdicts is what the guardrail decided during a run: the sentence that
// stopped the last stream, every sentence it rejected, the rewrites asked
// for since, and the error of a guardrail that could not decide.
type verdicts struct {
	rewrites   int
	rejected   *rejection // the sentence that stopped the last stream
	rejections []rejection
	err        error // the guardrail could not decide
}

// halted reports whether the stream under way must stop.
func (v *verdicts) halted() bool { return v.rejected != nil || v.err != nil }

func (v *verdicts) reject(text, reason string) {
	rej := rejection{Text: text, Reason: reason}
	v.rejected = &rej
	v.rejections = append(v.rejections, rej)
}

// rewrite starts a rewrite of the rejected sentence, after said: the
// rejection is handed to the model and forgotten.
func (v *verdicts) rewrite(said string) *ports.Rewrite {
	v.rewrites++
	rw := &ports.Rewrite{Said: said, Rejected: v.rejected.Text, Reason: v.rejected.Reason}
	v.rejected = nil
	return rw
}

// giveUp forgets the rejected sentence and returns why it was rejected:
// no rewrite is left.
func (v *verdicts) giveUp() string {
	reason := v.rejected.Reason
	v.rejected = nil
	return reason
}

// rejection is a text that failed the guardrail. It never reaches the
// client.
type rejection struct {
	Text   string `json:"text"`
	Reason string `json:"reason"`
}
