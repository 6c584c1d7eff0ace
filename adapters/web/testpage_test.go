package web_test

import (
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/web"
	"github.com/wsserver/wsserver/docs"
)

// noRedirects is a client that reports redirects instead of following them.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// getPage returns the status, headers and body of GET path.
func getPage(t *testing.T, f *fixture, path string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, f.http.URL+path, nil)
	require.NoError(t, err)
	resp, err := noRedirects.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, body
}

// hashOf is the CSP source that allows the inline block between open and
// the next close tag of page.
func hashOf(t *testing.T, page, open, closing string) string {
	t.Helper()
	_, rest, ok := strings.Cut(page, open)
	require.True(t, ok, "no %s in the page", open)
	block, _, ok := strings.Cut(rest, closing)
	require.True(t, ok, "no %s in the page", closing)
	sum := sha256.Sum256([]byte(block))
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

func TestTestPageServed(t *testing.T) {
	f := newFixture(t, func(c *web.Config) { c.TestPage = docs.WSTestPage })

	status, header, body := getPage(t, f, "/ws-test/")
	require.Equal(t, http.StatusOK, status)
	assert.Equal(t, docs.WSTestPage, body)
	assert.Equal(t, "text/html; charset=utf-8", header.Get("Content-Type"))
	assert.Equal(t, "no-store", header.Get("Cache-Control"))
	assert.Equal(t, "nosniff", header.Get("X-Content-Type-Options"))

	csp := header.Get("Content-Security-Policy")
	directives := map[string]string{}
	for d := range strings.SplitSeq(csp, ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
		directives[name] = value
	}
	page := string(docs.WSTestPage)
	assert.Equal(t, "'none'", directives["default-src"], csp)
	assert.Equal(t, hashOf(t, page, "<script>", "</script>"), directives["script-src"], csp)
	assert.Equal(t, hashOf(t, page, "<style>", "</style>"), directives["style-src"], csp)
	host := strings.TrimPrefix(f.http.URL, "http://")
	assert.Equal(t, "'self' ws://"+host+" wss://"+host, directives["connect-src"], csp)
	assert.Equal(t, "'none'", directives["frame-ancestors"], csp)
	assert.NotContains(t, csp, "unsafe-inline")

	status, header, _ = getPage(t, f, "/ws-test")
	assert.Equal(t, http.StatusMovedPermanently, status)
	assert.Equal(t, "/ws-test/", header.Get("Location"))
}

func TestTestPageDisabled(t *testing.T) {
	f := newFixture(t, nil)
	for _, path := range []string{"/ws-test/", "/ws-test"} {
		status, _, body := getPage(t, f, path)
		assert.Equal(t, http.StatusNotFound, status, path)
		assert.Contains(t, string(body), `"not_found"`, path)
	}
}

func TestTestPageChecksHost(t *testing.T) {
	f := newFixture(t, func(c *web.Config) { c.TestPage = docs.WSTestPage })
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, f.http.URL+"/ws-test/", nil)
	require.NoError(t, err)
	req.Host = "evil.example"
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	status, code := errorBody(t, resp)
	assert.Equal(t, http.StatusBadRequest, status)
	assert.Equal(t, "bad_host", code)
}
