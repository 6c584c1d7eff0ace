package turns_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/wsserver/wsserver/adapters/internal/turns"
	"github.com/wsserver/wsserver/ports"
)

func TestOf(t *testing.T) {
	user := func(s string) ports.Message { return ports.Message{Role: ports.RoleUser, Content: s} }
	assistant := func(s string) ports.Message { return ports.Message{Role: ports.RoleAssistant, Content: s} }
	tests := []struct {
		name string
		msgs []ports.Message
		want []turns.Turn
	}{
		{name: "none", msgs: nil, want: nil},
		{name: "alternating", msgs: []ports.Message{user("a"), assistant("b"), user("c")}, want: []turns.Turn{
			{Role: ports.RoleUser, Text: "a"}, {Role: ports.RoleAssistant, Text: "b"}, {Role: ports.RoleUser, Text: "c"},
		}},
		{name: "the assistant's first are left out", msgs: []ports.Message{assistant("Welcome!"), assistant("  "), user("a")}, want: []turns.Turn{
			{Role: ports.RoleUser, Text: "a"},
		}},
		{name: "a role's consecutive messages are one turn", msgs: []ports.Message{user("one"), user("two"), assistant("x"), assistant("y")}, want: []turns.Turn{
			{Role: ports.RoleUser, Text: "one\n\ntwo"}, {Role: ports.RoleAssistant, Text: "x\n\ny"},
		}},
		{name: "blank messages are left out, even between a role's", msgs: []ports.Message{user("one"), assistant(" \n"), user("two")}, want: []turns.Turn{
			{Role: ports.RoleUser, Text: "one\n\ntwo"},
		}},
		{name: "only the assistant's", msgs: []ports.Message{assistant("a")}, want: nil},
		{name: "another role is the user's", msgs: []ports.Message{{Role: "system", Content: "s"}, user("u")}, want: []turns.Turn{
			{Role: ports.RoleUser, Text: "s\n\nu"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, turns.Of(tt.msgs))
		})
	}
}
