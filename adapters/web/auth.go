package web

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// maxKeyLen bounds what is hashed from a request.
const maxKeyLen = 1024

// authorized reports whether r carries the API key, in the authorization
// query parameter (browsers cannot set headers on WebSockets) or in the
// Authorization header, bare or as "Bearer <key>" with the scheme in any
// case (RFC 7235 §2.1). With no key configured everything is allowed. The
// keys are compared in constant time, through their hashes so that not
// even the length shows.
func (s *Server) authorized(r *http.Request) bool {
	if s.cfg.APIKey == "" {
		return true
	}
	got := r.Header.Get("Authorization")
	if got == "" {
		got = r.URL.Query().Get("authorization")
	}
	got = strings.TrimSpace(withoutBearer(got))
	if got == "" || len(got) > maxKeyLen {
		return false
	}
	want := sha256.Sum256([]byte(s.cfg.APIKey))
	have := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(want[:], have[:]) == 1
}

// withoutBearer returns v without a leading "Bearer " scheme, matched in
// any case; v without one is returned as it is.
func withoutBearer(v string) string {
	const scheme = "bearer "
	if len(v) >= len(scheme) && strings.EqualFold(v[:len(scheme)], scheme) {
		return v[len(scheme):]
	}
	return v
}
