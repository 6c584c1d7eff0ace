package web

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/wsserver/wsserver/core/wire"
)

func TestHostAllowed(t *testing.T) {
	hosts := Hosts{Allowed: []string{"localhost", "127.0.0.1", "[::1]", ".example.com", "exact.org"}}
	tests := []struct {
		host string
		want bool
	}{
		{"localhost", true},
		{"localhost:8000", true},
		{"LOCALHOST:8000", true},
		{"localhost.", true},
		{"localhost.:8000", true},
		{"127.0.0.1:80", true},
		{"[::1]", true},
		{"[::1]:8000", true},
		{"[0:0:0:0:0:0:0:1]", false},
		{"::1", false},
		{"example.com", true},
		{"a.example.com", true},
		{"A.B.Example.COM:443", true},
		{"badexample.com", false},
		{"example.com.evil.net", false},
		{"exact.org", true},
		{"www.exact.org", false},
		{"", false},
		{":8000", false},
		{"localhost:", false},
		{"localhost:80a", false},
		{"localhost:80:80", false},
		{"user@localhost", false},
		{"local host", false},
		{"localhost/", false},
		{"[::1", false},
		{"[::1]x", false},
		{"[]", false},
		{"[:]", false},
		{"lоcalhost", false}, // Cyrillic o
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			assert.Equal(t, tt.want, hosts.HostAllowed(tt.host))
		})
	}

	star := Hosts{Allowed: []string{"*"}}
	assert.True(t, star.HostAllowed("anything.at.all:1234"))
	assert.True(t, star.HostAllowed("[fe80::1]"))
	assert.False(t, star.HostAllowed("not valid"), `"*" still needs a valid host`)
	assert.False(t, star.HostAllowed(""))
	assert.False(t, Hosts{}.HostAllowed("localhost"))
}
func TestOriginAllowed(t *testing.T) {
	// derived is the default of ALLOWED_ORIGINS: the allowed hosts, with any port.
	derivedList := []string{"localhost", "[::1]", ".example.com"}
	derived := Hosts{Allowed: derivedList, Origins: derivedList}
	explicit := Hosts{
		Allowed: []string{"localhost"},
		Origins: []string{"app.com", "dev.com:3000", ".sub.net:443", "[::1]:8000", "plain.org:80"},
	}
	tests := []struct {
		hosts  Hosts
		origin string
		want   bool
	}{
		{derived, "http://localhost", true},
		{derived, "http://localhost:8000", true},
		{derived, "https://LOCALHOST:8443", true},
		{derived, "http://[::1]:8000", true},
		{derived, "https://www.example.com", true},
		{derived, "https://example.com:1", true},
		{derived, "https://evil.com", false},
		{derived, "https://localhost.evil.com", false},
		{derived, "null", false},
		{derived, "", false},
		{derived, "localhost", false},
		{derived, "localhost:8000", false},
		{derived, "//localhost", false},
		{derived, "http://localhost/", false},
		{derived, "http://user@localhost", false},
		{derived, "1http://localhost", false},
		{derived, "chrome-extension://localhost", true},

		{explicit, "https://app.com", true},
		{explicit, "http://app.com:9999", true},
		{explicit, "http://localhost", false},
		{explicit, "http://dev.com:3000", true},
		{explicit, "http://dev.com:03000", true},
		{explicit, "http://dev.com", false},
		{explicit, "http://dev.com:3001", false},
		{explicit, "https://a.sub.net", true},
		{explicit, "https://sub.net:443", true},
		{explicit, "http://a.sub.net", false},
		{explicit, "wss://a.sub.net", true},
		{explicit, "http://[::1]:8000", true},
		{explicit, "http://[::1]", false},
		{explicit, "http://plain.org", true},
		{explicit, "ws://plain.org", true},
		{explicit, "https://plain.org", false},
		{explicit, "foo://plain.org", false},

		{Hosts{Allowed: []string{"*"}, Origins: []string{"*"}}, "null", true},
		{Hosts{Allowed: []string{"x"}, Origins: []string{"*"}}, "https://anything", true},
		{Hosts{Allowed: []string{"*"}, Origins: []string{"app.com"}}, "https://other.com", false},
		{Hosts{Allowed: []string{"localhost"}}, "http://localhost", false}, // no Origins: no Origin passes
	}
	for _, tt := range tests {
		t.Run(tt.origin, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.hosts.OriginAllowed(tt.origin), "%+v", tt.hosts)
		})
	}
}

// FuzzHostAllowed checks the Host and Origin parsers against each other: they never
// panic, ignore ASCII case, agree on derived origins, and an explicit origin pattern
// never allows more than its host would.
func FuzzHostAllowed(f *testing.F) {
	for _, s := range []string{
		"localhost", "localhost:8000", "[::1]:8000", "a.example.com", "EXAMPLE.COM.",
		"[::ffff:127.0.0.1]", "..", "a.com:08000", "x:y:z", "[a:]", "",
	} {
		f.Add(s)
	}
	// Each policy's origins are derived from its hosts, as ALLOWED_ORIGINS's default is.
	var policies []Hosts
	for _, list := range [][]string{
		{"localhost", "[::1]", ".example.com", "127.0.0.1"},
		{"a.com", ".b.net", "[fe80::1]"},
	} {
		policies = append(policies, Hosts{Allowed: list, Origins: list})
	}
	f.Fuzz(func(t *testing.T, s string) {
		upper := strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' {
				return r - 'a' + 'A'
			}
			return r
		}, s)
		for _, p := range policies {
			got := p.HostAllowed(s)
			if got != p.HostAllowed(upper) {
				t.Fatalf("HostAllowed(%q) != HostAllowed(%q)", s, upper)
			}
			for _, scheme := range []string{"http://", "https://", "wss://"} {
				if o := p.OriginAllowed(scheme + s); o != got {
					t.Fatalf("derived OriginAllowed(%q) = %v, HostAllowed(%q) = %v", scheme+s, o, s, got)
				}
			}
			if p.OriginAllowed(s) != p.OriginAllowed(upper) {
				t.Fatalf("OriginAllowed(%q) != OriginAllowed(%q)", s, upper)
			}

			// Every allowed host, given as an explicit origin pattern with a port, allows
			// only origins its host allows.
			domain, port, ok := splitHost(s)
			if !ok || port == "" {
				continue
			}
			pattern, err := ParseOriginPattern(wire.LowerASCII(s))
			if err != nil {
				continue
			}
			explicit := Hosts{Allowed: p.Allowed, Origins: []string{pattern}}
			origin := "http://" + s
			if !explicit.OriginAllowed(origin) {
				t.Fatalf("origin %q not allowed by its own pattern %q", origin, pattern)
			}
			if !(Hosts{Origins: []string{domain}}).OriginAllowed(origin) {
				t.Fatalf("origin %q not allowed by its own host %q", origin, domain)
			}
		}
	})
}
