package web

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"regexp"
	"strings"

	"github.com/labstack/echo/v4"
)

// testPagePath is where the browser test page is served (PROTOCOL.md §8.7:
// DJANGO_DEBUG=1 or TEST_PAGE_ENABLED=1).
const testPagePath = "/ws-test/"

// testPage is the browser test page with its Content-Security-Policy.
type testPage struct {
	body []byte
	// policy is the CSP without connect-src, which depends on the Host.
	policy string
}

// inlineStyle and inlineScript match the page's inline blocks, whose exact
// text the policy allows by hash. The page's tags carry no attributes.
var (
	inlineStyle  = regexp.MustCompile(`(?s)<style>(.*?)</style>`)
	inlineScript = regexp.MustCompile(`(?s)<script>(.*?)</script>`)
)

// newTestPage prepares body to be served. The policy allows nothing but the
// page's own inline style and script, by their SHA-256 hashes (no
// 'unsafe-inline'), data: images (the empty favicon) and WebSockets to the
// page's own host: an XSS in the page could not load or send anything
// elsewhere.
func newTestPage(body []byte) *testPage {
	hashes := func(re *regexp.Regexp) string {
		var srcs []string
		for _, m := range re.FindAllSubmatch(body, -1) {
			sum := sha256.Sum256(m[1])
			srcs = append(srcs, "'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'")
		}
		if len(srcs) == 0 {
			return "'none'"
		}
		return strings.Join(srcs, " ")
	}
	policy := "default-src 'none'; script-src " + hashes(inlineScript) + "; style-src " + hashes(inlineStyle) +
		"; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
	return &testPage{body: body, policy: policy}
}

// routeTestPage serves the test page when the configuration carries one;
// otherwise /ws-test/ stays an unknown path (404).
func (s *Server) routeTestPage(e *echo.Echo) {
	if len(s.cfg.TestPage) == 0 {
		return
	}
	page := newTestPage(s.cfg.TestPage)
	e.GET(testPagePath, page.serve)
	e.GET(strings.TrimSuffix(testPagePath, "/"), func(c echo.Context) error {
		return c.Redirect(http.StatusMovedPermanently, testPagePath)
	})
}

func (p *testPage) serve(c echo.Context) error {
	h := c.Response().Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", p.policy+"; connect-src "+connectSrc(c.Request().Host))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	return c.Blob(http.StatusOK, "text/html; charset=utf-8", p.body)
}

// connectSrc allows WebSockets to the page's own host. CSP Level 3 lets
// 'self' cover ws: and wss: on the same host; the explicit sources are for
// browsers that predate it. A Host with anything but host[:port]
// characters gets 'self' alone, so that no header value reaches the policy
// unchecked.
func connectSrc(host string) string {
	if host == "" || len(host) > 262 || strings.IndexFunc(host, notHostChar) >= 0 {
		return "'self'"
	}
	return "'self' ws://" + host + " wss://" + host
}

func notHostChar(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return false
	case r == '.' || r == '-' || r == ':' || r == '[' || r == ']':
		return false
	}
	return true
}
