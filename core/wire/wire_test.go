package wire

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAppendString(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote\back`, "tab\tnl\nctl\x01", "ü€😀", "\u2028\u2029", "<&>"} {
		got := AppendString(nil, s)
		var back string
		require.NoError(t, json.Unmarshal(got, &back), "%q", got)
		assert.Equal(t, s, back)
	}
	assert.Equal(t, `"\ufffd"`, string(AppendString(nil, "\xff")))
}

func TestValidIDAndTruncate(t *testing.T) {
	assert.True(t, ValidID("a-b_c.d:9", 9))
	assert.False(t, ValidID("a-b_c.d:9", 8))
	assert.False(t, ValidID("", 8))
	assert.False(t, ValidID("a b", 8))
	assert.Equal(t, "ab…", Truncate("abcdef", 2))
	assert.Equal(t, "…", Truncate("ü", 1), "never cuts a character in two")
	assert.Equal(t, "abc", Truncate("abc", 3))
}

// FuzzAppendString: whatever the string, the JSON written decodes back to
// it (invalid UTF-8 turned into U+FFFD, as encoding/json does).
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "a\"b", "\x00\x1f", "ü\u2028", "\xff\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var back string
		if err := json.Unmarshal(AppendString(nil, s), &back); err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if want := strings.ToValidUTF8(s, "\ufffd"); utf8.ValidString(s) && back != s || !utf8.ValidString(s) && !utf8.ValidString(back) {
			t.Fatalf("%q came back as %q (want %q)", s, back, want)
		}
	})
}

func TestString(t *testing.T) {
	tests := []struct {
		raw  string
		want string
		ok   bool
	}{
		{`"plain"`, "plain", true},
		{`""`, "", true},
		{`"ü€"`, "ü€", true},
		{`"a\"b"`, `a"b`, true},
		{`"\u00fc\n"`, "ü\n", true},
		{`"\ud800"`, "\ufffd", true},
		{"\"a\xffb\"", "a\ufffdb", true},
		{"\"a\tb\"", "", false}, // a raw control character is not JSON
		{`"a"b"`, "", false},
		{`"`, "", false},
		{`"open`, "", false},
		{`5`, "", false},
		{`null`, "", false},
		{``, "", false},
	}
	for _, tt := range tests {
		got, ok := String(json.RawMessage(tt.raw))
		assert.Equal(t, tt.ok, ok, "%q", tt.raw)
		assert.Equal(t, tt.want, got, "%q", tt.raw)
	}
}

// FuzzString: the fast path reads every JSON string as encoding/json does.
func FuzzString(f *testing.F) {
	for _, s := range []string{`"plain"`, `"a\"b"`, "\"\xff\"", `"\ud800"`, `"`, `"a"b"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, ok := String(raw)
		var want string
		wantOK := len(raw) > 0 && raw[0] == '"' && json.Unmarshal(raw, &want) == nil
		if ok != wantOK || got != want {
			t.Fatalf("%q: %q %v, encoding/json: %q %v", raw, got, ok, want, wantOK)
		}
	})
}

func TestLowerASCII(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"example.com", "example.com"},
		{"Example.COM", "example.com"},
		{"[::1]:8000", "[::1]:8000"},
		// Only ASCII: a Kelvin sign (U+212A) folds to k in Unicode, and
		// would turn a refused host into an allowed one.
		{"\u212Aey.example.com", "\u212Aey.example.com"},
		{"ÄB", "Äb"},
	}
	for _, tt := range tests {
		if got := LowerASCII(tt.in); got != tt.want {
			t.Errorf("LowerASCII(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
