// Package turns is a conversation as the chat APIs of the wire adapters'
// models take it (Bedrock's Converse, OpenAI-compatible chat
// completions): turns that alternate, starting with the user's. Each
// adapter says the turns in its wire's words.
package turns

import (
	"strings"

	"github.com/wsserver/wsserver/ports"
)

// Turn is one message of such a conversation: a role, and the texts of
// its consecutive messages, a blank line apart.
type Turn struct {
	Role ports.Role
	Text string
}

// Of maps msgs to alternating turns starting with the user's. Blank
// messages are left out (Converse refuses blank text), as are the
// assistant's before the user's first, and a role's consecutive messages
// are one turn. A role other than the assistant's is the user's.
func Of(msgs []ports.Message) []Turn {
	var out []Turn
	var texts []string
	var role ports.Role
	flush := func() {
		if len(texts) > 0 {
			out = append(out, Turn{Role: role, Text: strings.Join(texts, "\n\n")})
		}
		texts = nil
	}
	for _, msg := range msgs {
		if strings.TrimSpace(msg.Content) == "" {
			continue
		}
		r := ports.RoleUser
		if msg.Role == ports.RoleAssistant {
			r = ports.RoleAssistant
		}
		if len(out) == 0 && len(texts) == 0 && r != ports.RoleUser {
			continue
		}
		if r != role {
			flush()
			role = r
		}
		texts = append(texts, msg.Content)
	}
	flush()
	return out
}
