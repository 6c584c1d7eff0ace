package docs_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/wsserver/wsserver/docs"
)

// TestWSTestPageSelfContained keeps the test page loadable under the
// server's Content-Security-Policy (inline blocks allowed by hash, nothing
// else) and free of HTML injection sinks.
func TestWSTestPageSelfContained(t *testing.T) {
	page := string(docs.WSTestPage)
	if len(page) == 0 {
		t.Fatal("the embedded page is empty")
	}
	forbidden := []struct {
		what string
		re   *regexp.Regexp
	}{
		{"an external resource", regexp.MustCompile(`(?i)\b(src|href)\s*=\s*["']?\s*(https?:|//)`)},
		{"a CSS import or url()", regexp.MustCompile(`(?i)@import|url\(\s*["']?(https?:|//)`)},
		{"an inline event handler (blocked by the CSP)", regexp.MustCompile(`(?i)<[^>]*\son[a-z]+\s*=`)},
		{"a style attribute (blocked by the CSP)", regexp.MustCompile(`(?i)<[^>]*\sstyle\s*=`)},
		{"an HTML sink (insert text only)", regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function`)},
		{"a script or style tag with attributes (not hashed by the server)", regexp.MustCompile(`(?i)<(script|style)\s[^>]*>`)},
	}
	for _, f := range forbidden {
		if m := f.re.FindString(page); m != "" {
			t.Errorf("the page has %s: %q", f.what, m)
		}
	}
	for _, tag := range []string{"<script>", "<style>"} {
		if n := strings.Count(page, tag); n != 1 {
			t.Errorf("the page has %d %s blocks, want 1", n, tag)
		}
	}
	// The ids test/browser drives the page by.
	for _, id := range []string{
		"server-url", "api-key", "connect-all", "disconnect-all",
		"chat-connect", "chat-disconnect", "chat-status", "chat-log", "chat-message", "chat-send", "chat-cancel",
		"chat-thread", "chat-channel", "chat-data", "chat-thread-id",
		"session-id", "session-user-type", "session-client-type", "session-connect", "session-disconnect",
		"session-status", "session-msg", "session-data", "session-send", "session-log",
		"presence-count", "presence-list", "events",
	} {
		if !strings.Contains(page, `id="`+id+`"`) {
			t.Errorf("the page has no element with id %q", id)
		}
	}
}
