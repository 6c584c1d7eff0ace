package web

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fixedRand fills every nonce with one byte, so that tokens are known in
// advance.
type fixedRand byte

func (b fixedRand) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

// t0 is the clock of these tests.
var t0 = time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)

func newTestCSRF(t testing.TB, secret string, now *time.Time) *CSRF {
	t.Helper()
	c, err := NewCSRF(CSRFConfig{
		Secret: secret, TTL: time.Hour, Skew: time.Minute,
		Now: func() time.Time { return *now }, Rand: fixedRand(7),
	})
	require.NoError(t, err)
	return c
}

func TestCSRFCheck(t *testing.T) {
	now := t0
	signer := newTestCSRF(t, "secret-1", &now)
	token, err := signer.Issue()
	require.NoError(t, err)
	require.Len(t, token, CSRFTokenLen)
	assert.Regexp(t, `^[A-Za-z0-9_-]+$`, token, "URL and cookie safe")

	other := newTestCSRF(t, "secret-2", &now)
	otherToken, err := other.Issue()
	require.NoError(t, err)

	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	// resign makes a token of signer's key with raw changed.
	resign := func(change func(raw []byte)) string {
		raw, err := base64.RawURLEncoding.DecodeString(token)
		require.NoError(t, err)
		change(raw)
		copy(raw[csrfPayloadLen:], signer.sign(nil, raw[:csrfPayloadLen]))
		return base64.RawURLEncoding.EncodeToString(raw)
	}

	tests := []struct {
		name  string
		token string
		at    time.Time
		want  error
	}{
		{"fresh", token, t0, nil},
		{"at the end of its life", token, t0.Add(time.Hour), nil},
		{"expired", token, t0.Add(time.Hour + time.Second), ErrCSRFExpired},
		{"issued a little in the future", token, t0.Add(-time.Minute), nil},
		{"issued in the future", token, t0.Add(-time.Minute - time.Second), ErrCSRFFuture},
		{"another secret", otherToken, t0, ErrCSRFSignature},
		{"tampered issue time", flip(token, 5), t0, ErrCSRFSignature},
		{"tampered nonce", flip(token, 20), t0, ErrCSRFSignature},
		{"tampered mac", flip(token, CSRFTokenLen-1), t0, ErrCSRFSignature},
		{"empty", "", t0, ErrCSRFMalformed},
		{"truncated", token[:CSRFTokenLen-1], t0, ErrCSRFMalformed},
		{"too long", token + "A", t0, ErrCSRFMalformed},
		{"huge", strings.Repeat("A", 1<<20), t0, ErrCSRFMalformed},
		{"standard base64", "+" + token[1:], t0, ErrCSRFMalformed},
		{"not base64", "!" + token[1:], t0, ErrCSRFMalformed},
		{"padded", token[:CSRFTokenLen-1] + "=", t0, ErrCSRFMalformed},
		{"unknown version", resign(func(raw []byte) { raw[0] = 2 }), t0, ErrCSRFMalformed},
		{"absurd issue time", resign(func(raw []byte) { raw[1] = 0xff }), t0, ErrCSRFMalformed},
		{"Django's token", strings.Repeat("aB3", 21) + "x", t0, ErrCSRFMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now = tt.at
			err := signer.Check(tt.token)
			if tt.want == nil {
				assert.NoError(t, err)
			} else {
				assert.ErrorIs(t, err, tt.want)
			}
		})
	}
}

func TestCSRFIssue(t *testing.T) {
	// Two instances with the same secret accept each other's tokens, and
	// every token is new.
	a, err := NewCSRF(CSRFConfig{Secret: "shared"})
	require.NoError(t, err)
	b, err := NewCSRF(CSRFConfig{Secret: "shared"})
	require.NoError(t, err)
	seen := map[string]bool{}
	for range 100 {
		tok, err := a.Issue()
		require.NoError(t, err)
		require.False(t, seen[tok], "tokens repeat")
		seen[tok] = true
		require.NoError(t, b.Check(tok))
	}
	assert.Equal(t, 12*time.Hour, a.TTL(), "default ttl")

	_, err = NewCSRF(CSRFConfig{})
	require.Error(t, err)
	_, err = NewCSRF(CSRFConfig{Secret: "s", TTL: -time.Second})
	require.Error(t, err)

	broken, err := NewCSRF(CSRFConfig{Secret: "s", Rand: strings.NewReader("short")})
	require.NoError(t, err)
	_, err = broken.Issue()
	require.Error(t, err)
}

// FuzzParseCSRF: nothing panics, whatever is parsed has one spelling, and
// no token verifies but the one the signer made.
func FuzzParseCSRF(f *testing.F) {
	now := t0
	signer := newTestCSRF(f, "fuzz-secret", &now)
	valid, err := signer.Issue()
	require.NoError(f, err)
	f.Add(valid)
	f.Add("")
	f.Add(strings.Repeat("A", CSRFTokenLen))
	f.Add(strings.Repeat("_", CSRFTokenLen))
	f.Add(valid[:CSRFTokenLen-2] + "==")
	f.Add(valid + valid)
	f.Add("AQAAAABn1EZeBwcHBwcHBwcHBwcHBwcHB")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := parseCSRF(s)
		if err == nil {
			raw := append(tok.payload[:], tok.mac[:]...)
			if got := base64.RawURLEncoding.EncodeToString(raw); got != s {
				t.Fatalf("parsed %q, which encodes back as %q", s, got)
			}
		} else if !errors.Is(err, ErrCSRFMalformed) {
			t.Fatalf("parse error %v is not ErrCSRFMalformed", err)
		}
		err = signer.Check(s)
		switch {
		case err == nil && s != valid:
			t.Fatalf("forged token %q verifies", s)
		case err != nil && s == valid:
			t.Fatalf("the signer's token fails: %v", err)
		case err != nil && !errors.Is(err, ErrCSRFMalformed) && !errors.Is(err, ErrCSRFSignature):
			t.Fatalf("unexpected error %v", err)
		}
	})
}

// FuzzCSRFMutated: a token the signer made at any time verifies for as
// long as it lives and no longer, and the same token with one character
// changed, one dropped or one added verifies never.
func FuzzCSRFMutated(f *testing.F) {
	f.Add(byte(7), int64(0), int64(0), uint8(0), byte('A'), uint8(0))
	f.Add(byte(0), int64(1<<33), int64(3600), uint8(75), byte('_'), uint8(1))
	f.Add(byte(255), int64(-5), int64(-61), uint8(40), byte('\n'), uint8(2))
	f.Fuzz(func(t *testing.T, nonce byte, issuedAt, age int64, pos uint8, c byte, how uint8) {
		issued := time.Unix(issuedAt&(1<<36-1), 0) // any time from 1970 to year 4147
		now := issued
		signer := newTestCSRF(t, "fuzz-secret", &now)
		token, err := signer.Issue()
		if err != nil {
			t.Fatal(err)
		}
		now = issued.Add(time.Duration(age%(3*3600)) * time.Second)
		live := now.Sub(issued) <= time.Hour && issued.Sub(now) <= time.Minute
		if err := signer.Check(token); (err == nil) != live {
			t.Fatalf("issued %v, checked %v: %v", issued, now, err)
		}

		i := int(pos) % CSRFTokenLen
		var mutated string
		switch how % 3 {
		case 0:
			if token[i] == c {
				return
			}
			mutated = token[:i] + string([]byte{c}) + token[i+1:]
		case 1:
			mutated = token[:i] + token[i+1:]
		default:
			mutated = token[:i] + string([]byte{c}) + token[i:]
		}
		if err := signer.Check(mutated); err == nil {
			t.Fatalf("%q, a changed %q, verifies", mutated, token)
		}
	})
}
