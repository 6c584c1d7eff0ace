package config

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/viper"
)

// vars lists every variable Load reads, in the order of .env.example.
var vars = []string{
	"DJANGO_SECRET_KEY", "SECRET_KEY", "DJANGO_DEBUG", "DEBUG",
	"DJANGO_ALLOWED_HOSTS", "ALLOWED_HOSTS", "ALLOWED_ORIGINS",
	"LISTEN_ADDR", "INSTANCE_ID", "TEST_PAGE_ENABLED", "TRUSTED_PROXIES",
	"CSRF_SECRET_KEY", "AUTH_API_KEY", "AUTH_DISABLED",
	"REDIS_URL", "REDIS_CLUSTER", "REDIS_SHARDED_PUBSUB_PARTITIONS", "PRESENCE_TTL",
	"PRESENCE_DIFF_INTERVAL", "PRESENCE_LEAVE_GRACE", "PRESENCE_EVENTS_MAX",
	"SESSION_HISTORY_SIZE", "SESSION_HISTORY_TTL",
	"DATABASE_URL", "MEMORY_MAX_THREADS", "PSQL_BOT_USERNAME", "PSQL_BOT_PASSWORD", "PSQL_HOST", "PSQL_PORT",
	"PSQL_STATE_DATABASE",
	"AWS_BEDROCK_REGION", "BEDROCK_MODEL_ID_CHAT", "BEDROCK_MODEL_ID_SUMMARY",
	"BEDROCK_MODEL_ID_GUARDRAIL", "BEDROCK_MODEL_ID_ESCALATION", "BEDROCK_GUARDRAIL_ID",
	"BEDROCK_GUARDRAIL_VERSION", "BEDROCK_GUARDRAIL_STREAM_MODE", "BEDROCK_ENDPOINT_URL",
	"OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL_ID_CHAT", "OPENAI_MODEL_ID_SUMMARY",
	"OPENAI_MODEL_ID_GUARDRAIL", "OPENAI_MODEL_ID_ESCALATION", "OPENAI_STREAM_USAGE",
	"MAXIMUM_GUARDRAIL_REWRITES", "GUARDRAIL_FIRST_CHUNK_CHARS", "GUARDRAIL_CHUNK_CHARS",
	"APPDATA_FOLDER_PATH", "LOCAL_MODEL_TOKEN_DELAY", "MAX_QUEUED_PER_THREAD",
	"RESUME_TTL", "RESUME_MAX_EVENTS", "RESUME_LOG_INTERVAL",
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
