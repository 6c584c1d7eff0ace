// Package config parses wsserver's configuration from the process environment and an
// optional dotenv file into one typed, validated Config.
//
// Every variable is read once, in Load. A value is looked up in the environment first
// and in the dotenv file second, so the environment always wins; an empty value counts
// as unset. For the variables that have two names (DJANGO_SECRET_KEY or SECRET_KEY,
// DJANGO_DEBUG or DEBUG, DJANGO_ALLOWED_HOSTS or ALLOWED_HOSTS) the source is ranked
// first and the name second: SECRET_KEY in the environment beats DJANGO_SECRET_KEY in
// the file, and within one source the DJANGO_ name wins.
//
// Durations accept Go syntax ("25s", "1m30s", "20ms") or a bare decimal number, which
// always means seconds ("25", "0.5", and "0.02" for 20ms).
//
// Every number has a range, checked here, and no value is ever replaced by another.
// Where the range includes 0, 0 means what the setting's documentation says
// (SHUTDOWN_GRACE: no grace; LOCAL_MODEL_TOKEN_DELAY: no pause;
// MAXIMUM_GUARDRAIL_REWRITES: no rewrite; MAX_CONNECTIONS_PER_IP: no per-address
// limit); everywhere else (RATE_LIMIT_PER_SEC, RATE_LIMIT_BURST, MAX_CONNECTIONS, ...)
// 0 stops start-up with a message saying that it does not mean "no limit".
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/viper"
)

// DevSecretKey is the secret key used when none is configured. Load refuses it when
// DEBUG is off.
const DevSecretKey = "django-insecure-dev-only-change-me"

// maxValueBytes bounds every single value, wherever it comes from.
const maxValueBytes = 4096

// minSecretKeyLen is the shortest secret key accepted with DEBUG off. Django asks for 50;
// 32 random characters are plenty and match what common generators emit.
const minSecretKeyLen = 32

// Config is the whole configuration of one wsserver instance. Load fills it; the zero
// value is not useful.
type Config struct {
	// Debug turns on development behaviour: the development secret key, no API key,
	// the test page. DJANGO_DEBUG (also DEBUG); default false, so that a server
	// started with no settings (the image, a unit without its environment file) is
	// closed: Load refuses to start it without DJANGO_SECRET_KEY and AUTH_API_KEY (or
	// AUTH_DISABLED=1). Development opts in: DJANGO_DEBUG=1 go run ./cmd/wsserver.
	// Accepts 1/0, true/false, yes/no, on/off.
	Debug bool

	// InstanceID names this instance in /health/, logs and presence records.
	// INSTANCE_ID; default the host name, or "wsserver" when that is unknown. Never empty.
	InstanceID string

	HTTP         HTTP
	Auth         Auth
	WebSocket    WebSocket
	Store        Store
	Conversation Conversation
	Bedrock      Bedrock
	Log          Log

	// Warnings lists settings that are allowed but worth an operator's attention
	// (ALLOWED_HOSTS "*", DEBUG on, ...). Load fills it; the caller logs it.
	Warnings []string
}

// HTTP configures the listener and what it accepts.
type HTTP struct {
	// ListenAddr is the host:port the server listens on.
	// LISTEN_ADDR; default "127.0.0.1:8000". An empty host listens on every interface.
	ListenAddr string

	// Hosts holds the accepted Host and Origin header values.
	Hosts Hosts

	// MaxConnections caps open WebSocket connections on this instance; upgrades beyond
	// it get 503. MAX_CONNECTIONS; default 50000 (1..10,000,000; 0 is refused).
	MaxConnections int

	// MaxConnectionsPerIP caps the open WebSocket connections of one client address
	// (see TrustedProxies; IPv6 addresses count per /64), so that one client cannot
	// take all of MaxConnections; upgrades beyond it get 429 too_many_connections.
	// MAX_CONNECTIONS_PER_IP; default 1000 (0..10,000,000; 0 means no per-address
	// limit).
	MaxConnectionsPerIP int

	// TrustedProxies lists the proxies whose X-Forwarded-For is believed. The client
	// address (logged as "remote" and counted by MaxConnectionsPerIP) is the rightmost
	// X-Forwarded-For entry that is not a trusted proxy, when the TCP peer is one;
	// otherwise the TCP peer itself. TRUSTED_PROXIES, a comma list of CIDRs or
	// addresses ("10.0.0.0/16,192.168.1.7"); default empty: no proxy is trusted and
	// X-Forwarded-For is ignored. Behind an AWS ALB set the VPC's CIDR, or every
	// client counts as one of the ALB's addresses.
	TrustedProxies []netip.Prefix

	// ShutdownGrace is how long streaming answers may finish after SIGTERM.
	// SHUTDOWN_GRACE; default 25s (0..10m; 0 cancels the answers at once).
	ShutdownGrace time.Duration

	// TestPageEnabled serves the browser test page. TEST_PAGE_ENABLED; default the
	// value of Debug (off in production), an explicit setting wins.
	TestPageEnabled bool
}

// Auth holds the secrets and the API key check.
type Auth struct {
	// SecretKey signs what the server signs. DJANGO_SECRET_KEY (also SECRET_KEY);
	// default DevSecretKey, which is refused when Debug is off.
	SecretKey string

	// CSRFSecretKey signs CSRF tokens. CSRF_SECRET_KEY; default SecretKey (resolved
	// here, so it is never empty).
	CSRFSecretKey string

	// APIKey is the key clients must present. AUTH_API_KEY; default empty (no key
	// required), which is refused when Debug is off unless Disabled is set.
	APIKey string

	// Disabled turns the API key check off even when APIKey is set, and allows
	// running without a key when Debug is off. AUTH_DISABLED; default false.
	Disabled bool
}

// Required reports whether requests must carry the API key.
func (a Auth) Required() bool { return a.APIKey != "" && !a.Disabled }

// WebSocket holds the per-socket limits.
type WebSocket struct {
	// MaxMessageChars bounds a chat message in Unicode characters.
	// MAX_MESSAGE_CHARS; default 8000 (1..1,000,000).
	MaxMessageChars int

	// MaxFrameBytes bounds one incoming message; larger ones close the socket with 1009.
	// MAX_FRAME_BYTES; default 65536 (1024..16 MiB).
	MaxFrameBytes int

	// RateLimitPerSec is the sustained number of messages per second one socket may send.
	// RATE_LIMIT_PER_SEC; default 100 (above 0, at most 100000; 0 is refused, and
	// 100000 is as good as no limit).
	RateLimitPerSec float64

	// RateLimitBurst is how many messages one socket may send at once.
	// RATE_LIMIT_BURST; default 200 (1..1,000,000).
	RateLimitBurst int

	// SendQueueSize is the number of frames queued per socket before it is closed as
	// too slow (1008). SEND_QUEUE_SIZE; default 512 (8..65536).
	SendQueueSize int

	// PingInterval is the keepalive ping period; a peer silent for twice as long is
	// dropped. WS_PING_INTERVAL; default 25s (1s..10m).
	PingInterval time.Duration

	// WriteTimeout bounds one write to a socket. WS_WRITE_TIMEOUT; default 10s (1s..2m).
	WriteTimeout time.Duration
}

// Store says where shared state lives.
type Store struct {
	// RedisURL is a redis:// or rediss:// URL. REDIS_URL; default empty, meaning the
	// in-process channel layer and presence (one instance only).
	RedisURL string

	// DatabaseURL is a postgres:// URL. DATABASE_URL, or assembled from PSQL_HOST,
	// PSQL_PORT (default 5432), PSQL_BOT_USERNAME, PSQL_BOT_PASSWORD and
	// PSQL_STATE_DATABASE when PSQL_HOST is set; DATABASE_URL wins. Default empty,
	// meaning the in-process thread store.
	DatabaseURL string

	// PresenceTTL is how long the presence of a vanished instance lingers.
	// PRESENCE_TTL; default 30s (3s..1h).
	PresenceTTL time.Duration
	// MemoryMaxThreads bounds the in-process thread store (no database):
	// past it, the thread written longest ago is forgotten.
	// MEMORY_MAX_THREADS; default 10000 (1..10,000,000).
	MemoryMaxThreads int
}

// Conversation configures the conversation graph and the local model.
type Conversation struct {
	// MaxGuardrailRewrites is how many times a failing answer is rewritten before
	// the fallback. MAXIMUM_GUARDRAIL_REWRITES; default 2 (0..10).
	MaxGuardrailRewrites int

	// AppdataPath is a folder of appdata (prompts, rules). APPDATA_FOLDER_PATH;
	// default empty, meaning the appdata embedded in the binary.
	AppdataPath string

	// LocalTokenDelay is the pause between tokens streamed by the local model.
	// LOCAL_MODEL_TOKEN_DELAY; default 20ms (0..10s). A bare number means seconds,
	// as for every duration: write "20ms" or "0.02".
	LocalTokenDelay time.Duration
}

// Bedrock holds the AWS Bedrock settings. Region and ChatModelID together
// select the bedrock adapters (set one without the other and Load fails);
// the rest are stored as given. All default to empty.
type Bedrock struct {
	// Region is AWS_BEDROCK_REGION.
	Region string
	// ChatModelID is BEDROCK_MODEL_ID_CHAT.
	ChatModelID string
	// SummaryModelID is BEDROCK_MODEL_ID_SUMMARY.
	SummaryModelID string
	// GuardrailModelID is BEDROCK_MODEL_ID_GUARDRAIL.
	GuardrailModelID string
	// EscalationModelID is BEDROCK_MODEL_ID_ESCALATION.
	EscalationModelID string
	// GuardrailID is BEDROCK_GUARDRAIL_ID; set together with GuardrailVersion or not at all.
	GuardrailID string
	// GuardrailVersion is BEDROCK_GUARDRAIL_VERSION.
	GuardrailVersion string
	// EndpointURL overrides the Bedrock Runtime endpoint (an http or https URL).
	// BEDROCK_ENDPOINT_URL.
	EndpointURL string
}

// Log configures the process logger.
type Log struct {
	// Level is LOG_LEVEL: debug, info, warn (or warning) or error; default info.
	Level slog.Level
	// Format is LOG_FORMAT: "json" or "text"; default "json".
	Format string
}

// Load reads the configuration from the process environment and, when dotenvPath names
// an existing file, from that dotenv file; the environment wins. A missing file is
// fine; an unreadable or malformed one is an error. Every invalid variable is reported
// at once, each error naming its variable and never showing a secret.
func Load(dotenvPath string) (Config, error) {
	src, err := newSource(dotenvPath)
	if err != nil {
		return Config{}, err
	}
	l := &loader{src: src}
	cfg := l.load()
	if len(l.missing) > 0 {
		// One line that names everything a closed start lacks, after the
		// lines of each variable: the fix should not take one run per variable.
		l.errs = append(l.errs, fmt.Errorf("config: DJANGO_DEBUG is off (the default), so the server does not start without %s; set %s, or set DJANGO_DEBUG=1 for a development server that is open to anyone",
			strings.Join(l.missing, " and "), pronoun(len(l.missing))))
	}
	if len(l.errs) > 0 {
		return Config{}, errors.Join(l.errs...)
	}
	return cfg, nil
}

// vars lists every variable Load reads, in the order of .env.example.
var vars = []string{
	"DJANGO_SECRET_KEY", "SECRET_KEY", "DJANGO_DEBUG", "DEBUG",
	"DJANGO_ALLOWED_HOSTS", "ALLOWED_HOSTS", "ALLOWED_ORIGINS",
	"LISTEN_ADDR", "INSTANCE_ID", "TEST_PAGE_ENABLED", "TRUSTED_PROXIES",
	"CSRF_SECRET_KEY", "AUTH_API_KEY", "AUTH_DISABLED",
	"REDIS_URL", "PRESENCE_TTL",
	"DATABASE_URL", "MEMORY_MAX_THREADS", "PSQL_BOT_USERNAME", "PSQL_BOT_PASSWORD", "PSQL_HOST", "PSQL_PORT",
	"PSQL_STATE_DATABASE",
	"AWS_BEDROCK_REGION", "BEDROCK_MODEL_ID_CHAT", "BEDROCK_MODEL_ID_SUMMARY",
	"BEDROCK_MODEL_ID_GUARDRAIL", "BEDROCK_MODEL_ID_ESCALATION", "BEDROCK_GUARDRAIL_ID",
	"BEDROCK_GUARDRAIL_VERSION", "BEDROCK_ENDPOINT_URL",
	"MAXIMUM_GUARDRAIL_REWRITES", "APPDATA_FOLDER_PATH", "LOCAL_MODEL_TOKEN_DELAY",
	"MAX_MESSAGE_CHARS", "MAX_FRAME_BYTES", "RATE_LIMIT_PER_SEC", "RATE_LIMIT_BURST",
	"MAX_CONNECTIONS", "MAX_CONNECTIONS_PER_IP", "SEND_QUEUE_SIZE", "WS_PING_INTERVAL", "WS_WRITE_TIMEOUT",
	"SHUTDOWN_GRACE",
	"LOG_LEVEL", "LOG_FORMAT",
}

// source looks variables up in the environment, then in the dotenv file. Two viper
// instances keep the sources apart so that aliases can be ranked by source first.
type source struct {
	env  *viper.Viper
	file *viper.Viper // nil without a dotenv file
}

func newSource(dotenvPath string) (source, error) {
	env := viper.New()
	for _, name := range vars {
		if err := env.BindEnv(strings.ToLower(name), name); err != nil {
			return source{}, fmt.Errorf("config: bind %s: %w", name, err)
		}
	}
	src := source{env: env}
	if dotenvPath == "" {
		return src, nil
	}
	if _, err := os.Stat(dotenvPath); errors.Is(err, fs.ErrNotExist) {
		return src, nil
	}
	file := viper.New()
	file.SetConfigFile(dotenvPath)
	file.SetConfigType("dotenv")
	if err := file.ReadInConfig(); err != nil {
		return source{}, dotenvError(dotenvPath, err)
	}
	src.file = file
	return src, nil
}

// dotenvError describes a failure to read the dotenv file. The dotenv parser quotes the
// offending line, which may hold a secret, so only its line number is kept.
func dotenvError(path string, err error) error {
	var parseErr viper.ConfigParseError
	if !errors.As(err, &parseErr) {
		return fmt.Errorf("config: read %s: %w", path, err)
	}
	msg := parseErr.Error()
	if strings.Contains(msg, "missing quotes") {
		return fmt.Errorf("config: %s: malformed dotenv file: a quoted value is never closed", path)
	}
	if i, j := strings.IndexByte(msg, '`'), strings.LastIndexByte(msg, '`'); i >= 0 && j > i {
		bad := strings.TrimSpace(msg[i+1 : j])
		if data, readErr := os.ReadFile(path); readErr == nil { //nolint:gosec // path was just read by viper
			for n, line := range strings.Split(string(data), "\n") {
				if strings.TrimSpace(line) == bad {
					return fmt.Errorf("config: %s:%d: malformed dotenv line (want NAME=value)", path, n+1)
				}
			}
		}
	}
	return fmt.Errorf("config: %s: malformed dotenv file (want NAME=value lines)", path)
}

// lookup returns the first non-empty value among names, searching the environment
// before the file, and the name it was found under.
func (s source) lookup(names ...string) (value, name string, ok bool) {
	for _, v := range []*viper.Viper{s.env, s.file} {
		if v == nil {
			continue
		}
		for _, n := range names {
			if val := v.GetString(strings.ToLower(n)); strings.TrimSpace(val) != "" {
				return val, n, true
			}
		}
	}
	return "", names[0], false
}

// loader reads variables and collects every problem.
type loader struct {
	src      source
	errs     []error
	warnings []string
	missing  []string // settings a start with DEBUG off needs and lacks
}

func pronoun(n int) string {
	if n == 1 {
		return "it"
	}
	return "them"
}

func (l *loader) fail(name, format string, args ...any) {
	l.errs = append(l.errs, fmt.Errorf("config: %s: %s", name, fmt.Sprintf(format, args...)))
}

func (l *loader) warn(format string, args ...any) {
	l.warnings = append(l.warnings, fmt.Sprintf(format, args...))
}

// raw returns the value of the first of names that is set, unmodified, and the name
// it was found under. Values over the size limit are reported and count as unset.
func (l *loader) raw(names ...string) (value, name string, ok bool) {
	value, name, ok = l.src.lookup(names...)
	if ok && len(value) > maxValueBytes {
		l.fail(name, "value is %d bytes, over the %d-byte limit", len(value), maxValueBytes)
		return "", name, false
	}
	return value, name, ok
}

// str returns the trimmed value of the first of names that is set, or def.
func (l *loader) str(def string, names ...string) string {
	v, _, ok := l.raw(names...)
	if !ok {
		return def
	}
	return strings.TrimSpace(v)
}

func (l *loader) boolean(def bool, names ...string) (value, set bool) {
	v, name, ok := l.raw(names...)
	if !ok {
		return def, false
	}
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "true", "yes", "on":
		return true, true
	case "0", "false", "no", "off":
		return false, true
	}
	l.fail(name, "must be a boolean, got %s (use 1/0, true/false, yes/no or on/off)", quote(v))
	return def, true
}

func (l *loader) integer(name string, def, lo, hi int) int {
	v, _, ok := l.raw(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		l.fail(name, "must be an integer, got %s", quote(v))
		return def
	}
	if n < lo || n > hi {
		l.fail(name, "must be between %d and %d, got %d%s", lo, hi, n, zeroHint(n == 0))
		return def
	}
	return n
}

func (l *loader) float(name string, def, lo, hi float64) float64 {
	v, _, ok := l.raw(name)
	if !ok {
		return def
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		l.fail(name, "must be a number, got %s", quote(v))
		return def
	}
	if f <= lo || f > hi {
		l.fail(name, "must be above %g and at most %g, got %g%s", lo, hi, f, zeroHint(f == 0))
		return def
	}
	return f
}

func (l *loader) duration(name string, def, lo, hi time.Duration) time.Duration {
	v, _, ok := l.raw(name)
	if !ok {
		return def
	}
	d, err := parseDuration(strings.TrimSpace(v), hi)
	if err != nil {
		l.fail(name, "must be a duration like \"25s\" or a number of seconds, got %s", quote(v))
		return def
	}
	if d < lo || d > hi {
		l.fail(name, "must be between %s and %s, got %s", lo, hi, quote(v))
		return def
	}
	return d
}

// zeroHint explains a refused 0: no setting is silently replaced, and a 0 that is
// refused does not mean "no limit" either.
func zeroHint(zero bool) string {
	if !zero {
		return ""
	}
	return " (0 is not allowed here: it does not mean \"no limit\")"
}

// parseDuration parses Go duration syntax or a bare decimal number of seconds. Bare
// numbers above hi are clamped to hi+1s so that they fail the range check instead of
// overflowing.
func parseDuration(s string, hi time.Duration) (time.Duration, error) {
	if isDecimal(s) {
		secs, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, err
		}
		if secs > hi.Seconds() {
			return hi + time.Second, nil
		}
		return time.Duration(math.Round(secs * float64(time.Second))), nil
	}
	return time.ParseDuration(s)
}

// isDecimal reports whether s is digits with at most one dot, such as "25" or "0.5".
func isDecimal(s string) bool {
	digits, dots := 0, 0
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9':
			digits++
		case r == '.':
			dots++
		default:
			return false
		}
	}
	return digits > 0 && dots <= 1
}

// quote renders a value for an error message, shortened. Never use it on secrets.
func quote(v string) string {
	const limit = 64
	if len(v) > limit {
		return strconv.Quote(v[:limit]) + "..."
	}
	return strconv.Quote(v)
}

func (l *loader) load() Config {
	var c Config
	c.Debug, _ = l.boolean(false, "DJANGO_DEBUG", "DEBUG")
	c.InstanceID = l.instanceID()

	c.HTTP.ListenAddr = l.listenAddr()
	c.HTTP.Hosts.Allowed = l.allowedHosts()
	c.HTTP.Hosts.Origins = l.allowedOrigins()
	c.HTTP.MaxConnections = l.integer("MAX_CONNECTIONS", 50000, 1, 10_000_000)
	c.HTTP.MaxConnectionsPerIP = l.integer("MAX_CONNECTIONS_PER_IP", 1000, 0, 10_000_000)
	c.HTTP.TrustedProxies = l.trustedProxies()
	c.HTTP.ShutdownGrace = l.duration("SHUTDOWN_GRACE", 25*time.Second, 0, 10*time.Minute)
	if on, set := l.boolean(false, "TEST_PAGE_ENABLED"); set {
		c.HTTP.TestPageEnabled = on
	} else {
		c.HTTP.TestPageEnabled = c.Debug
	}

	c.Auth = l.auth(c.Debug)

	c.WebSocket = WebSocket{
		MaxMessageChars: l.integer("MAX_MESSAGE_CHARS", 8000, 1, 1_000_000),
		MaxFrameBytes:   l.integer("MAX_FRAME_BYTES", 65536, 1024, 16<<20),
		RateLimitPerSec: l.float("RATE_LIMIT_PER_SEC", 100, 0, 100000),
		RateLimitBurst:  l.integer("RATE_LIMIT_BURST", 200, 1, 1_000_000),
		SendQueueSize:   l.integer("SEND_QUEUE_SIZE", 512, 8, 65536),
		PingInterval:    l.duration("WS_PING_INTERVAL", 25*time.Second, time.Second, 10*time.Minute),
		WriteTimeout:    l.duration("WS_WRITE_TIMEOUT", 10*time.Second, time.Second, 2*time.Minute),
	}

	c.Store = Store{
		RedisURL:         l.redisURL(),
		DatabaseURL:      l.databaseURL(),
		PresenceTTL:      l.duration("PRESENCE_TTL", 30*time.Second, 3*time.Second, time.Hour),
		MemoryMaxThreads: l.integer("MEMORY_MAX_THREADS", 10000, 1, 10_000_000),
	}

	c.Conversation = Conversation{
		MaxGuardrailRewrites: l.integer("MAXIMUM_GUARDRAIL_REWRITES", 2, 0, 10),
		AppdataPath:          l.str("", "APPDATA_FOLDER_PATH"),
		LocalTokenDelay:      l.duration("LOCAL_MODEL_TOKEN_DELAY", 20*time.Millisecond, 0, 10*time.Second),
	}
	c.Bedrock = l.bedrock()
	c.Log = l.log()

	l.checkWarnings(c)
	c.Warnings = l.warnings
	return c
}

func (l *loader) instanceID() string {
	v, name, ok := l.raw("INSTANCE_ID")
	if !ok {
		if h, err := os.Hostname(); err == nil && validInstanceID(h) {
			return h
		}
		return "wsserver"
	}
	v = strings.TrimSpace(v)
	if !validInstanceID(v) {
		l.fail(name, "must be at most 255 printable characters without spaces, got %s", quote(v))
	}
	return v
}

func validInstanceID(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

func (l *loader) listenAddr() string {
	const def = "127.0.0.1:8000"
	v, name, ok := l.raw("LISTEN_ADDR")
	if !ok {
		return def
	}
	v = strings.TrimSpace(v)
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		l.fail(name, "must be host:port (such as \"0.0.0.0:8000\" or \":8000\"), got %s", quote(v))
		return def
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		l.fail(name, "port must be a number from 0 to 65535, got %s", quote(v))
		return def
	}
	return v
}

func (l *loader) allowedHosts() []string {
	const def = "127.0.0.1,localhost,[::1]"
	v, name, ok := l.raw("DJANGO_ALLOWED_HOSTS", "ALLOWED_HOSTS")
	if !ok {
		v = def
	}
	entries := splitList(v)
	if len(entries) == 0 {
		l.fail(name, "lists no host")
	}
	var hosts []string
	for _, entry := range entries {
		h, err := parseHostPattern(entry)
		if err != nil {
			l.fail(name, "entry %s %v", quote(entry), err)
			continue
		}
		hosts = append(hosts, h)
	}
	return hosts
}

func (l *loader) trustedProxies() []netip.Prefix {
	v, name, ok := l.raw("TRUSTED_PROXIES")
	if !ok {
		return nil
	}
	var out []netip.Prefix
	for _, entry := range splitList(v) {
		p, err := netip.ParsePrefix(entry)
		if err != nil {
			a, aerr := netip.ParseAddr(entry)
			if aerr != nil || a.Zone() != "" {
				l.fail(name, "entry %s is not a CIDR (such as 10.0.0.0/16) or an IP address", quote(entry))
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out
}

func (l *loader) allowedOrigins() []string {
	v, name, ok := l.raw("ALLOWED_ORIGINS")
	if !ok {
		return nil
	}
	var origins []string
	for _, entry := range splitList(v) {
		o, err := parseOriginPattern(entry)
		if err != nil {
			l.fail(name, "entry %s %v", quote(entry), err)
			continue
		}
		origins = append(origins, o)
	}
	return origins
}

// splitList splits a comma list into trimmed, lowercased, non-empty entries.
func splitList(v string) []string {
	var out []string
	for e := range strings.SplitSeq(v, ",") {
		if e = lowerASCII(strings.TrimSpace(e)); e != "" {
			out = append(out, e)
		}
	}
	return out
}

func (l *loader) auth(debug bool) Auth {
	var a Auth
	// Keys are trimmed like every other value: a stray newline from a secrets file
	// would otherwise make the API key impossible to send in a header.
	key, keyName, keySet := l.raw("DJANGO_SECRET_KEY", "SECRET_KEY")
	a.SecretKey = DevSecretKey
	if keySet {
		a.SecretKey = strings.TrimSpace(key)
	}
	csrf, csrfName, csrfSet := l.raw("CSRF_SECRET_KEY")
	a.CSRFSecretKey = a.SecretKey
	if csrfSet {
		a.CSRFSecretKey = strings.TrimSpace(csrf)
	}
	a.APIKey = l.str("", "AUTH_API_KEY")
	a.Disabled, _ = l.boolean(false, "AUTH_DISABLED")

	if debug {
		return a
	}
	// Production: refuse anything that looks like a development secret.
	if !keySet {
		l.fail(keyName, "required when DJANGO_DEBUG is off; set DJANGO_SECRET_KEY to a random value of at least %d characters", minSecretKeyLen)
		l.missing = append(l.missing, "DJANGO_SECRET_KEY")
	} else if why := weakSecret(a.SecretKey); why != "" {
		l.fail(keyName, "%s; set DJANGO_SECRET_KEY to a random value of at least %d characters when DJANGO_DEBUG is off", why, minSecretKeyLen)
	}
	if csrfSet {
		if why := weakSecret(a.CSRFSecretKey); why != "" {
			l.fail(csrfName, "%s; use a random value of at least %d characters when DJANGO_DEBUG is off", why, minSecretKeyLen)
		}
	}
	if a.APIKey == "" && !a.Disabled {
		l.fail("AUTH_API_KEY", "required when DJANGO_DEBUG is off (or set AUTH_DISABLED=1 to run without authentication)")
		l.missing = append(l.missing, "AUTH_API_KEY (or AUTH_DISABLED=1)")
	}
	return a
}

// weakSecret says why a secret is unfit for production, or returns "". It never
// includes the secret.
func weakSecret(s string) string {
	lower := strings.ToLower(s)
	switch {
	case isDevSecret(s):
		return "is the development placeholder"
	case strings.Contains(lower, "change-me"), strings.Contains(lower, "changeme"),
		strings.Contains(lower, "change_me"), strings.Contains(lower, "placeholder"):
		return "looks like a placeholder"
	case len(s) < minSecretKeyLen:
		return fmt.Sprintf("is shorter than %d characters", minSecretKeyLen)
	}
	distinct := map[rune]bool{}
	for _, r := range s {
		distinct[r] = true
	}
	if len(distinct) < 5 {
		return "has fewer than 5 distinct characters"
	}
	return ""
}

func (l *loader) redisURL() string {
	v, name, ok := l.raw("REDIS_URL")
	if !ok {
		return ""
	}
	v = strings.TrimSpace(v)
	// The URL may hold a password: describe the problem without the value.
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Hostname() == "" {
		l.fail(name, "must be a redis:// or rediss:// URL with a host, such as redis://127.0.0.1:6379/0")
		return ""
	}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" {
		if _, err := strconv.Atoi(db); err != nil {
			l.fail(name, "the path must be a database number, such as /0")
			return ""
		}
	}
	return v
}

func (l *loader) databaseURL() string {
	port := l.integer("PSQL_PORT", 5432, 1, 65535)
	host := l.str("", "PSQL_HOST")
	user := l.str("", "PSQL_BOT_USERNAME")
	password, _, _ := l.raw("PSQL_BOT_PASSWORD") // not trimmed: spaces may be part of it
	db := l.str("", "PSQL_STATE_DATABASE")

	if v, name, ok := l.raw("DATABASE_URL"); ok {
		v = strings.TrimSpace(v)
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			l.fail(name, "must be a postgres:// or postgresql:// URL")
			return ""
		}
		if host != "" {
			l.warn("DATABASE_URL and PSQL_HOST are both set: DATABASE_URL is used, the PSQL_* variables are ignored")
		}
		return v
	}
	if host == "" {
		if user != "" || password != "" || db != "" {
			l.warn("PSQL_* variables are set but PSQL_HOST is not: no database is configured, threads are kept in memory")
		}
		return ""
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.ContainsAny(host, "/@?#[] \t") {
		l.fail("PSQL_HOST", "must be a host name or IP address (use DATABASE_URL for a Unix socket)")
		return ""
	}
	if db == "" {
		l.fail("PSQL_STATE_DATABASE", "required when PSQL_HOST is set")
	}
	if user == "" {
		l.fail("PSQL_BOT_USERNAME", "required when PSQL_HOST is set")
	}
	if db == "" || user == "" {
		return ""
	}
	u := url.URL{
		Scheme: "postgres",
		User:   url.User(user),
		Host:   net.JoinHostPort(host, strconv.Itoa(port)),
		Path:   "/" + db,
	}
	if password != "" {
		u.User = url.UserPassword(user, password)
	}
	return u.String()
}

func (l *loader) bedrock() Bedrock {
	b := Bedrock{
		Region:            l.str("", "AWS_BEDROCK_REGION"),
		ChatModelID:       l.str("", "BEDROCK_MODEL_ID_CHAT"),
		SummaryModelID:    l.str("", "BEDROCK_MODEL_ID_SUMMARY"),
		GuardrailModelID:  l.str("", "BEDROCK_MODEL_ID_GUARDRAIL"),
		EscalationModelID: l.str("", "BEDROCK_MODEL_ID_ESCALATION"),
		GuardrailID:       l.str("", "BEDROCK_GUARDRAIL_ID"),
		GuardrailVersion:  l.str("", "BEDROCK_GUARDRAIL_VERSION"),
		EndpointURL:       l.str("", "BEDROCK_ENDPOINT_URL"),
	}
	// The bedrock adapters are selected by a region and a chat model
	// together; one without the other is a mistake, not the local model.
	switch {
	case b.Region != "" && b.ChatModelID == "":
		l.fail("BEDROCK_MODEL_ID_CHAT", "required when AWS_BEDROCK_REGION is set")
	case b.Region == "" && b.ChatModelID != "":
		l.fail("AWS_BEDROCK_REGION", "required when BEDROCK_MODEL_ID_CHAT is set")
	}
	switch {
	case b.GuardrailID != "" && b.GuardrailVersion == "":
		l.fail("BEDROCK_GUARDRAIL_VERSION", "required when BEDROCK_GUARDRAIL_ID is set")
	case b.GuardrailID == "" && b.GuardrailVersion != "":
		l.fail("BEDROCK_GUARDRAIL_ID", "required when BEDROCK_GUARDRAIL_VERSION is set")
	}
	if b.EndpointURL != "" {
		u, err := url.Parse(b.EndpointURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			l.fail("BEDROCK_ENDPOINT_URL", "must be an http:// or https:// URL with a host")
		}
	}
	return b
}

func (l *loader) log() Log {
	lg := Log{Level: slog.LevelInfo, Format: "json"}
	if v, name, ok := l.raw("LOG_LEVEL"); ok {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "debug":
			lg.Level = slog.LevelDebug
		case "info":
			lg.Level = slog.LevelInfo
		case "warn", "warning":
			lg.Level = slog.LevelWarn
		case "error":
			lg.Level = slog.LevelError
		default:
			l.fail(name, "must be debug, info, warn or error, got %s", quote(v))
		}
	}
	if v, name, ok := l.raw("LOG_FORMAT"); ok {
		switch f := strings.ToLower(strings.TrimSpace(v)); f {
		case "json", "text":
			lg.Format = f
		default:
			l.fail(name, "must be json or text, got %s", quote(v))
		}
	}
	return lg
}

func (l *loader) checkWarnings(c Config) {
	if c.Debug {
		l.warn("%s", debugWarning(c))
	}
	if slices.Contains(c.HTTP.Hosts.Allowed, "*") {
		l.warn("DJANGO_ALLOWED_HOSTS contains \"*\": requests for any Host are accepted")
	}
	if slices.Contains(c.HTTP.Hosts.Origins, "*") {
		l.warn("ALLOWED_ORIGINS contains \"*\": WebSocket upgrades from any Origin are accepted")
	}
	if c.Auth.Disabled {
		l.warn("AUTH_DISABLED is on: no API key is checked")
	}
	for _, p := range c.HTTP.TrustedProxies {
		if p.Bits() == 0 {
			l.warn("TRUSTED_PROXIES contains %s: every peer is trusted, so any client can choose its address with X-Forwarded-For", p)
		}
	}
}

// debugWarning is the one loud line of a start with DEBUG on: what is open, so that
// nobody mistakes a development server for a production one.
func debugWarning(c Config) string {
	var open []string
	if !c.Auth.Required() {
		open = append(open, "no API key is checked")
	}
	if isDevSecret(c.Auth.SecretKey) || isDevSecret(c.Auth.CSRFSecretKey) {
		open = append(open, "tokens are signed with the public development secret")
	}
	if c.HTTP.TestPageEnabled {
		open = append(open, "the test page is served at /ws-test/")
	}
	what := "development checks are relaxed"
	if len(open) > 0 {
		what = strings.Join(open, ", ")
	}
	return "DJANGO_DEBUG is on: THIS SERVER IS OPEN FOR DEVELOPMENT (" + what + "); never expose it, and leave DJANGO_DEBUG unset in production"
}

// LogValue renders the configuration as a log group with every secret masked: keys
// show as "set", "unset" or "placeholder", URLs with their password replaced by "xxxxx".
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Bool("debug", c.Debug),
		slog.String("instance_id", c.InstanceID),
		slog.Group("http",
			slog.String("listen_addr", c.HTTP.ListenAddr),
			slog.Any("allowed_hosts", c.HTTP.Hosts.Allowed),
			slog.Any("allowed_origins", c.HTTP.Hosts.AllowedOrigins()),
			slog.Bool("allowed_origins_derived", len(c.HTTP.Hosts.Origins) == 0),
			slog.Int("max_connections", c.HTTP.MaxConnections),
			slog.Int("max_connections_per_ip", c.HTTP.MaxConnectionsPerIP),
			slog.Any("trusted_proxies", c.HTTP.TrustedProxies),
			slog.Duration("shutdown_grace", c.HTTP.ShutdownGrace),
			slog.Bool("test_page_enabled", c.HTTP.TestPageEnabled),
		),
		slog.Group("auth",
			slog.String("secret_key", maskSecret(c.Auth.SecretKey)),
			slog.String("csrf_secret_key", maskCSRF(c.Auth)),
			slog.String("api_key", maskSecret(c.Auth.APIKey)),
			slog.Bool("disabled", c.Auth.Disabled),
			slog.Bool("required", c.Auth.Required()),
		),
		slog.Group("websocket",
			slog.Int("max_message_chars", c.WebSocket.MaxMessageChars),
			slog.Int("max_frame_bytes", c.WebSocket.MaxFrameBytes),
			slog.Float64("rate_limit_per_sec", c.WebSocket.RateLimitPerSec),
			slog.Int("rate_limit_burst", c.WebSocket.RateLimitBurst),
			slog.Int("send_queue_size", c.WebSocket.SendQueueSize),
			slog.Duration("ping_interval", c.WebSocket.PingInterval),
			slog.Duration("write_timeout", c.WebSocket.WriteTimeout),
		),
		slog.Group("store",
			slog.String("redis_url", maskURL(c.Store.RedisURL)),
			slog.String("database_url", maskURL(c.Store.DatabaseURL)),
			slog.Duration("presence_ttl", c.Store.PresenceTTL),
			slog.Int("memory_max_threads", c.Store.MemoryMaxThreads),
		),
		slog.Group("conversation",
			slog.Int("max_guardrail_rewrites", c.Conversation.MaxGuardrailRewrites),
			slog.String("appdata_path", c.Conversation.AppdataPath),
			slog.Duration("local_token_delay", c.Conversation.LocalTokenDelay),
		),
		slog.Group("bedrock",
			slog.String("region", c.Bedrock.Region),
			slog.String("model_id_chat", c.Bedrock.ChatModelID),
			slog.String("model_id_summary", c.Bedrock.SummaryModelID),
			slog.String("model_id_guardrail", c.Bedrock.GuardrailModelID),
			slog.String("model_id_escalation", c.Bedrock.EscalationModelID),
			slog.String("guardrail_id", c.Bedrock.GuardrailID),
			slog.String("guardrail_version", c.Bedrock.GuardrailVersion),
			slog.String("endpoint_url", maskURL(c.Bedrock.EndpointURL)),
		),
		slog.Group("log",
			slog.String("level", c.Log.Level.String()),
			slog.String("format", c.Log.Format),
		),
	)
}

// isDevSecret reports whether s is Django's or this package's development key.
func isDevSecret(s string) bool {
	return s == DevSecretKey || strings.HasPrefix(strings.ToLower(s), "django-insecure")
}

func maskSecret(s string) string {
	switch {
	case s == "":
		return "unset"
	case isDevSecret(s):
		return "placeholder"
	default:
		return "set"
	}
}

func maskCSRF(a Auth) string {
	if a.CSRFSecretKey == a.SecretKey {
		return "same as secret_key"
	}
	return maskSecret(a.CSRFSecretKey)
}

// maskURL returns u with its password, and any query parameter that looks like one,
// replaced by "xxxxx". A URL that does not parse is shown only as "set".
func maskURL(s string) string {
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil {
		return "set"
	}
	if u.RawQuery != "" {
		q := u.Query()
		for k := range q {
			lk := strings.ToLower(k)
			if strings.Contains(lk, "pass") || strings.Contains(lk, "secret") || strings.Contains(lk, "token") {
				q[k] = []string{"xxxxx"}
			}
		}
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// Hosts decides which Host and Origin header values the server accepts, as Django's
// ALLOWED_HOSTS and Channels' origin validators do.
//
// Patterns are lowercase. A pattern is "*" (anything), a host name or bracketed IPv6
// address ("example.com", "[::1]"), or a host name with a leading dot (".example.com"),
// which matches the name itself and every subdomain.
type Hosts struct {
	// Allowed lists the accepted Host header values, ports ignored.
	// DJANGO_ALLOWED_HOSTS (also ALLOWED_HOSTS), a comma list; default
	// "127.0.0.1,localhost,[::1]". Entries must not carry a scheme or a port.
	Allowed []string

	// Origins lists the accepted Origin header values as scheme-less host[:port]
	// patterns; an entry without a port accepts any port. ALLOWED_ORIGINS, a comma list
	// ("https://a.com" is stored as "a.com"); default empty, meaning that the Allowed
	// hosts are used with any port (see AllowedOrigins).
	Origins []string
}

// AllowedOrigins returns the origin patterns in force: Origins when set, else Allowed,
// whose entries carry no port and so accept an origin on any port.
func (h Hosts) AllowedOrigins() []string {
	if len(h.Origins) > 0 {
		return slices.Clone(h.Origins)
	}
	return slices.Clone(h.Allowed)
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
// allowed. Its scheme is dropped and its host[:port] compared with AllowedOrigins; when
// the origin has no explicit port, the scheme's default (80 for http and ws, 443 for
// https and wss) is compared with a pattern's port. "*" allows every value, including
// "null".
func (h Hosts) OriginAllowed(origin string) bool {
	patterns := h.Origins
	if len(patterns) == 0 {
		patterns = h.Allowed
	}
	if slices.Contains(patterns, "*") {
		return true
	}
	domain, port, ok := splitOrigin(origin)
	if !ok {
		return false
	}
	for _, p := range patterns {
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
	host = lowerASCII(host)
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
	origin = lowerASCII(origin)
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

// parseHostPattern validates one DJANGO_ALLOWED_HOSTS entry (already lowercase).
func parseHostPattern(e string) (string, error) {
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

// parseOriginPattern validates one ALLOWED_ORIGINS entry (already lowercase) and returns
// it as a scheme-less host[:port] pattern.
func parseOriginPattern(e string) (string, error) {
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

// lowerASCII lowercases ASCII letters only: header values are bytes, and Unicode case
// folding could turn an invalid host into a valid one.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
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
