package local

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A phrase's word prefilter never changes what its rule matches: Match
// agrees with the rule's regular expression on every text, in any case,
// with other spacing, with the Kelvin sign and the long s that (?i) folds
// to k and s, and with curly apostrophes.
func TestMatchAgreesWithTheExpression(t *testing.T) {
	rules, _, err := parseRules("test", []byte(`
phrase r talk to a human
phrase r don't know
phrase r kettle
phrase r café au lait
phrase r ask
regex  r (?i)\bfraud\b
regex  r (?:cat|dog)s?
regex  r cat|\d+
regex  r \b(?:\d[ -]?){13,19}\b
regex  r (?:ab){2,}|(?:ab)+c
regex  r x?yz?(?:xyz)+
`), nil, false)
	require.NoError(t, err)
	shipped, err := LoadAppdata("")
	require.NoError(t, err)
	rules = append(append(append(rules, shipped.Guardrail...), shipped.Escalation.Rules...), shipped.Escalation.Frustration...)
	assert.Equal(t, []string{"human"}, rules[0].words, "a phrase's longest word")
	assert.Equal(t, []string{"know"}, rules[1].words, "the word with the apostrophe is not scanned for")
	assert.Equal(t, []string{"lait"}, rules[3].words, "café is not ASCII: the longest ASCII word")
	assert.Equal(t, []string{"fraud"}, rules[5].words)
	assert.ElementsMatch(t, []string{"cat", "dog"}, rules[6].words, "one of each branch")
	assert.Nil(t, rules[7].words, "a branch without a text: nothing to scan for")
	assert.Nil(t, rules[8].words, "digits: nothing to scan for")
	assert.Equal(t, []string{"ab"}, rules[9].words, "repeated at least once")
	assert.Equal(t, []string{"xyz"}, rules[10].words, "the more selective part")
	texts := []string{
		"I want to TALK to a Human now",
		"talk  to\ta human",
		"Where is my order?",
		"My \u212Aettle broke",           // the Kelvin sign: (?i)kettle matches it
		"Please \u017Fpeak up, a\u017Fk", // the long s: (?i)ask matches aſk
		"I DON'T KNOW",
		"I don’t know",
		"I dont know",
		"CAFÉ AU LAIT please",
		"café au lait",
		"this is FRAUD!!!",
		"Fraudulent? Call a LAWYER about the chargeback???",
		"my Cats and DOGS", "dogma", "catalogue 12", "abab", "abc", "xyzxyz", "yz",
		"",
		"Your card 4111 1111 1111 1111 works.",
		"Please explain in detail how streaming answers work here, what happens to my thread and its history.",
	}
	for _, r := range rules {
		for _, s := range texts {
			want := ""
			if loc := r.re.FindStringIndex(s); loc != nil {
				want = s[loc[0]:loc[1]]
			}
			got, ok := r.Match(s)
			assert.Equal(t, want != "", ok, "%s %q on %q", r.Kind, r.Pattern, s)
			assert.Equal(t, want, got, "%s %q on %q", r.Kind, r.Pattern, s)
		}
	}
}
