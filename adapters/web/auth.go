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
// Authorization header, bare or as "Bearer <key>". With no key configured
// everything is allowed. The keys are compared in constant time, through
// their hashes so that not even the length shows.
func (s *Server) authorized(r *http.Request) bool {
	if s.cfg.APIKey == "" {
		return true
	}
	got := r.Header.Get("Authorization")
	if got == "" {
		got = r.URL.Query().Get("authorization")
	}
	if b, ok := strings.CutPrefix(got, "Bearer "); ok {
		got = b
	}
	got = strings.TrimSpace(got)
	if got == "" || len(got) > maxKeyLen {
		return false
	}
	want := sha256.Sum256([]byte(s.cfg.APIKey))
	have := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(want[:], have[:]) == 1
}
