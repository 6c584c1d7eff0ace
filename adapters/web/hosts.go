package web

import (
	"errors"
	"slices"
	"strconv"
	"strings"

	"github.com/wsserver/wsserver/core/wire"
)

// Hosts decides which Host and Origin header values the edge accepts, as Django's
// ALLOWED_HOSTS and Channels' origin validators do.
//
// Patterns are lowercase, as ParseHostPattern and ParseOriginPattern return them. A
// pattern is "*" (anything), a host name or bracketed IPv6 address ("example.com",
// "[::1]"), or a host name with a leading dot (".example.com"), which matches the name
// itself and every subdomain.
type Hosts struct {
	// Allowed lists the accepted Host header values, ports ignored
	// (DJANGO_ALLOWED_HOSTS). Its patterns carry no port.
	Allowed []string

	// Origins lists the accepted Origin header values as scheme-less host[:port]
	// patterns; an entry without a port accepts any port. Nil accepts no Origin
	// header: only requests without one pass. config.Hosts.AllowedOrigins gives the
	// list in force (ALLOWED_ORIGINS, or else the allowed hosts, with any port).
	Origins []string
}

// HostAllowed reports whether a Host header value ("a.com", "a.com:8000", "[::1]:8000")
// is allowed. The port is ignored and the comparison is case-insensitive; a value that
// is not a valid host[:port] is never allowed, not even by "*".
func (h Hosts) HostAllowed(host string) bool {
	domain, _, ok := splitHost(host)
	if !ok {
		return false
	}
	for _, p := range h.Allowed {
		if p == "*" || sameDomain(domain, p) {
			return true
		}
	}
	return false
}

// OriginAllowed reports whether an Origin header value ("http://a.com:8000") is
// allowed. Its scheme is dropped and its host[:port] compared with Origins; when the
// origin has no explicit port, the scheme's default (80 for http and ws, 443 for https
// and wss) is compared with a pattern's port. "*" allows every value, including
// "null".
func (h Hosts) OriginAllowed(origin string) bool {
	if slices.Contains(h.Origins, "*") {
		return true
	}
	domain, port, ok := splitOrigin(origin)
	if !ok {
		return false
	}
	for _, p := range h.Origins {
		pdomain, pport := splitPattern(p)
		if sameDomain(domain, pdomain) && (pport == "" || pport == port) {
			return true
		}
	}
	return false
}

// splitHost splits a Host header value into its domain and port the way Django's
// split_domain_port does: lowercase, one trailing dot dropped from the domain, and
// ok false unless the value matches
// ^([a-z0-9.-]+|\[[a-f0-9]*:[a-f0-9.:]+\])(:[0-9]+)?$.
func splitHost(host string) (domain, port string, ok bool) {
	host = wire.LowerASCII(host)
	rest := ""
	if strings.HasPrefix(host, "[") {
		end := strings.IndexByte(host, ']')
		if end < 0 || !validIPv6Literal(host[1:end]) {
			return "", "", false
		}
		domain, rest = host[:end+1], host[end+1:]
	} else {
		domain = host
		if i := strings.IndexByte(host, ':'); i >= 0 {
			domain, rest = host[:i], host[i:]
		}
		if domain == "" || !allIn(domain, isDomainByte) {
			return "", "", false
		}
		domain = strings.TrimSuffix(domain, ".")
	}
	if rest != "" {
		port = rest[1:]
		if rest[0] != ':' || port == "" || !allIn(port, isDigit) {
			return "", "", false
		}
	}
	if domain == "" {
		return "", "", false
	}
	return domain, port, true
}

// validIPv6Literal reports whether s, the text between brackets, matches Django's
// [a-f0-9]*:[a-f0-9.:]+.
func validIPv6Literal(s string) bool {
	i := strings.IndexByte(s, ':')
	return i >= 0 && i < len(s)-1 && allIn(s[:i], isHexByte) &&
		allIn(s[i+1:], func(b byte) bool { return isHexByte(b) || b == '.' || b == ':' })
}

// splitOrigin splits an Origin header value ("https://a.com:8443") into its domain and
// its port, the scheme's default when none is given.
func splitOrigin(origin string) (domain, port string, ok bool) {
	origin = wire.LowerASCII(origin)
	scheme, hostport, found := strings.Cut(origin, "://")
	if !found || !validScheme(scheme) {
		return "", "", false
	}
	domain, port, ok = splitHost(hostport)
	if !ok {
		return "", "", false
	}
	if port != "" {
		return domain, trimZeros(port), true
	}
	switch scheme {
	case "http", "ws":
		port = "80"
	case "https", "wss":
		port = "443"
	}
	return domain, port, true
}

// splitPattern splits a validated origin pattern into its domain pattern and port.
func splitPattern(p string) (domain, port string) {
	if strings.HasSuffix(p, "]") {
		return p, ""
	}
	if i := strings.LastIndexByte(p, ':'); i >= 0 {
		return p[:i], p[i+1:]
	}
	return p, ""
}

// sameDomain is Django's is_same_domain: pattern is an exact domain or a leading-dot
// pattern matching the domain and its subdomains.
func sameDomain(domain, pattern string) bool {
	if pattern == "" {
		return false
	}
	if pattern[0] == '.' {
		return strings.HasSuffix(domain, pattern) || domain == pattern[1:]
	}
	return domain == pattern
}

// ParseHostPattern validates one DJANGO_ALLOWED_HOSTS entry, already lowercase, and
// returns it as a Hosts.Allowed pattern: "*", a host name or bracketed IPv6 address,
// or a leading-dot domain, without a trailing dot. The error says what is wrong
// without repeating the entry.
func ParseHostPattern(e string) (string, error) {
	if e == "*" {
		return e, nil
	}
	if strings.Contains(e, "://") {
		return "", errors.New("must be a host name, not a URL")
	}
	name := strings.TrimPrefix(e, ".")
	domain, port, ok := splitHost(name)
	switch {
	case !ok, name != e && strings.HasPrefix(name, "["):
		return "", errors.New("is not a valid host name, IP address or .domain pattern")
	case port != "":
		return "", errors.New("must not include a port")
	}
	if name != e {
		domain = "." + domain
	}
	return domain, nil
}

// ParseOriginPattern validates one ALLOWED_ORIGINS entry, already lowercase
// ("https://a.com", "a.com:3000", ".a.com"), and returns it as a Hosts.Origins
// pattern: scheme-less host[:port], the port without leading zeros. The error says
// what is wrong without repeating the entry.
func ParseOriginPattern(e string) (string, error) {
	if e == "*" {
		return e, nil
	}
	if _, after, found := strings.Cut(e, "://"); found {
		e = after
	}
	e = strings.TrimSuffix(e, "/")
	name := strings.TrimPrefix(e, ".")
	domain, port, ok := splitHost(name)
	if !ok || name != e && strings.HasPrefix(name, "[") {
		return "", errors.New("is not a valid [scheme://]host[:port]")
	}
	if name != e {
		domain = "." + domain
	}
	if port == "" {
		return domain, nil
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "", errors.New("has a port outside 1..65535")
	}
	return domain + ":" + strconv.Itoa(n), nil
}

func validScheme(s string) bool {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	return allIn(s, func(b byte) bool {
		return b >= 'a' && b <= 'z' || isDigit(b) || b == '+' || b == '-' || b == '.'
	})
}

// trimZeros drops a port's leading zeros so that "08000" and "8000" compare equal.
func trimZeros(port string) string {
	if t := strings.TrimLeft(port, "0"); t != "" {
		return t
	}
	return "0"
}

func allIn(s string, ok func(byte) bool) bool {
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return false
		}
	}
	return true
}

func isDigit(b byte) bool      { return b >= '0' && b <= '9' }
func isHexByte(b byte) bool    { return isDigit(b) || b >= 'a' && b <= 'f' }
func isDomainByte(b byte) bool { return b >= 'a' && b <= 'z' || isDigit(b) || b == '.' || b == '-' }
