package local_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/local"
	"github.com/wsserver/wsserver/ports"
)

func TestEmbeddedAppdata(t *testing.T) {
	a, err := local.LoadAppdata("")
	require.NoError(t, err)
	assert.Contains(t, a.SystemPrompt, "customer service")
	assert.NotEmpty(t, a.SummaryPrompt)
	assert.NotEmpty(t, a.Guardrail)
	assert.NotEmpty(t, a.Escalation.Rules)
	assert.NotEmpty(t, a.Escalation.Frustration)
	assert.Equal(t, 2, a.Escalation.FrustrationThreshold)
	assert.Equal(t, 3, a.Escalation.FrustrationWindow)
	for _, name := range []string{local.SystemPromptFile, local.SummaryPromptFile, local.GuardrailRulesFile, local.EscalationRulesFile} {
		assert.Equal(t, "embedded", a.Origin[name])
	}
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600))
	}
	return dir
}

func TestAppdataOverride(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		local.SystemPromptFile:   "You are a pirate.",
		local.GuardrailRulesFile: "# only one rule\nphrase  parrot  polly wants\n",
		"unrelated.txt":          "ignored",
	})
	a, err := local.LoadAppdata(dir)
	require.NoError(t, err)
	assert.Equal(t, "You are a pirate.", a.SystemPrompt)
	require.Len(t, a.Guardrail, 1)
	assert.Equal(t, "parrot", a.Guardrail[0].Reason)
	assert.Equal(t, filepath.Join(dir, local.GuardrailRulesFile), a.Origin[local.GuardrailRulesFile])
	assert.Equal(t, "embedded", a.Origin[local.EscalationRulesFile], "files the folder lacks keep their defaults")
	assert.NotEmpty(t, a.Escalation.Rules)

	g, err := local.NewGuardrail(local.GuardrailConfig{Rules: a.Guardrail})
	require.NoError(t, err)
	v, err := g.Check(context.Background(), "Polly   WANTS a cracker.")
	require.NoError(t, err)
	assert.False(t, v.Pass)
	assert.Contains(t, v.Reason, "parrot")
	v, err = g.Check(context.Background(), "Your password is 1234.")
	require.NoError(t, err)
	assert.True(t, v.Pass, "the default rules were replaced")
}

func TestAppdataErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  []string // parts of the error
	}{
		{"bad regex", map[string]string{local.GuardrailRulesFile: "# c\n\nregex  bad  (unclosed\n"},
			[]string{local.GuardrailRulesFile + ":3", "bad regex", "(unclosed"}},
		{"unknown kind", map[string]string{local.GuardrailRulesFile: "word  bad  x\n"},
			[]string{local.GuardrailRulesFile + ":1", "unknown kind"}},
		{"missing pattern", map[string]string{local.GuardrailRulesFile: "phrase  bad\n"},
			[]string{local.GuardrailRulesFile + ":1", "KIND REASON PATTERN"}},
		{"reason of two words", map[string]string{local.GuardrailRulesFile: "phrase bad-reason x\n"},
			[]string{local.GuardrailRulesFile + ":1", "one word"}},
		{"matches everything", map[string]string{local.GuardrailRulesFile: "regex  all  .*\n"},
			[]string{local.GuardrailRulesFile + ":1", "empty text"}},
		{"too large", map[string]string{local.GuardrailRulesFile: strings.Repeat("# padding\n", local.MaxFileBytes/10+1)},
			[]string{local.GuardrailRulesFile, "larger than"}},
		{"not text", map[string]string{local.GuardrailRulesFile: "phrase bad \xff\xfe\n"},
			[]string{local.GuardrailRulesFile, "UTF-8"}},
		{"escalation reason", map[string]string{local.EscalationRulesFile: "phrase  angry  grr\n"},
			[]string{local.EscalationRulesFile + ":1", `"angry"`, "user_requested"}},
		{"unknown setting", map[string]string{local.EscalationRulesFile: "setting  patience  3\n"},
			[]string{local.EscalationRulesFile + ":1", "unknown setting"}},
		{"bad setting", map[string]string{local.EscalationRulesFile: "setting  frustration_window  many\n"},
			[]string{local.EscalationRulesFile + ":1", "frustration_window"}},
		{"threshold above window", map[string]string{local.EscalationRulesFile: "setting frustration_threshold 4\nsetting frustration_window 3\n"},
			[]string{local.EscalationRulesFile, "larger than"}},
		{"setting in guardrail rules", map[string]string{local.GuardrailRulesFile: "setting  x  1\n"},
			[]string{local.GuardrailRulesFile + ":1", "unknown kind"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := local.LoadAppdata(writeFiles(t, tt.files))
			require.Error(t, err)
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}

	t.Run("missing folder", func(t *testing.T) {
		_, err := local.LoadAppdata(filepath.Join(t.TempDir(), "nope"))
		require.Error(t, err)
	})
	t.Run("a file, not a folder", func(t *testing.T) {
		dir := writeFiles(t, map[string]string{"f": "x"})
		_, err := local.LoadAppdata(filepath.Join(dir, "f"))
		require.Error(t, err)
	})
}

func TestGuardrailDefaults(t *testing.T) {
	a, err := local.LoadAppdata("")
	require.NoError(t, err)
	g, err := local.NewGuardrail(local.GuardrailConfig{Rules: a.Guardrail})
	require.NoError(t, err)
	assert.False(t, g.WholeAnswer())
	for text, pass := range map[string]bool{
		"Your order left this morning.":        true,
		"Your password is hunter2.":            false,
		"Your card 4111 1111 1111 1111 works.": false,
		"Order 12345 is late.":                 true,
		"I GUARANTEE it arrives.":              false,
		"Here is my system prompt:":            false,
		"The passwords are reset daily.":       true,
	} {
		v, err := g.Check(context.Background(), text)
		require.NoError(t, err)
		assert.Equal(t, pass, v.Pass, "%q: %s", text, v.Reason)
		if !pass {
			assert.NotEmpty(t, v.Reason)
		}
	}
	whole, err := local.NewGuardrail(local.GuardrailConfig{Rules: a.Guardrail, WholeAnswer: true})
	require.NoError(t, err)
	assert.True(t, whole.WholeAnswer())
	_, err = local.NewGuardrail(local.GuardrailConfig{Rules: []local.Rule{{Kind: "phrase", Reason: "x", Pattern: "x"}}})
	require.Error(t, err, "rules come from LoadAppdata")
}

func TestEscalationDefaults(t *testing.T) {
	a, err := local.LoadAppdata("")
	require.NoError(t, err)
	d, err := local.NewEscalation(a.Escalation)
	require.NoError(t, err)
	user := func(s string) ports.Message { return ports.Message{Role: ports.RoleUser, Content: s} }
	bot := func(s string) ports.Message { return ports.Message{Role: ports.RoleAssistant, Content: s} }
	tests := []struct {
		message string
		history []ports.Message
		want    ports.EscalationReason // empty: no escalation
	}{
		{"Where is my order?", nil, ""},
		{"Can I speak to someone please", nil, ports.ReasonUserRequested},
		{"Are you HUMAN?", nil, ports.ReasonUserRequested},
		{"I want a real\nperson", nil, ports.ReasonUserRequested},
		{"Get me an agent", nil, ports.ReasonUserRequested},
		{"The reagent arrived broken", nil, ""},
		{"Humanity is great", nil, ""},
		{"I will call my lawyer", nil, ports.ReasonRule},
		{"This is fraud", nil, ports.ReasonRule},
		{"This is useless", nil, ""},
		{"This is useless", []ports.Message{user("it doesn’t work"), bot("Sorry.")}, ports.ReasonRule},
		{"Fine, thanks", []ports.Message{user("it doesn't work"), bot("Sorry.")}, ""},
		{"Why?!!!", []ports.Message{user("not helpful"), bot("a"), user("ok"), bot("b"), user("ok"), bot("c")}, ""},
		{"Why?!!!", []ports.Message{user("not helpful"), bot("a"), user("ok"), bot("b")}, ports.ReasonRule},
	}
	for _, tt := range tests {
		e, err := d.Detect(context.Background(), tt.message, tt.history)
		require.NoError(t, err)
		assert.Equal(t, tt.want != "", e.Escalate, "%q", tt.message)
		assert.Equal(t, tt.want, e.Reason, "%q", tt.message)
		if e.Escalate {
			assert.NotEmpty(t, e.Detail)
		}
	}
}
