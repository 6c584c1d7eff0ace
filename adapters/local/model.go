package local

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/wsserver/wsserver/ports"
)

var _ ports.ChatModel = (*Model)(nil)

// ModelConfig configures a Model.
type ModelConfig struct {
	// TokenDelay is the pause before each token after the first
	// (LOCAL_MODEL_TOKEN_DELAY). Zero streams as fast as the reader takes
	// them; negative is invalid.
	TokenDelay time.Duration
}

// Model is a deterministic chat model built into the binary: the same
// request always gets the same answer. It streams a readable answer that
// quotes the question and tells how long the thread is, one word at a
// time, so that the whole server can run and be measured with no cloud
// account.
type Model struct {
	cfg ModelConfig
}

// NewModel returns a local model.
func NewModel(cfg ModelConfig) (*Model, error) {
	if cfg.TokenDelay < 0 {
		return nil, errors.New("local: token delay must not be negative")
	}
	return &Model{cfg: cfg}, nil
}

// Stream sends the answer to req word by word (each word with the spaces
// before it), waiting TokenDelay between words. It stops at once when ctx
// ends or token returns an error.
func (m *Model) Stream(ctx context.Context, req ports.ChatRequest, token func(string) error) (ports.Reply, error) {
	answer := Answer(req)
	pieces := Tokens(answer)
	usage := ports.Usage{InputTokens: inputTokens(req)}
	var timer *time.Timer
	if m.cfg.TokenDelay > 0 {
		timer = time.NewTimer(m.cfg.TokenDelay)
		defer timer.Stop()
	}
	for i, p := range pieces {
		if timer != nil && i > 0 {
			timer.Reset(m.cfg.TokenDelay)
			select {
			case <-ctx.Done():
				return ports.Reply{Usage: usage}, ctx.Err()
			case <-timer.C:
			}
		} else if err := ctx.Err(); err != nil {
			return ports.Reply{Usage: usage}, err
		}
		if err := token(p); err != nil {
			return ports.Reply{Usage: usage}, err
		}
		usage.OutputTokens++
	}
	return ports.Reply{Stop: ports.StopEndTurn, Usage: usage}, nil
}

// Complete answers at once: a summary of the messages, a classification
// (ESCALATE or CONTINUE), or the chat answer of Stream.
func (m *Model) Complete(ctx context.Context, req ports.ChatRequest) (ports.Reply, error) {
	if err := ctx.Err(); err != nil {
		return ports.Reply{}, err
	}
	var text string
	switch req.Purpose {
	case ports.PurposeSummary:
		text = Summary(req.Messages)
	case ports.PurposeClassify:
		text = classify(req.Messages)
	default:
		text = Answer(req)
	}
	return ports.Reply{
		Text:  text,
		Stop:  ports.StopEndTurn,
		Usage: ports.Usage{InputTokens: inputTokens(req), OutputTokens: len(Tokens(text))},
	}, nil
}

// closings are the answer's last sentences, picked by the question.
var closings = [][2]string{
	{"I am the built-in local model, so the same question always gets the same answer.", "Set BEDROCK_MODEL_ID_CHAT to talk to a real model."},
	{"Every sentence you read passed the guardrail before it was sent.", "Ask for a person at any time and the conversation goes to one."},
	{"This answer streams one word at a time, like a real model's.", "Cancel it whenever you like; what you saw is kept."},
	{"I keep the whole thread, so you can come back to it later.", "Ask for a summary of the thread over the HTTP API."},
}

// Answer is the local model's answer to req.
func Answer(req ports.ChatRequest) string {
	if req.Rewrite != nil {
		// Continue after what was said, without what failed.
		text := "I would rather not go into that, but I am glad to help with anything else."
		if said := req.Rewrite.Said; said != "" && !strings.HasSuffix(said, " ") {
			text = " " + text
		}
		return text
	}
	question, earlier, before := "", 0, ""
	if n := len(req.Messages); n > 0 {
		question = req.Messages[n-1].Content
		earlier = n - 1
		for i := n - 2; i >= 0; i-- {
			if req.Messages[i].Role == ports.RoleUser {
				before = req.Messages[i].Content
				break
			}
		}
	}
	var b strings.Builder
	b.WriteString(`You asked: "` + quote(question) + `".`)
	switch earlier {
	case 0:
		b.WriteString(" This is the first message of this thread.")
	case 1:
		b.WriteString(" This thread has 1 earlier message.")
	default:
		b.WriteString(" This thread has " + strconv.Itoa(earlier) + " earlier messages.")
	}
	if before != "" {
		b.WriteString(` Before that you wrote: "` + quote(before) + `".`)
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(question))
	c := closings[h.Sum32()%uint32(len(closings))] //nolint:gosec // closings is a short fixed list: its length fits a uint32
	b.WriteString(" " + c[0] + " " + c[1])
	return b.String()
}

// Summary is the local model's summary of msgs.
func Summary(msgs []ports.Message) string {
	if len(msgs) == 0 {
		return "The thread has no messages yet."
	}
	var users []string
	answers, cancelled := 0, 0
	for _, m := range msgs {
		switch {
		case m.Role == ports.RoleUser:
			users = append(users, m.Content)
		case m.Cancelled:
			cancelled++
		default:
			answers++
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "The thread has %d messages: %d from the user and %d answers", len(msgs), len(users), answers+cancelled)
	if cancelled > 0 {
		fmt.Fprintf(&b, ", %d of them cancelled", cancelled)
	}
	b.WriteString(".")
	switch len(users) {
	case 0:
	case 1:
		fmt.Fprintf(&b, ` The user wrote: "%s".`, quote(users[0]))
	default:
		fmt.Fprintf(&b, ` The user first wrote: "%s", and last: "%s".`, quote(users[0]), quote(users[len(users)-1]))
	}
	return b.String()
}

// classify answers an escalation classifier: ESCALATE when the user's
// last message asks for a person.
func classify(msgs []ports.Message) string {
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Role != ports.RoleUser {
			continue
		}
		for _, w := range strings.FieldsFunc(strings.ToLower(msgs[i].Content), func(r rune) bool { return !unicode.IsLetter(r) }) {
			switch w {
			case "human", "person", "agent", "someone", "representative", "manager":
				return "ESCALATE the user asks for a person"
			}
		}
		break
	}
	return "CONTINUE"
}

// quote shortens s to one line of at most 80 characters.
// maxQuote bounds how much of a message an answer quotes, in characters.
const maxQuote = 160

func quote(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= maxQuote {
		return s
	}
	n := 0
	for i := range s {
		if n == maxQuote-1 {
			return strings.TrimSpace(s[:i]) + "…"
		}
		n++
	}
	return s
}

// Tokens cuts text into word-sized pieces, each word with the spaces
// before it, so that the pieces concatenate to text.
func Tokens(text string) []string {
	var out []string
	start := 0
	inWord := false
	for i, r := range text {
		space := unicode.IsSpace(r)
		if space && inWord {
			out = append(out, text[start:i])
			start = i
		}
		inWord = !space
	}
	if start < len(text) {
		out = append(out, text[start:])
	}
	return out
}

func inputTokens(req ports.ChatRequest) int {
	n := len(strings.Fields(req.System))
	for _, m := range req.Messages {
		n += len(strings.Fields(m.Content))
	}
	return n
}
