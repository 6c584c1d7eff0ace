package prompt_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/wsserver/wsserver/core/prompt"
	"github.com/wsserver/wsserver/ports"
)

func TestParseJudge(t *testing.T) {
	for _, tc := range []struct {
		answer string
		want   ports.Verdict
		ok     bool
	}{
		{"PASS", ports.Verdict{Pass: true}, true},
		{"  pass.\nanything after", ports.Verdict{Pass: true}, true},
		{"FAIL: gives medical advice", ports.Verdict{Reason: "gives medical advice"}, true},
		{"fail - rude", ports.Verdict{Reason: "rude"}, true},
		{"FAIL", ports.Verdict{Reason: "the content check failed it"}, true},
		{"FAILED: no", ports.Verdict{}, false},
		{"PASSED", ports.Verdict{}, false},
		{"I think it is fine", ports.Verdict{}, false},
		{"", ports.Verdict{}, false},
	} {
		got, ok := prompt.ParseJudge(tc.answer)
		assert.Equal(t, tc.ok, ok, "%q", tc.answer)
		assert.Equal(t, tc.want, got, "%q", tc.answer)
	}
	long, ok := prompt.ParseJudge("FAIL: " + strings.Repeat("é", prompt.MaxReason+10))
	assert.True(t, ok)
	assert.Equal(t, strings.Repeat("é", prompt.MaxReason)+"…", long.Reason, "a reason is cut at MaxReason runes")
}
