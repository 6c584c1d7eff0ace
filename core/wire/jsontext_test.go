package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/stretchr/testify/assert"
)

// The number cases at the limits were checked against PostgreSQL 15's
// jsonb input (`select '<text>'::jsonb`).
func TestValidJSONText(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		text    error // ValidJSONText
		unicode error // ValidJSONUnicode
	}{
		{"plain", `{"a":[1,2.5,-3e2,"x",true,null]}`, nil, nil},
		{"empty", ``, nil, nil},
		{"a pair of surrogates", `"\ud83d\ude00"`, nil, nil},
		{"a pair in capitals", `"\uD83D\uDE00"`, nil, nil},
		{"raw non-ASCII", `"ü€😀"`, nil, nil},
		{"an escaped backslash before u0000", `"\\u0000"`, nil, nil},
		{"an escaped backslash before ud800", `["\\ud800"]`, nil, nil},
		{"other escapes", `"\"\\\/\b\f\n\r\t\u00e9"`, nil, nil},
		{"numbers in strings are text", `"1e999999"`, nil, nil},

		{"invalid UTF-8", "\"a\xffb\"", ErrInvalidUTF8, ErrInvalidUTF8},
		{"a truncated character", "\"\xc3\"", ErrInvalidUTF8, ErrInvalidUTF8},
		{"an encoded surrogate", "\"\xed\xa0\x80\"", ErrInvalidUTF8, ErrInvalidUTF8},
		{"invalid UTF-8 outside strings", "[1]\xff", ErrInvalidUTF8, ErrInvalidUTF8},

		{"a lone high surrogate", `"\ud800"`, ErrLoneSurrogate, ErrLoneSurrogate},
		{"a lone low surrogate", `"\udc00"`, ErrLoneSurrogate, ErrLoneSurrogate},
		{"a high surrogate at the end", `"\udbff`, ErrLoneSurrogate, ErrLoneSurrogate},
		{"a high surrogate and a letter", `"\ud800\u0041"`, ErrLoneSurrogate, ErrLoneSurrogate},
		{"two high surrogates", `"\ud800\ud800"`, ErrLoneSurrogate, ErrLoneSurrogate},
		{"a high surrogate and another escape", `"\ud800\n"`, ErrLoneSurrogate, ErrLoneSurrogate},
		{"a low then a high", `"\udc00\ud800"`, ErrLoneSurrogate, ErrLoneSurrogate},
		{"a lone surrogate in a key", `{"\ud800":1}`, ErrLoneSurrogate, ErrLoneSurrogate},
		{"after a pair", `"\ud83d\ude00\ude00"`, ErrLoneSurrogate, ErrLoneSurrogate},

		{"an escaped NUL", `["a\u0000b"]`, ErrNUL, nil},
		{"a raw NUL", "\"a\x00b\"", ErrNUL, nil},

		{"131072 digits", strings.Repeat("9", 131072) + ".5", nil, nil},
		{"131073 digits", "1" + strings.Repeat("0", 131072), ErrNumberRange, nil},
		{"0.5e131072", `0.5e131072`, nil, nil},
		{"0.5e131073", `0.5e131073`, ErrNumberRange, nil},
		{"0.05e131073", `0.05e131073`, nil, nil},
		{"10e131070", `10e131070`, nil, nil},
		{"10e131071", `10e131071`, ErrNumberRange, nil},
		{"1e1000000", `[1e1000000]`, ErrNumberRange, nil},
		{"16383 decimals", "0." + strings.Repeat("0", 16383), nil, nil},
		{"16384 decimals", "0." + strings.Repeat("0", 16384), ErrNumberRange, nil},
		{"1.5e-16382", `1.5e-16382`, nil, nil},
		{"1.5e-16383", `1.5e-16383`, ErrNumberRange, nil},
		{"1.00e-16382", `1.00e-16382`, ErrNumberRange, nil},
		{"0e-16383", `0e-16383`, nil, nil},
		{"-0.0e-16383", `-0.0e-16383`, ErrNumberRange, nil},
		{"0e1073741822", `0e1073741822`, nil, nil},
		{"0e1073741823", `0e1073741823`, ErrNumberRange, nil},
		{"an exponent past int64", `{"n":0E+99999999999999999999999}`, ErrNumberRange, nil},
		{"a large exponent with a sign", `1E+400`, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.text, ValidJSONText([]byte(tt.raw)), "ValidJSONText")
			assert.Equal(t, tt.unicode, ValidJSONUnicode([]byte(tt.raw)), "ValidJSONUnicode")
		})
	}
}

func TestValidJSONTextDoesNotAllocate(t *testing.T) {
	raw := []byte(`{"k":["ü\u00e9\ud83d\ude00",1.5e3,-2,{"x":null}]}`)
	allocs := testing.AllocsPerRun(100, func() {
		if ValidJSONText(raw) != nil {
			t.Fatal("refused")
		}
	})
	assert.Zero(t, allocs)
}

// FuzzValidJSONText checks the validators against encoding/json, which
// never writes a surrogate escape and turns invalid UTF-8 into U+FFFD: what
// it writes for any string passes, unless the string holds NUL.
func FuzzValidJSONText(f *testing.F) {
	for _, s := range []string{"", "a", "\x00", "\xff", "\ud7ff", "\U0001F600", `\ud800`, "1e999999"} {
		f.Add(s, uint16(0xd83d), uint16(0xde00))
	}
	f.Fuzz(func(t *testing.T, s string, hi, lo uint16) {
		// Never panics, whatever the bytes; the storable check is the stricter.
		if ValidJSONText([]byte(s)) == nil && ValidJSONUnicode([]byte(s)) != nil {
			t.Fatalf("%q: storable but not relayable", s)
		}

		enc, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := ValidJSONUnicode(enc); err != nil {
			t.Fatalf("%q encoded as %s: %v", s, enc, err)
		}
		wantNUL := strings.IndexByte(s, 0) >= 0
		if err := ValidJSONText(enc); errors.Is(err, ErrNUL) != wantNUL || err != nil && !errors.Is(err, ErrNUL) {
			t.Fatalf("%q encoded as %s: %v", s, enc, err)
		}

		// Two escapes: lone unless they decode as one surrogate pair, or
		// neither is a surrogate.
		raw := fmt.Sprintf(`"\u%04x\u%04x"`, hi, lo)
		pair := utf16.DecodeRune(rune(hi), rune(lo)) != 0xfffd
		lone := !pair && (utf16.IsSurrogate(rune(hi)) || utf16.IsSurrogate(rune(lo)))
		if got := ValidJSONUnicode([]byte(raw)); errors.Is(got, ErrLoneSurrogate) != lone || got != nil && !errors.Is(got, ErrLoneSurrogate) {
			t.Fatalf("%s: %v, want lone=%v", raw, got, lone)
		}
	})
}
