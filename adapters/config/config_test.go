package config

import (
	"bytes"
	"log/slog"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// goodSecret passes the production checks.
const goodSecret = "q7Vx2LmZp9Rt4Ws8Yb1Nc6Kd3Fg5Hj0A"

// clearEnv unsets every variable Load reads for the rest of the test.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, name := range vars {
		t.Setenv(name, "") // restores the old value after the test
		require.NoError(t, os.Unsetenv(name))
	}
}

// loadEnv loads with exactly env set and no dotenv file.
func loadEnv(t *testing.T, env map[string]string) (Config, error) {
	t.Helper()
	clearEnv(t)
	for k, v := range env {
		t.Setenv(k, v)
	}
	return Load("")
}

func writeDotenv(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), ".env")
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

// dev returns a DEBUG-on environment plus extra: the tests of settings other than
// the secrets run on it, as `DJANGO_DEBUG=1 go run ./cmd/wsserver` does.
func dev(extra map[string]string) map[string]string {
	env := map[string]string{"DJANGO_DEBUG": "1"}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

// clearEnvDev is clearEnv with DJANGO_DEBUG=1, for tests that read a dotenv file.
func clearEnvDev(t *testing.T) {
	t.Helper()
	clearEnv(t)
	t.Setenv("DJANGO_DEBUG", "1")
}

// production returns a valid DEBUG-off environment plus extra.
func production(extra map[string]string) map[string]string {
	env := map[string]string{
		"DJANGO_DEBUG":      "0",
		"DJANGO_SECRET_KEY": goodSecret,
		"AUTH_API_KEY":      "api-key-for-tests",
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

// errLines splits a joined error into its messages.
func errLines(err error) []string {
	if err == nil {
		return nil
	}
	return strings.Split(err.Error(), "\n")
}

// A start with no settings at all, as `docker run` of the image is, refuses to
// start and names everything it lacks at once.
func TestLoadEmptyEnvironmentRefusesToStart(t *testing.T) {
	cfg, err := loadEnv(t, nil)
	require.Error(t, err)
	assert.Equal(t, Config{}, cfg)
	assert.Equal(t, []string{
		"config: DJANGO_SECRET_KEY: required when DJANGO_DEBUG is off; set DJANGO_SECRET_KEY to a random value of at least 32 characters",
		"config: AUTH_API_KEY: required when DJANGO_DEBUG is off (or set AUTH_DISABLED=1 to run without authentication)",
		"config: DJANGO_DEBUG is off (the default), so the server does not start without DJANGO_SECRET_KEY and AUTH_API_KEY (or AUTH_DISABLED=1); " +
			"set them, or set DJANGO_DEBUG=1 for a development server that is open to anyone",
	}, errLines(err))

	_, err = loadEnv(t, map[string]string{"AUTH_DISABLED": "1"})
	require.Error(t, err)
	assert.Equal(t, "config: DJANGO_DEBUG is off (the default), so the server does not start without DJANGO_SECRET_KEY; "+
		"set it, or set DJANGO_DEBUG=1 for a development server that is open to anyone", errLines(err)[1])
}

// The development defaults: DJANGO_DEBUG=1 and nothing else.
func TestLoadDefaults(t *testing.T) {
	cfg, err := loadEnv(t, dev(nil))
	require.NoError(t, err)

	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "wsserver"
	}
	want := Config{
		Debug:      true,
		InstanceID: host,
		HTTP: HTTP{
			ListenAddr:      "127.0.0.1:8000",
			Hosts:           Hosts{Allowed: []string{"127.0.0.1", "localhost", "[::1]"}},
			MaxConnections:      50000,
			MaxConnectionsPerIP: 1000,
			ShutdownGrace:       25 * time.Second,
			TestPageEnabled:     true,
		},
		Auth: Auth{SecretKey: DevSecretKey, CSRFSecretKey: DevSecretKey},
		WebSocket: WebSocket{
			MaxMessageChars: 8000,
			MaxFrameBytes:   65536,
			RateLimitPerSec: 100,
			RateLimitBurst:  200,
			SendQueueSize:   512,
			PingInterval:    25 * time.Second,
			WriteTimeout:    10 * time.Second,
		},
		Store:        Store{PresenceTTL: 30 * time.Second, MemoryMaxThreads: 10000},
		Conversation: Conversation{MaxGuardrailRewrites: 2, LocalTokenDelay: 20 * time.Millisecond},
		Log:          Log{Level: slog.LevelInfo, Format: "json"},
		Warnings:     cfg.Warnings,
	}
	assert.Equal(t, want, cfg)
	require.Len(t, cfg.Warnings, 1)
	assert.Equal(t, "DJANGO_DEBUG is on: THIS SERVER IS OPEN FOR DEVELOPMENT (no API key is checked, "+
		"tokens are signed with the public development secret, the test page is served at /ws-test/); "+
		"never expose it, and leave DJANGO_DEBUG unset in production", cfg.Warnings[0])
	assert.False(t, cfg.Auth.Required())
	assert.Equal(t, []string{"127.0.0.1", "localhost", "[::1]"}, cfg.HTTP.Hosts.AllowedOrigins())
}

func TestLoadValues(t *testing.T) {
	cfg, err := loadEnv(t, map[string]string{
		"DJANGO_SECRET_KEY":           goodSecret,
		"INSTANCE_ID":                 "i-0abc123",
		"LISTEN_ADDR":                 ":9000",
		"DJANGO_ALLOWED_HOSTS":        " A.example.com , ,.Example.ORG,host.,[::1],* ",
		"ALLOWED_ORIGINS":             "https://App.example.com, http://b.com:08000/, .c.com:443, [::1]:3000",
		"MAX_CONNECTIONS":             "10",
		"MAX_CONNECTIONS_PER_IP":      "0",
		"TRUSTED_PROXIES":             " 10.0.0.0/16, 192.168.1.7 ,10.1.2.3/8,2001:DB8::/32,::1",
		"SHUTDOWN_GRACE":              "0",
		"AUTH_API_KEY":                " k\n",
		"MAX_MESSAGE_CHARS":           "1",
		"MAX_FRAME_BYTES":             "1024",
		"RATE_LIMIT_PER_SEC":          "0.5",
		"RATE_LIMIT_BURST":            "1",
		"SEND_QUEUE_SIZE":             "8",
		"WS_PING_INTERVAL":            "1m30s",
		"WS_WRITE_TIMEOUT":            "2.5",
		"PRESENCE_TTL":                "3",
		"REDIS_URL":                   "rediss://user:pw@cache.internal:6380/2",
		"MAXIMUM_GUARDRAIL_REWRITES":  "0",
		"APPDATA_FOLDER_PATH":         "/srv/appdata",
		"LOCAL_MODEL_TOKEN_DELAY":     "0",
		"AWS_BEDROCK_REGION":          "eu-west-1",
		"BEDROCK_MODEL_ID_CHAT":       "chat",
		"BEDROCK_MODEL_ID_SUMMARY":    "summary",
		"BEDROCK_MODEL_ID_GUARDRAIL":  "guard",
		"BEDROCK_MODEL_ID_ESCALATION": "esc",
		"BEDROCK_GUARDRAIL_ID":        "gr-1",
		"BEDROCK_GUARDRAIL_VERSION":   "DRAFT",
		"BEDROCK_ENDPOINT_URL":        "http://127.0.0.1:4566",
		"LOG_LEVEL":                   "WARNING",
		"LOG_FORMAT":                  "Text",
	})
	require.NoError(t, err)

	assert.Equal(t, "i-0abc123", cfg.InstanceID)
	assert.Equal(t, ":9000", cfg.HTTP.ListenAddr)
	assert.Equal(t, []string{"a.example.com", ".example.org", "host", "[::1]", "*"}, cfg.HTTP.Hosts.Allowed)
	assert.Equal(t, []string{"app.example.com", "b.com:8000", ".c.com:443", "[::1]:3000"}, cfg.HTTP.Hosts.Origins)
	assert.Equal(t, 10, cfg.HTTP.MaxConnections)
	assert.Equal(t, 0, cfg.HTTP.MaxConnectionsPerIP, "0 is honoured: no per-address limit")
	assert.Equal(t, []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/16"), netip.MustParsePrefix("192.168.1.7/32"),
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("::1/128"),
	}, cfg.HTTP.TrustedProxies)
	assert.Equal(t, time.Duration(0), cfg.HTTP.ShutdownGrace)
	assert.Equal(t, "k", cfg.Auth.APIKey, "keys are trimmed")
	assert.True(t, cfg.Auth.Required())
	assert.Equal(t, WebSocket{
		MaxMessageChars: 1, MaxFrameBytes: 1024, RateLimitPerSec: 0.5, RateLimitBurst: 1,
		SendQueueSize: 8, PingInterval: 90 * time.Second, WriteTimeout: 2500 * time.Millisecond,
	}, cfg.WebSocket)
	assert.Equal(t, Store{RedisURL: "rediss://user:pw@cache.internal:6380/2", PresenceTTL: 3 * time.Second, MemoryMaxThreads: 10000}, cfg.Store)
	assert.Equal(t, Conversation{AppdataPath: "/srv/appdata"}, cfg.Conversation)
	assert.Equal(t, Bedrock{
		Region: "eu-west-1", ChatModelID: "chat", SummaryModelID: "summary", GuardrailModelID: "guard",
		EscalationModelID: "esc", GuardrailID: "gr-1", GuardrailVersion: "DRAFT", EndpointURL: "http://127.0.0.1:4566",
	}, cfg.Bedrock)
	assert.Equal(t, Log{Level: slog.LevelWarn, Format: "text"}, cfg.Log)
}

func TestLoadParseErrors(t *testing.T) {
	long := strings.Repeat("a", maxValueBytes+1)
	tests := []struct {
		env  map[string]string
		want []string // each message, in full or a prefix of it
	}{
		{map[string]string{"DJANGO_DEBUG": "maybe"}, []string{`config: DJANGO_DEBUG: must be a boolean, got "maybe"`}},
		{map[string]string{"DEBUG": "2"}, []string{`config: DEBUG: must be a boolean, got "2"`}},
		{map[string]string{"AUTH_DISABLED": "y"}, []string{`config: AUTH_DISABLED: must be a boolean`}},
		{map[string]string{"TEST_PAGE_ENABLED": "enabled"}, []string{`config: TEST_PAGE_ENABLED: must be a boolean`}},
		{map[string]string{"MAX_MESSAGE_CHARS": "8k"}, []string{`config: MAX_MESSAGE_CHARS: must be an integer, got "8k"`}},
		{map[string]string{"MAX_MESSAGE_CHARS": "1000001"}, []string{`config: MAX_MESSAGE_CHARS: must be between`}},
		{map[string]string{"MAX_FRAME_BYTES": "1023"}, []string{`config: MAX_FRAME_BYTES: must be between 1024 and 16777216`}},
		{map[string]string{"MAX_FRAME_BYTES": "16777217"}, []string{`config: MAX_FRAME_BYTES: must be between`}},
		{map[string]string{"RATE_LIMIT_PER_SEC": "0"}, []string{`config: RATE_LIMIT_PER_SEC: must be above 0 and at most 100000, got 0 (0 is not allowed here: it does not mean "no limit")`}},
		{map[string]string{"RATE_LIMIT_PER_SEC": "100001"}, []string{`config: RATE_LIMIT_PER_SEC: must be above`}},
		{map[string]string{"RATE_LIMIT_PER_SEC": "NaN"}, []string{`config: RATE_LIMIT_PER_SEC: must be a number, got "NaN"`}},
		{map[string]string{"RATE_LIMIT_PER_SEC": "fast"}, []string{`config: RATE_LIMIT_PER_SEC: must be a number`}},
		{map[string]string{"RATE_LIMIT_BURST": "0"}, []string{`config: RATE_LIMIT_BURST: must be between 1 and 1000000, got 0 (0 is not allowed here: it does not mean "no limit")`}},
		{map[string]string{"MAX_CONNECTIONS": "0"}, []string{`config: MAX_CONNECTIONS: must be between 1 and 10000000, got 0 (0 is not allowed here`}},
		{map[string]string{"MAX_MESSAGE_CHARS": "0"}, []string{`config: MAX_MESSAGE_CHARS: must be between 1 and 1000000, got 0 (0 is not allowed here`}},
		{map[string]string{"MEMORY_MAX_THREADS": "0"}, []string{`config: MEMORY_MAX_THREADS: must be between 1 and 10000000, got 0 (0 is not allowed here`}},
		{map[string]string{"MAX_CONNECTIONS_PER_IP": "-1"}, []string{`config: MAX_CONNECTIONS_PER_IP: must be between 0 and 10000000, got -1`}},
		{map[string]string{"TRUSTED_PROXIES": "10.0.0.0/16,alb.internal"}, []string{`config: TRUSTED_PROXIES: entry "alb.internal" is not a CIDR (such as 10.0.0.0/16) or an IP address`}},
		{map[string]string{"TRUSTED_PROXIES": "10.0.0.0/33"}, []string{`config: TRUSTED_PROXIES: entry "10.0.0.0/33" is not a CIDR`}},
		{map[string]string{"TRUSTED_PROXIES": "fe80::1%eth0"}, []string{`config: TRUSTED_PROXIES: entry "fe80::1%eth0" is not a CIDR`}},
		{map[string]string{"SEND_QUEUE_SIZE": "7"}, []string{`config: SEND_QUEUE_SIZE: must be between 8 and 65536`}},
		{map[string]string{"SEND_QUEUE_SIZE": "65537"}, []string{`config: SEND_QUEUE_SIZE: must be between`}},
		{map[string]string{"MAXIMUM_GUARDRAIL_REWRITES": "11"}, []string{`config: MAXIMUM_GUARDRAIL_REWRITES: must be between 0 and 10`}},
		{map[string]string{"MAXIMUM_GUARDRAIL_REWRITES": "-1"}, []string{`config: MAXIMUM_GUARDRAIL_REWRITES: must be between`}},
		{map[string]string{"PRESENCE_TTL": "2s"}, []string{`config: PRESENCE_TTL: must be between 3s and 1h0m0s, got "2s"`}},
		{map[string]string{"PRESENCE_TTL": "7200"}, []string{`config: PRESENCE_TTL: must be between`}},
		{map[string]string{"PRESENCE_TTL": "soon"}, []string{`config: PRESENCE_TTL: must be a duration like "25s" or a number of seconds, got "soon"`}},
		{map[string]string{"PRESENCE_TTL": "-5"}, []string{`config: PRESENCE_TTL: must be a duration`}},
		{map[string]string{"SHUTDOWN_GRACE": "-1s"}, []string{`config: SHUTDOWN_GRACE: must be between 0s and 10m0s`}},
		{map[string]string{"SHUTDOWN_GRACE": "1e9"}, []string{`config: SHUTDOWN_GRACE: must be a duration`}},
		{map[string]string{"WS_PING_INTERVAL": "500ms"}, []string{`config: WS_PING_INTERVAL: must be between 1s and 10m0s`}},
		{map[string]string{"WS_WRITE_TIMEOUT": "3m"}, []string{`config: WS_WRITE_TIMEOUT: must be between 1s and 2m0s`}},
		{map[string]string{"LOCAL_MODEL_TOKEN_DELAY": "20"}, []string{`config: LOCAL_MODEL_TOKEN_DELAY: must be between 0s and 10s, got "20"`}},
		{map[string]string{"LOCAL_MODEL_TOKEN_DELAY": "99999999999999999999"}, []string{`config: LOCAL_MODEL_TOKEN_DELAY: must be between`}},
		{map[string]string{"LISTEN_ADDR": "8000"}, []string{`config: LISTEN_ADDR: must be host:port`}},
		{map[string]string{"LISTEN_ADDR": "localhost:http"}, []string{`config: LISTEN_ADDR: port must be a number from 0 to 65535`}},
		{map[string]string{"LISTEN_ADDR": ":65536"}, []string{`config: LISTEN_ADDR: port must be a number`}},
		{map[string]string{"INSTANCE_ID": "two words"}, []string{`config: INSTANCE_ID: must be at most 255 printable characters`}},
		{map[string]string{"LOG_LEVEL": "verbose"}, []string{`config: LOG_LEVEL: must be debug, info, warn or error, got "verbose"`}},
		{map[string]string{"LOG_FORMAT": "xml"}, []string{`config: LOG_FORMAT: must be json or text, got "xml"`}},
		{map[string]string{"REDIS_URL": "http://cache:6379"}, []string{`config: REDIS_URL: must be a redis:// or rediss:// URL`}},
		{map[string]string{"REDIS_URL": "redis://"}, []string{`config: REDIS_URL: must be a redis:// or rediss:// URL`}},
		{map[string]string{"REDIS_URL": "redis://cache/zero"}, []string{`config: REDIS_URL: the path must be a database number`}},
		{map[string]string{"DATABASE_URL": "mysql://u:p@h/db"}, []string{`config: DATABASE_URL: must be a postgres:// or postgresql:// URL`}},
		{map[string]string{"PSQL_PORT": "0"}, []string{`config: PSQL_PORT: must be between 1 and 65535`}},
		{map[string]string{"PSQL_HOST": "db"}, []string{
			`config: PSQL_STATE_DATABASE: required when PSQL_HOST is set`,
			`config: PSQL_BOT_USERNAME: required when PSQL_HOST is set`,
		}},
		{map[string]string{"PSQL_HOST": "db", "PSQL_BOT_USERNAME": "bot"}, []string{`config: PSQL_STATE_DATABASE: required`}},
		{map[string]string{"PSQL_HOST": "db", "PSQL_STATE_DATABASE": "state"}, []string{`config: PSQL_BOT_USERNAME: required`}},
		{map[string]string{"PSQL_HOST": "/var/run/postgresql", "PSQL_STATE_DATABASE": "s", "PSQL_BOT_USERNAME": "u"}, []string{`config: PSQL_HOST: must be a host name`}},
		{map[string]string{"AWS_BEDROCK_REGION": "eu-west-1"}, []string{`config: BEDROCK_MODEL_ID_CHAT: required when AWS_BEDROCK_REGION is set`}},
		{map[string]string{"BEDROCK_MODEL_ID_CHAT": "chat"}, []string{`config: AWS_BEDROCK_REGION: required when BEDROCK_MODEL_ID_CHAT is set`}},
		{map[string]string{"AWS_BEDROCK_REGION": "eu-west-1", "BEDROCK_MODEL_ID_SUMMARY": "summary"}, []string{`config: BEDROCK_MODEL_ID_CHAT: required when AWS_BEDROCK_REGION is set`}},
		{map[string]string{"BEDROCK_GUARDRAIL_ID": "gr"}, []string{`config: BEDROCK_GUARDRAIL_VERSION: required when BEDROCK_GUARDRAIL_ID is set`}},
		{map[string]string{"BEDROCK_GUARDRAIL_VERSION": "1"}, []string{`config: BEDROCK_GUARDRAIL_ID: required when BEDROCK_GUARDRAIL_VERSION is set`}},
		{map[string]string{"BEDROCK_ENDPOINT_URL": "ftp://x"}, []string{`config: BEDROCK_ENDPOINT_URL: must be an http:// or https:// URL`}},
		{map[string]string{"BEDROCK_ENDPOINT_URL": "localhost:4566"}, []string{`config: BEDROCK_ENDPOINT_URL: must be an http:// or https:// URL`}},
		{map[string]string{"DJANGO_ALLOWED_HOSTS": "a.com:8000"}, []string{`config: DJANGO_ALLOWED_HOSTS: entry "a.com:8000" must not include a port`}},
		{map[string]string{"DJANGO_ALLOWED_HOSTS": "https://a.com"}, []string{`config: DJANGO_ALLOWED_HOSTS: entry "https://a.com" must be a host name, not a URL`}},
		{map[string]string{"ALLOWED_HOSTS": "a_b.com"}, []string{`config: ALLOWED_HOSTS: entry "a_b.com" is not a valid host name`}},
		{map[string]string{"DJANGO_ALLOWED_HOSTS": ".[::1]"}, []string{`config: DJANGO_ALLOWED_HOSTS: entry ".[::1]" is not a valid`}},
		{map[string]string{"DJANGO_ALLOWED_HOSTS": " , ,"}, []string{`config: DJANGO_ALLOWED_HOSTS: lists no host`}},
		{map[string]string{"ALLOWED_ORIGINS": "https://a.com/app"}, []string{`config: ALLOWED_ORIGINS: entry "https://a.com/app" is not a valid [scheme://]host[:port]`}},
		{map[string]string{"ALLOWED_ORIGINS": "a.com:0"}, []string{`config: ALLOWED_ORIGINS: entry "a.com:0" has a port outside 1..65535`}},
		{map[string]string{"ALLOWED_ORIGINS": "a.com:99999"}, []string{`config: ALLOWED_ORIGINS: entry "a.com:99999" has a port outside`}},
		{map[string]string{"LOG_FORMAT": long}, []string{`config: LOG_FORMAT: value is 4097 bytes, over the 4096-byte limit`}},
		{map[string]string{"DJANGO_SECRET_KEY": long, "DJANGO_DEBUG": "1"}, []string{`config: DJANGO_SECRET_KEY: value is 4097 bytes`}},
		{map[string]string{"BEDROCK_MODEL_ID_CHAT": long}, []string{`config: BEDROCK_MODEL_ID_CHAT: value is 4097 bytes`}},
	}
	for _, tt := range tests {
		var name string
		for k, v := range tt.env {
			name += k + "=" + v[:min(len(v), 20)] + " "
		}
		t.Run(name, func(t *testing.T) {
			// The secrets are there, and DEBUG is at its default (off), so
			// that each case shows only its own errors.
			env := map[string]string{"DJANGO_SECRET_KEY": goodSecret, "AUTH_API_KEY": "key"}
			for k, v := range tt.env {
				env[k] = v
			}
			_, err := loadEnv(t, env)
			require.Error(t, err)
			lines := errLines(err)
			require.Len(t, lines, len(tt.want), "errors: %v", err)
			for i, want := range tt.want {
				assert.True(t, strings.HasPrefix(lines[i], want), "got %q, want prefix %q", lines[i], want)
			}
		})
	}
}

func TestLoadReportsAllErrorsAtOnce(t *testing.T) {
	_, err := loadEnv(t, map[string]string{
		"DJANGO_SECRET_KEY": goodSecret,
		"AUTH_API_KEY":      "key",
		"DJANGO_DEBUG":      "maybe",
		"MAX_FRAME_BYTES":   "1",
		"PRESENCE_TTL":      "forever",
		"LOG_LEVEL":         "loud",
		"REDIS_URL":         "nope",
	})
	require.Error(t, err)
	lines := errLines(err)
	require.Len(t, lines, 5, "errors: %v", err)
	for _, name := range []string{"DJANGO_DEBUG", "MAX_FRAME_BYTES", "PRESENCE_TTL", "LOG_LEVEL", "REDIS_URL"} {
		assert.Contains(t, err.Error(), "config: "+name+": ")
	}
	for _, line := range lines {
		assert.True(t, strings.HasPrefix(line, "config: "), line)
	}
}

func TestErrorsNeverShowSecrets(t *testing.T) {
	const secret = "Sup3rS3cretValue"
	tests := []map[string]string{
		{"REDIS_URL": "http://user:" + secret + "@cache:6379"},
		{"REDIS_URL": "redis://user:" + secret + "@cache:6379/db" + secret},
		{"DATABASE_URL": "mysql://bot:" + secret + "@db/state"},
		{"DATABASE_URL": "postgres://bot:" + secret + "@db:port/state"},
		{"BEDROCK_ENDPOINT_URL": "ftp://user:" + secret + "@bedrock"},
		production(map[string]string{"DJANGO_SECRET_KEY": secret}),
		production(map[string]string{"SECRET_KEY": "django-insecure-" + secret, "DJANGO_SECRET_KEY": ""}),
		production(map[string]string{"CSRF_SECRET_KEY": secret}),
		{"AUTH_API_KEY": strings.Repeat(secret, 300)},
		{"PSQL_BOT_PASSWORD": strings.Repeat(secret, 300)},
	}
	for i, env := range tests {
		_, err := loadEnv(t, env)
		require.Error(t, err, "case %d", i)
		assert.NotContains(t, err.Error(), secret, "case %d", i)
	}
}

func TestBoolForms(t *testing.T) {
	tests := []struct {
		value string
		want  bool
	}{
		{"1", true}, {"true", true}, {"TRUE", true}, {"True", true}, {"yes", true}, {"Yes", true},
		{"on", true}, {"ON", true}, {" 1 ", true},
		{"0", false}, {"false", false}, {"False", false}, {"no", false}, {"NO", false},
		{"off", false}, {"Off", false},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			cfg, err := loadEnv(t, dev(map[string]string{"AUTH_DISABLED": tt.value, "TEST_PAGE_ENABLED": tt.value}))
			require.NoError(t, err)
			assert.Equal(t, tt.want, cfg.Auth.Disabled)
			assert.Equal(t, tt.want, cfg.HTTP.TestPageEnabled)
		})
	}
	for _, bad := range []string{"maybe", "2", "y", "n", "t", "enable", "1.0"} {
		t.Run(bad, func(t *testing.T) {
			_, err := loadEnv(t, dev(map[string]string{"AUTH_DISABLED": bad}))
			require.EqualError(t, err, `config: AUTH_DISABLED: must be a boolean, got "`+bad+`" (use 1/0, true/false, yes/no or on/off)`)
		})
	}
}

func TestDurationForms(t *testing.T) {
	tests := []struct {
		value string
		want  time.Duration
	}{
		{"25s", 25 * time.Second},
		{"1m30s", 90 * time.Second},
		{"20ms", 20 * time.Millisecond},
		{"25", 25 * time.Second},
		{"0.5", 500 * time.Millisecond},
		{".5", 500 * time.Millisecond},
		{"5.", 5 * time.Second},
		{"0.02", 20 * time.Millisecond},
		{" 3 ", 3 * time.Second},
		{"0", 0},
		{"0s", 0},
		{"10", 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			cfg, err := loadEnv(t, dev(map[string]string{"SHUTDOWN_GRACE": tt.value}))
			require.NoError(t, err)
			assert.Equal(t, tt.want, cfg.HTTP.ShutdownGrace)
		})
	}
	for _, bad := range []string{"1.2.3", "5 s", "1e3", "0x10", "-", ".", "inf", "+5"} {
		t.Run(bad, func(t *testing.T) {
			_, err := loadEnv(t, map[string]string{"SHUTDOWN_GRACE": bad})
			require.Error(t, err)
			assert.Contains(t, err.Error(), "config: SHUTDOWN_GRACE: must be a duration")
		})
	}
}

func TestPrecedence(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		file string
		want bool // Debug
	}{
		{"default", nil, "", false},
		{"file DJANGO_DEBUG", nil, "DJANGO_DEBUG=0\n", false},
		{"file DEBUG", nil, "DEBUG=0\n", false},
		{"env DJANGO_DEBUG", map[string]string{"DJANGO_DEBUG": "0"}, "", false},
		{"env DEBUG", map[string]string{"DEBUG": "0"}, "", false},
		{"env DJANGO_DEBUG beats file DJANGO_DEBUG", map[string]string{"DJANGO_DEBUG": "1"}, "DJANGO_DEBUG=0\n", true},
		{"env DEBUG beats file DEBUG", map[string]string{"DEBUG": "1"}, "DEBUG=0\n", true},
		{"env DEBUG beats file DJANGO_DEBUG", map[string]string{"DEBUG": "1"}, "DJANGO_DEBUG=0\n", true},
		{"env DJANGO_DEBUG beats file DEBUG", map[string]string{"DJANGO_DEBUG": "1"}, "DEBUG=0\n", true},
		{"DJANGO_DEBUG beats DEBUG in env", map[string]string{"DJANGO_DEBUG": "0", "DEBUG": "1"}, "", false},
		{"DJANGO_DEBUG beats DEBUG in file", nil, "DEBUG=1\nDJANGO_DEBUG=0\n", false},
		{"empty env falls back to file", map[string]string{"DJANGO_DEBUG": ""}, "DJANGO_DEBUG=0\n", false},
		{"empty file value falls back to default", nil, "DJANGO_DEBUG=\n", false},
		{"file DJANGO_DEBUG on", nil, "DJANGO_DEBUG=1\n", true},
		{"env DJANGO_DEBUG on", map[string]string{"DJANGO_DEBUG": "on"}, "", true},
		{"lowercase key in file", nil, "django_debug=0\n", false},
		{"export and quotes in file", nil, "export DJANGO_DEBUG=\"off\"\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			t.Setenv("DJANGO_SECRET_KEY", goodSecret) // so that DEBUG off loads
			t.Setenv("AUTH_API_KEY", "key")
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			path := filepath.Join(t.TempDir(), "missing.env")
			if tt.file != "" {
				path = writeDotenv(t, tt.file)
			}
			cfg, err := Load(path)
			require.NoError(t, err)
			assert.Equal(t, tt.want, cfg.Debug)
		})
	}
}

func TestAliasesByName(t *testing.T) {
	t.Run("secret key", func(t *testing.T) {
		path := writeDotenv(t, "DJANGO_SECRET_KEY=from-file-"+goodSecret+"\nSECRET_KEY=alias-file-"+goodSecret+"\n")
		clearEnv(t)
		t.Setenv("AUTH_API_KEY", "key")
		cfg, err := Load(path)
		require.NoError(t, err)
		assert.Equal(t, "from-file-"+goodSecret, cfg.Auth.SecretKey)
		assert.Equal(t, cfg.Auth.SecretKey, cfg.Auth.CSRFSecretKey)

		t.Setenv("SECRET_KEY", "alias-env-"+goodSecret)
		cfg, err = Load(path)
		require.NoError(t, err)
		assert.Equal(t, "alias-env-"+goodSecret, cfg.Auth.SecretKey)

		t.Setenv("DJANGO_SECRET_KEY", "env-"+goodSecret)
		cfg, err = Load(path)
		require.NoError(t, err)
		assert.Equal(t, "env-"+goodSecret, cfg.Auth.SecretKey)
	})
	t.Run("allowed hosts", func(t *testing.T) {
		path := writeDotenv(t, "DJANGO_ALLOWED_HOSTS=file.com\n")
		clearEnvDev(t)
		t.Setenv("ALLOWED_HOSTS", "alias.com")
		cfg, err := Load(path)
		require.NoError(t, err)
		assert.Equal(t, []string{"alias.com"}, cfg.HTTP.Hosts.Allowed)

		t.Setenv("DJANGO_ALLOWED_HOSTS", "env.com")
		cfg, err = Load(path)
		require.NoError(t, err)
		assert.Equal(t, []string{"env.com"}, cfg.HTTP.Hosts.Allowed)
	})
	t.Run("error names the alias used", func(t *testing.T) {
		_, err := loadEnv(t, map[string]string{"DEBUG": "sure"})
		require.Error(t, err)
		assert.True(t, strings.HasPrefix(err.Error(), "config: DEBUG: "), err.Error())
	})
}

func TestDotenvFile(t *testing.T) {
	t.Run("empty path and missing file are fine", func(t *testing.T) {
		clearEnvDev(t)
		_, err := Load("")
		require.NoError(t, err)
		_, err = Load(filepath.Join(t.TempDir(), "nope", ".env"))
		require.NoError(t, err)
	})
	t.Run("values are read", func(t *testing.T) {
		clearEnvDev(t)
		path := writeDotenv(t, `# comment
LISTEN_ADDR = ":8100"
PSQL_BOT_PASSWORD='pa$$word "quoted" # not a comment'
PSQL_HOST=db.internal  # trailing comment
PSQL_BOT_USERNAME=bot
PSQL_STATE_DATABASE=state
`)
		cfg, err := Load(path)
		require.NoError(t, err)
		assert.Equal(t, ":8100", cfg.HTTP.ListenAddr)
		u, err := url.Parse(cfg.Store.DatabaseURL)
		require.NoError(t, err)
		pw, _ := u.User.Password()
		assert.Equal(t, `pa$$word "quoted" # not a comment`, pw)
		assert.Equal(t, "db.internal:5432", u.Host)
	})
	t.Run("malformed line is reported by number without its content", func(t *testing.T) {
		clearEnv(t)
		path := writeDotenv(t, "DJANGO_DEBUG=1\n\nthis line holds Sup3rS3cret\n")
		_, err := Load(path)
		require.Error(t, err)
		assert.Equal(t, "config: "+path+":3: malformed dotenv line (want NAME=value)", err.Error())
	})
	t.Run("unclosed quote", func(t *testing.T) {
		clearEnv(t)
		path := writeDotenv(t, "DJANGO_SECRET_KEY=\"Sup3rS3cret\nDJANGO_DEBUG=1\n")
		_, err := Load(path)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "config: "+path+": malformed dotenv file")
		assert.NotContains(t, err.Error(), "Sup3rS3cret")
	})
	t.Run("unreadable file", func(t *testing.T) {
		clearEnv(t)
		dir := t.TempDir() // a directory cannot be read as a file
		_, err := Load(dir)
		require.Error(t, err)
		assert.True(t, strings.HasPrefix(err.Error(), "config: read "+dir), err.Error())
	})
	t.Run("file values are validated too", func(t *testing.T) {
		clearEnvDev(t)
		path := writeDotenv(t, "MAX_FRAME_BYTES=10\n")
		_, err := Load(path)
		require.EqualError(t, err, "config: MAX_FRAME_BYTES: must be between 1024 and 16777216, got 10")
	})
	t.Run("oversized file value", func(t *testing.T) {
		clearEnvDev(t)
		path := writeDotenv(t, "AUTH_API_KEY="+strings.Repeat("k", maxValueBytes+1)+"\n")
		_, err := Load(path)
		require.EqualError(t, err, "config: AUTH_API_KEY: value is 4097 bytes, over the 4096-byte limit")
	})
}

func TestDatabaseURL(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		want     string
		user, pw string
		db       string
	}{
		{
			name: "none",
			env:  nil,
			want: "",
		},
		{
			name: "assembled with escaping",
			env: map[string]string{
				"PSQL_HOST": "db.internal", "PSQL_PORT": "6432", "PSQL_BOT_USERNAME": "bot@corp",
				"PSQL_BOT_PASSWORD": "p@ss:w/rd%?#&= x", "PSQL_STATE_DATABASE": "state db?#",
			},
			want: "postgres://bot%40corp:p%40ss%3Aw%2Frd%25%3F%23&=%20x@db.internal:6432/state%20db%3F%23",
			user: "bot@corp", pw: "p@ss:w/rd%?#&= x", db: "state db?#",
		},
		{
			name: "default port, no password",
			env:  map[string]string{"PSQL_HOST": "db", "PSQL_BOT_USERNAME": "bot", "PSQL_STATE_DATABASE": "state"},
			want: "postgres://bot@db:5432/state",
			user: "bot", db: "state",
		},
		{
			name: "IPv6 host",
			env:  map[string]string{"PSQL_HOST": "[::1]", "PSQL_BOT_USERNAME": "bot", "PSQL_STATE_DATABASE": "state"},
			want: "postgres://bot@[::1]:5432/state",
			user: "bot", db: "state",
		},
		{
			name: "DATABASE_URL wins",
			env: map[string]string{
				"DATABASE_URL": "postgresql://u:p@h:1/d?sslmode=require",
				"PSQL_HOST":    "db", "PSQL_BOT_USERNAME": "bot", "PSQL_STATE_DATABASE": "state",
			},
			want: "postgresql://u:p@h:1/d?sslmode=require",
			user: "u", pw: "p", db: "d",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := loadEnv(t, dev(tt.env))
			require.NoError(t, err)
			assert.Equal(t, tt.want, cfg.Store.DatabaseURL)
			if tt.want == "" {
				return
			}
			u, err := url.Parse(cfg.Store.DatabaseURL)
			require.NoError(t, err)
			assert.Equal(t, tt.user, u.User.Username())
			pw, _ := u.User.Password()
			assert.Equal(t, tt.pw, pw)
			assert.Equal(t, tt.db, strings.TrimPrefix(u.Path, "/"))
		})
	}
	t.Run("PSQL parts without host warn", func(t *testing.T) {
		cfg, err := loadEnv(t, dev(map[string]string{"PSQL_BOT_USERNAME": "bot"}))
		require.NoError(t, err)
		assert.Empty(t, cfg.Store.DatabaseURL)
		assert.Contains(t, strings.Join(cfg.Warnings, "\n"), "PSQL_HOST is not")
	})
}

func TestProductionChecks(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []string // error prefixes; none = valid
	}{
		{"valid", production(nil), nil},
		{"valid with auth disabled", production(map[string]string{"AUTH_API_KEY": "", "AUTH_DISABLED": "1"}), nil},
		{"valid via alias", production(map[string]string{"DJANGO_SECRET_KEY": "", "SECRET_KEY": goodSecret, "DJANGO_DEBUG": "", "DEBUG": "off"}), nil},
		{"missing secret", production(map[string]string{"DJANGO_SECRET_KEY": ""}), []string{
			"config: DJANGO_SECRET_KEY: required when DJANGO_DEBUG is off", "config: DJANGO_DEBUG is off (the default), so the server does not start without DJANGO_SECRET_KEY;",
		}},
		{"dev default", production(map[string]string{"DJANGO_SECRET_KEY": DevSecretKey}), []string{"config: DJANGO_SECRET_KEY: is the development placeholder"}},
		{"django-insecure", production(map[string]string{"DJANGO_SECRET_KEY": "django-insecure-" + goodSecret}), []string{"config: DJANGO_SECRET_KEY: is the development placeholder"}},
		{"change-me", production(map[string]string{"DJANGO_SECRET_KEY": goodSecret + "-Change-Me"}), []string{"config: DJANGO_SECRET_KEY: looks like a placeholder"}},
		{"changeme", production(map[string]string{"DJANGO_SECRET_KEY": "changeme" + goodSecret}), []string{"config: DJANGO_SECRET_KEY: looks like a placeholder"}},
		{"placeholder", production(map[string]string{"DJANGO_SECRET_KEY": goodSecret + "PLACEHOLDER"}), []string{"config: DJANGO_SECRET_KEY: looks like a placeholder"}},
		{"short", production(map[string]string{"DJANGO_SECRET_KEY": goodSecret[:31]}), []string{"config: DJANGO_SECRET_KEY: is shorter than 32 characters"}},
		{"repetitive", production(map[string]string{"DJANGO_SECRET_KEY": strings.Repeat("ab", 20)}), []string{"config: DJANGO_SECRET_KEY: has fewer than 5 distinct characters"}},
		{"weak alias names alias", production(map[string]string{"DJANGO_SECRET_KEY": "", "SECRET_KEY": "short"}), []string{"config: SECRET_KEY: is shorter than 32 characters; set DJANGO_SECRET_KEY"}},
		{"weak CSRF key", production(map[string]string{"CSRF_SECRET_KEY": "short"}), []string{"config: CSRF_SECRET_KEY: is shorter than 32 characters"}},
		{"missing API key", production(map[string]string{"AUTH_API_KEY": ""}), []string{
			"config: AUTH_API_KEY: required when DJANGO_DEBUG is off", "config: DJANGO_DEBUG is off (the default), so the server does not start without AUTH_API_KEY (or AUTH_DISABLED=1);",
		}},
		{"both", production(map[string]string{"AUTH_API_KEY": "", "DJANGO_SECRET_KEY": ""}), []string{
			"config: DJANGO_SECRET_KEY: required", "config: AUTH_API_KEY: required",
			"config: DJANGO_DEBUG is off (the default), so the server does not start without DJANGO_SECRET_KEY and AUTH_API_KEY (or AUTH_DISABLED=1);",
		}},
		{"DEBUG unset is off", map[string]string{"DJANGO_SECRET_KEY": goodSecret}, []string{
			"config: AUTH_API_KEY: required when DJANGO_DEBUG is off", "config: DJANGO_DEBUG is off (the default)",
		}},
		{"debug on skips checks", map[string]string{"DJANGO_DEBUG": "1", "DJANGO_SECRET_KEY": "x"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := loadEnv(t, tt.env)
			if len(tt.want) == 0 {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Equal(t, Config{}, cfg)
			lines := errLines(err)
			require.Len(t, lines, len(tt.want), "errors: %v", err)
			for i, want := range tt.want {
				assert.True(t, strings.HasPrefix(lines[i], want), "got %q, want prefix %q", lines[i], want)
			}
		})
	}
}

func TestProductionConfig(t *testing.T) {
	cfg, err := loadEnv(t, production(map[string]string{"CSRF_SECRET_KEY": "csrf-" + goodSecret}))
	require.NoError(t, err)
	assert.False(t, cfg.Debug)
	assert.False(t, cfg.HTTP.TestPageEnabled)
	assert.True(t, cfg.Auth.Required())
	assert.Equal(t, "csrf-"+goodSecret, cfg.Auth.CSRFSecretKey)
	assert.Empty(t, cfg.Warnings)

	cfg, err = loadEnv(t, production(map[string]string{"TEST_PAGE_ENABLED": "1"}))
	require.NoError(t, err)
	assert.True(t, cfg.HTTP.TestPageEnabled)

	cfg, err = loadEnv(t, dev(map[string]string{"TEST_PAGE_ENABLED": "0"}))
	require.NoError(t, err)
	assert.True(t, cfg.Debug)
	assert.False(t, cfg.HTTP.TestPageEnabled, "an explicit setting wins over DEBUG")
}

func TestWarnings(t *testing.T) {
	cfg, err := loadEnv(t, production(map[string]string{
		"DJANGO_ALLOWED_HOSTS": "*",
		"ALLOWED_ORIGINS":      "*",
		"AUTH_DISABLED":        "1",
		"DATABASE_URL":         "postgres://h/d",
		"PSQL_HOST":            "db",
	}))
	require.NoError(t, err)
	all := strings.Join(cfg.Warnings, "\n")
	assert.Len(t, cfg.Warnings, 4)
	assert.Contains(t, all, `DJANGO_ALLOWED_HOSTS contains "*"`)
	assert.Contains(t, all, `ALLOWED_ORIGINS contains "*"`)
	assert.Contains(t, all, "AUTH_DISABLED is on")
	assert.Contains(t, all, "DATABASE_URL is used")
	assert.False(t, cfg.Auth.Required(), "AUTH_DISABLED turns the check off even with a key")
}

func TestTrustingEveryAddressWarns(t *testing.T) {
	cfg, err := loadEnv(t, production(map[string]string{"TRUSTED_PROXIES": "10.0.0.0/8,0.0.0.0/0,::/0"}))
	require.NoError(t, err)
	assert.Equal(t, []string{
		"TRUSTED_PROXIES contains 0.0.0.0/0: every peer is trusted, so any client can choose its address with X-Forwarded-For",
		"TRUSTED_PROXIES contains ::/0: every peer is trusted, so any client can choose its address with X-Forwarded-For",
	}, cfg.Warnings)
}

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
	derived := Hosts{Allowed: []string{"localhost", "[::1]", ".example.com"}}
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

		{Hosts{Allowed: []string{"*"}}, "null", true},
		{Hosts{Allowed: []string{"x"}, Origins: []string{"*"}}, "https://anything", true},
		{Hosts{Allowed: []string{"*"}, Origins: []string{"app.com"}}, "https://other.com", false},
	}
	for _, tt := range tests {
		t.Run(tt.origin, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.hosts.OriginAllowed(tt.origin), "%+v", tt.hosts)
		})
	}
}

func TestAllowedOrigins(t *testing.T) {
	h := Hosts{Allowed: []string{"a.com", "*"}}
	assert.Equal(t, []string{"a.com", "*"}, h.AllowedOrigins())
	h.Origins = []string{"b.com:8000"}
	got := h.AllowedOrigins()
	assert.Equal(t, []string{"b.com:8000"}, got)
	got[0] = "changed"
	assert.Equal(t, "b.com:8000", h.Origins[0], "AllowedOrigins returns a copy")
}

// Loaded patterns behave like Django's: the list round-trips through Load.
func TestHostsFromLoad(t *testing.T) {
	cfg, err := loadEnv(t, dev(map[string]string{
		"DJANGO_ALLOWED_HOSTS": "Example.com.,.Internal.ALB.amazonaws.com",
		"ALLOWED_ORIGINS":      "HTTPS://App.Example.com/,localhost:3000",
	}))
	require.NoError(t, err)
	h := cfg.HTTP.Hosts
	assert.True(t, h.HostAllowed("example.com:8000"))
	assert.True(t, h.HostAllowed("x.internal.alb.amazonaws.com"))
	assert.True(t, h.OriginAllowed("https://app.example.com"))
	assert.True(t, h.OriginAllowed("http://localhost:3000"))
	assert.False(t, h.OriginAllowed("http://localhost:8000"))
	assert.False(t, h.OriginAllowed("https://example.com"))
}

func TestLogValueMasksSecrets(t *testing.T) {
	secrets := map[string]string{
		"DJANGO_SECRET_KEY": "SecretKey-" + goodSecret,
		"CSRF_SECRET_KEY":   "CsrfKey-" + goodSecret,
		"AUTH_API_KEY":      "ApiKey-9f8e7d6c5b4a",
		"PSQL_BOT_PASSWORD": "Pg/Pass@word:1",
		"REDIS_URL":         "rediss://default:RedisPass123@cache:6379/0?password=QueryPass456",
	}
	env := production(map[string]string{
		"PSQL_HOST": "db", "PSQL_BOT_USERNAME": "bot", "PSQL_STATE_DATABASE": "state",
		"BEDROCK_ENDPOINT_URL": "https://ep-user:EndpointPass789@bedrock.local",
	})
	for k, v := range secrets {
		env[k] = v
	}
	cfg, err := loadEnv(t, env)
	require.NoError(t, err)

	forbidden := []string{
		secrets["DJANGO_SECRET_KEY"], secrets["CSRF_SECRET_KEY"], secrets["AUTH_API_KEY"], goodSecret,
		secrets["PSQL_BOT_PASSWORD"], url.QueryEscape(secrets["PSQL_BOT_PASSWORD"]),
		url.PathEscape(secrets["PSQL_BOT_PASSWORD"]), "Pass%40word", "RedisPass123", "QueryPass456",
		"EndpointPass789",
	}
	for _, format := range []string{"json", "text"} {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			var h slog.Handler = slog.NewJSONHandler(&buf, nil)
			if format == "text" {
				h = slog.NewTextHandler(&buf, nil)
			}
			slog.New(h).Info("config", "config", cfg)
			out := buf.String()
			for _, s := range forbidden {
				assert.NotContains(t, out, s)
			}
			for _, s := range []string{"xxxxx", "secret_key", "api_key", "db:5432", "cache:6379", "bedrock.local", "state"} {
				assert.Contains(t, out, s)
			}
		})
	}

	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "config", cfg)
	out := buf.String()
	assert.Contains(t, out, `"secret_key":"set"`)
	assert.Contains(t, out, `"csrf_secret_key":"set"`)
	assert.Contains(t, out, `"api_key":"set"`)
	assert.Contains(t, out, `"database_url":"postgres://bot:xxxxx@db:5432/state"`)

	devCfg, err := loadEnv(t, dev(nil))
	require.NoError(t, err)
	buf.Reset()
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "config", devCfg)
	out = buf.String()
	assert.Contains(t, out, `"secret_key":"placeholder"`)
	assert.Contains(t, out, `"csrf_secret_key":"same as secret_key"`)
	assert.Contains(t, out, `"api_key":"unset"`)
	assert.NotContains(t, out, DevSecretKey)
}

// .env.example documents every variable, and as shipped it loads: it is the
// development defaults, DJANGO_DEBUG=1 included (copying it is the opt-in).
func TestEnvExample(t *testing.T) {
	path := filepath.Join("..", "..", ".env.example")
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	text := string(data)
	aliases := map[string]bool{"SECRET_KEY": true, "DEBUG": true, "ALLOWED_HOSTS": true}
	for _, name := range vars {
		if aliases[name] {
			assert.Contains(t, text, "also "+name, "alias %s is not mentioned", name)
			continue
		}
		assert.Regexp(t, `(?m)^(# )?`+name+`=`, text, "%s is not listed", name)
	}

	clearEnv(t)
	cfg, err := Load(path)
	require.NoError(t, err)
	defaults, err := loadEnv(t, dev(nil))
	require.NoError(t, err)
	assert.Equal(t, defaults, cfg, ".env.example must hold the defaults, with DJANGO_DEBUG=1")
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
	policies := []Hosts{
		{Allowed: []string{"localhost", "[::1]", ".example.com", "127.0.0.1"}},
		{Allowed: []string{"a.com", ".b.net", "[fe80::1]"}},
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
			pattern, err := parseOriginPattern(lowerASCII(s))
			if err != nil {
				continue
			}
			explicit := Hosts{Allowed: p.Allowed, Origins: []string{pattern}}
			origin := "http://" + s
			if !explicit.OriginAllowed(origin) {
				t.Fatalf("origin %q not allowed by its own pattern %q", origin, pattern)
			}
			if !(Hosts{Allowed: []string{domain}}).OriginAllowed(origin) {
				t.Fatalf("origin %q not allowed by its own host %q", origin, domain)
			}
		}
	})
}

func TestQuoteShortens(t *testing.T) {
	assert.Equal(t, `"abc"`, quote("abc"))
	q := quote(strings.Repeat("x", 100))
	assert.Equal(t, `"`+strings.Repeat("x", 64)+`"...`, q)
}
