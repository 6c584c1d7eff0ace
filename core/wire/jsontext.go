package wire

import (
	"errors"
	"unicode/utf8"
)

// Flaws of a JSON text that encoding/json lets through in a raw value
// (json.RawMessage) but that a reader or a store refuses. ValidJSONText and
// ValidJSONUnicode return them; their messages are fit to quote to a client.
var (
	// ErrInvalidUTF8: a browser fails a WebSocket connection on a text
	// frame that is not UTF-8 (RFC 6455 §8.1), and PostgreSQL refuses it.
	ErrInvalidUTF8 = errors.New("it is not valid UTF-8")
	// ErrLoneSurrogate: an escape \ud800 to \udfff that is not a high
	// surrogate followed by a low one names no character. PostgreSQL jsonb
	// and strict parsers (Rust's serde_json, say) refuse it.
	ErrLoneSurrogate = errors.New(`it holds a lone UTF-16 surrogate escape (\ud800 to \udfff without its pair)`)
	// ErrNUL: PostgreSQL jsonb keeps strings as text, which cannot hold
	// U+0000, whether escaped (\u0000) or raw.
	ErrNUL = errors.New(`it holds a NUL character (\u0000)`)
	// ErrNumberRange: PostgreSQL jsonb keeps numbers as numeric, which
	// holds at most 131072 digits before the decimal point and 16383 after.
	ErrNumberRange = errors.New("it holds a number beyond what PostgreSQL can store (at most 131072 digits before the decimal point and 16383 after)")
)

// ValidJSONText reports why raw, a JSON text, could not be stored as it is
// by every thread store (PostgreSQL jsonb above all): invalid UTF-8, a
// lone surrogate escape, a NUL character or a number out of numeric's
// range. It returns nil when raw is fine, or one of the Err values above.
// It does not check JSON syntax (json.Valid does); on text that is not
// JSON it reports what it finds and never panics. It does not allocate.
func ValidJSONText(raw []byte) error { return scanJSONText(raw, true) }

// ValidJSONUnicode reports why raw, a JSON text, could not be relayed to
// every client as it is: invalid UTF-8 or a lone surrogate escape. Unlike
// ValidJSONText it lets through what only a store refuses (NUL, numbers
// beyond PostgreSQL's range): a relayed message is not stored.
func ValidJSONUnicode(raw []byte) error { return scanJSONText(raw, false) }

// PostgreSQL numeric's limits (numeric.c: NUMERIC_WEIGHT_MAX base-10000
// digits before the point, NUMERIC_DSCALE_MAX after, and the exponent
// bound of set_var_from_str).
const (
	maxNumberWeight = 131071 // a value stays below 10^131072
	maxNumberScale  = 16383
	maxExponent     = 1<<30 - 2 // INT_MAX/2 - 1
)

func scanJSONText(raw []byte, storable bool) error {
	if !utf8.Valid(raw) {
		return ErrInvalidUTF8
	}
	inString := false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == 0:
			if storable {
				return ErrNUL
			}
		case inString:
			switch c {
			case '"':
				inString = false
			case '\\':
				if i+1 >= len(raw) || raw[i+1] != 'u' {
					i++ // a one-character escape: skip the character
					continue
				}
				r, ok := hex4(raw, i+2)
				if !ok {
					i++ // malformed: json.Valid's business
					continue
				}
				i += 5 // at the escape's last digit
				switch {
				case r == 0:
					if storable {
						return ErrNUL
					}
				case r >= 0xdc00 && r <= 0xdfff:
					return ErrLoneSurrogate
				case r >= 0xd800 && r <= 0xdbff:
					if i+2 >= len(raw) || raw[i+1] != '\\' || raw[i+2] != 'u' {
						return ErrLoneSurrogate
					}
					lo, ok := hex4(raw, i+3)
					if !ok || lo < 0xdc00 || lo > 0xdfff {
						return ErrLoneSurrogate
					}
					i += 6
				}
			}
		case c == '"':
			inString = true
		case storable && (c == '-' || '0' <= c && c <= '9'):
			n, ok := storableNumber(raw[i:])
			if !ok {
				return ErrNumberRange
			}
			i += n - 1
		}
	}
	return nil
}

// hex4 decodes the four hex digits at raw[i:].
func hex4(raw []byte, i int) (rune, bool) {
	if i+4 > len(raw) {
		return 0, false
	}
	var r rune
	for _, c := range raw[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// storableNumber reads the JSON number at the start of raw and reports its
// length and whether PostgreSQL numeric can hold it: its scale (digits
// after the point once the exponent is applied) at most 16383, a non-zero
// value below 10^131072, and an exponent within numeric's input bound.
func storableNumber(raw []byte) (n int, ok bool) {
	i := 0
	if i < len(raw) && raw[i] == '-' {
		i++
	}
	// weight is the power of ten of the first non-zero digit, before the
	// exponent; it stays unset (zero value) while only zeros are seen.
	var intDigits, fracDigits, weight int
	nonZero := false
	for ; i < len(raw) && '0' <= raw[i] && raw[i] <= '9'; i++ {
		if raw[i] != '0' && !nonZero {
			nonZero = true
			weight = -1 // counts up with the digits that follow
		}
		if nonZero {
			weight++
		}
		intDigits++
	}
	if i < len(raw) && raw[i] == '.' {
		for i++; i < len(raw) && '0' <= raw[i] && raw[i] <= '9'; i++ {
			fracDigits++
			if raw[i] != '0' && !nonZero {
				nonZero = true
				weight = -fracDigits
			}
		}
	}
	exp := 0
	if i < len(raw) && (raw[i] == 'e' || raw[i] == 'E') {
		i++
		neg := false
		if i < len(raw) && (raw[i] == '+' || raw[i] == '-') {
			neg = raw[i] == '-'
			i++
		}
		for ; i < len(raw) && '0' <= raw[i] && raw[i] <= '9'; i++ {
			if exp <= maxExponent {
				exp = exp*10 + int(raw[i]-'0')
			}
		}
		if exp > maxExponent {
			return i, false
		}
		if neg {
			exp = -exp
		}
	}
	if fracDigits-exp > maxNumberScale {
		return i, false
	}
	if nonZero && weight+exp > maxNumberWeight {
		return i, false
	}
	return i, true
}
