package web

import (
	"strings"
	"testing"
)

func TestConnectSrc(t *testing.T) {
	tests := []struct{ host, want string }{
		{"127.0.0.1:8000", "'self' ws://127.0.0.1:8000 wss://127.0.0.1:8000"},
		{"[::1]:8000", "'self' ws://[::1]:8000 wss://[::1]:8000"},
		{"Chat.Example.com", "'self' ws://Chat.Example.com wss://Chat.Example.com"},
		{"", "'self'"},
		{"a.com; script-src *", "'self'"},
		{"a.com\r\nX: y", "'self'"},
		{"a.com/path", "'self'"},
	}
	for _, tt := range tests {
		if got := connectSrc(tt.host); got != tt.want {
			t.Errorf("connectSrc(%q) = %q, want %q", tt.host, got, tt.want)
		}
	}
}

func TestNewTestPageHashesEveryBlock(t *testing.T) {
	p := newTestPage([]byte("<style>a{}</style><p>x</p><script>1</script><script>2</script>"))
	// The SHA-256 of "a{}", "1" and "2", base64.
	want := "default-src 'none'; script-src 'sha256-a4ayc/80/OGda4BO/1o/V0etpOqiLx1JwB5S3beHW0s=' 'sha256-1HNeOiZeFu7gP1lxi5tdAwGcB9i2xR+Q2jpmbuwTqzU='" +
		"; style-src 'sha256-X1RutGBrXCt9KkSaXMK7tHftWiRscFHOhxsS8tv8hBk='" +
		"; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
	if p.policy != want {
		t.Errorf("policy\n got %s\nwant %s", p.policy, want)
	}
	if p := newTestPage([]byte("<p>static</p>")); !strings.HasPrefix(p.policy, "default-src 'none'; script-src 'none'; style-src 'none';") {
		t.Errorf("a page without blocks allows something: %s", p.policy)
	}
}
