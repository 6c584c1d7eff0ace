package web

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// The CSRF tokens of the API (PROTOCOL.md §2.4) are stateless: a token carries when
// it was issued and a random nonce, signed with HMAC-SHA256 under a key
// derived from CSRF_SECRET_KEY. Any instance that shares the secret checks
// any instance's tokens, with nothing stored anywhere.
//
// A token is the unpadded base64url encoding (RFC 4648 §5) of 57 bytes:
//
//	version (1 byte, 1) | issued at (8 bytes, Unix seconds, big endian) |
//	nonce (16 random bytes) | HMAC-SHA256 of the 25 bytes before it
//
// that is 76 characters of A-Z a-z 0-9 - _, safe in a header, a cookie and
// a URL. 57 bytes encode to whole 4-character groups, so no token has a
// second spelling.
const (
	csrfVersion    = 1
	csrfNonceLen   = 16
	csrfPayloadLen = 1 + 8 + csrfNonceLen
	csrfRawLen     = csrfPayloadLen + sha256.Size
	// CSRFTokenLen is the length of every token. Anything else is refused
	// before it is decoded.
	CSRFTokenLen = (csrfRawLen / 3) * 4
)

// csrfKeyContext separates the key of the tokens from every other use of
// the secret, which falls back to SECRET_KEY.
const csrfKeyContext = "wsserver/csrf-token/v1"

// Why a CSRF token is refused. Clients are only told 403; these are for
// logs and tests.
var (
	ErrCSRFMalformed = errors.New("csrf: malformed token")
	ErrCSRFSignature = errors.New("csrf: bad signature")
	ErrCSRFExpired   = errors.New("csrf: token expired")
	ErrCSRFFuture    = errors.New("csrf: token issued in the future")
)

// CSRFConfig configures a CSRF.
type CSRFConfig struct {
	// Secret signs the tokens (CSRF_SECRET_KEY, else SECRET_KEY). Every
	// instance that should accept a token needs the same one. Required.
	Secret string
	// TTL is how long a token stays valid. Zero means 12 hours.
	TTL time.Duration
	// Skew is how far in the future a token's issue time may be, for
	// clocks of instances that disagree a little. Zero means one minute.
	Skew time.Duration
	// Now is the clock. Nil means time.Now.
	Now func() time.Time
	// Rand makes the nonces. Nil means crypto/rand.
	Rand io.Reader
}

// CSRF issues and checks CSRF tokens. It holds no state but its key and is
// safe for concurrent use.
type CSRF struct {
	key  []byte
	ttl  time.Duration
	skew time.Duration
	now  func() time.Time
	rand io.Reader
}

// NewCSRF validates cfg and returns a CSRF.
func NewCSRF(cfg CSRFConfig) (*CSRF, error) {
	switch {
	case cfg.Secret == "":
		return nil, errors.New("csrf: a secret is required")
	case cfg.TTL < 0 || cfg.Skew < 0:
		return nil, errors.New("csrf: ttl and skew must not be negative")
	}
	if cfg.TTL == 0 {
		cfg.TTL = 12 * time.Hour
	}
	if cfg.Skew == 0 {
		cfg.Skew = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	m := hmac.New(sha256.New, []byte(cfg.Secret))
	m.Write([]byte(csrfKeyContext))
	return &CSRF{key: m.Sum(nil), ttl: cfg.TTL, skew: cfg.Skew, now: cfg.Now, rand: cfg.Rand}, nil
}

// TTL is how long a token stays valid.
func (c *CSRF) TTL() time.Duration { return c.ttl }

// Issue returns a new token, issued now. It fails only when the nonce
// cannot be read (never with crypto/rand).
func (c *CSRF) Issue() (string, error) {
	var raw [csrfRawLen]byte
	raw[0] = csrfVersion
	binary.BigEndian.PutUint64(raw[1:9], uint64(c.now().Unix())) //nolint:gosec // the clock reads a time after 1970: Unix() is positive
	if _, err := io.ReadFull(c.rand, raw[9:csrfPayloadLen]); err != nil {
		return "", fmt.Errorf("csrf: read nonce: %w", err)
	}
	copy(raw[csrfPayloadLen:], c.sign(nil, raw[:csrfPayloadLen]))
	return base64.RawURLEncoding.EncodeToString(raw[:]), nil
}

// Check reports why token is not a valid token of this secret, now: nil
// when it is, else one of ErrCSRFMalformed, ErrCSRFSignature,
// ErrCSRFExpired and ErrCSRFFuture. The signature is checked, in constant
// time, before the time is looked at.
func (c *CSRF) Check(token string) error {
	t, err := parseCSRF(token)
	if err != nil {
		return err
	}
	var want [sha256.Size]byte
	if !hmac.Equal(c.sign(want[:0], t.payload[:]), t.mac[:]) {
		return ErrCSRFSignature
	}
	now := c.now()
	switch {
	case t.issued.Sub(now) > c.skew:
		return ErrCSRFFuture
	case now.Sub(t.issued) > c.ttl:
		return ErrCSRFExpired
	}
	return nil
}

// sign appends the MAC of payload to dst.
func (c *CSRF) sign(dst, payload []byte) []byte {
	m := hmac.New(sha256.New, c.key)
	m.Write(payload)
	return m.Sum(dst)
}

// csrfToken is a token taken apart, its signature not yet checked.
type csrfToken struct {
	payload [csrfPayloadLen]byte
	issued  time.Time
	mac     [sha256.Size]byte
}

// parseCSRF decodes s. It looks at nothing but the length of anything that
// is not exactly CSRFTokenLen long.
func parseCSRF(s string) (csrfToken, error) {
	var t csrfToken
	if len(s) != CSRFTokenLen {
		return t, fmt.Errorf("%w: %d characters, not %d", ErrCSRFMalformed, len(s), CSRFTokenLen)
	}
	var raw [csrfRawLen]byte
	n, err := base64.RawURLEncoding.Decode(raw[:], []byte(s))
	if err != nil || n != csrfRawLen {
		return t, fmt.Errorf("%w: not base64url", ErrCSRFMalformed)
	}
	if raw[0] != csrfVersion {
		return t, fmt.Errorf("%w: unknown version %d", ErrCSRFMalformed, raw[0])
	}
	secs := binary.BigEndian.Uint64(raw[1:9])
	if secs > 1<<40 { // year 36812: no clock of ours says that
		return t, fmt.Errorf("%w: issue time out of range", ErrCSRFMalformed)
	}
	copy(t.payload[:], raw[:csrfPayloadLen])
	copy(t.mac[:], raw[csrfPayloadLen:])
	t.issued = time.Unix(int64(secs), 0)
	return t, nil
}
