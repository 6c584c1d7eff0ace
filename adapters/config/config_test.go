package config

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/web"
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
			ListenAddr:          "127.0.0.1:8000",
			Hosts:               Hosts{Allowed: []string{"127.0.0.1", "localhost", "[::1]"}},
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
		Store:    Store{RedisCluster: "auto", PresenceTTL: 30 * time.Second, MemoryMaxThreads: 10000, SessionHistoryTTL: 5 * time.Minute},
		Presence: Presence{DiffInterval: time.Second, LeaveGrace: 15 * time.Second, EventsMax: 1000},
		Conversation: Conversation{MaxGuardrailRewrites: 2, FirstChunkChars: 40, ChunkChars: 1000, LocalTokenDelay: 20 * time.Millisecond, MaxQueuedPerThread: 5,
			ResumeTTL: 300 * time.Second, ResumeMaxEvents: 1000, ResumeLogInterval: 50 * time.Millisecond},
		OpenAI:   OpenAI{StreamUsage: true},
		Log:      Log{Level: slog.LevelInfo, Format: "json"},
		Warnings: cfg.Warnings,
	}
	assert.Equal(t, want, cfg)
	require.Len(t, cfg.Warnings, 1)
	assert.Equal(t, "DJANGO_DEBUG is on: THIS SERVER IS OPEN FOR DEVELOPMENT (no API key is checked, "+
		"tokens are signed with the public development secret, the test page is served at /ws-test/); "+
		"never expose it, and leave DJANGO_DEBUG unset in production", cfg.Warnings[0])
	assert.False(t, cfg.Auth.Required())
	assert.Equal(t, []string{"127.0.0.1", "localhost", "[::1]"}, cfg.HTTP.Hosts.AllowedOrigins())
}

// TestLoadSessionHistory: the history's size is read, in memory or with
// Redis on plain pub/sub.
func TestLoadSessionHistory(t *testing.T) {
	for _, redisURL := range []string{"", "redis://r:6379"} {
		cfg, err := loadEnv(t, map[string]string{"DJANGO_DEBUG": "1", "SESSION_HISTORY_SIZE": "100", "REDIS_URL": redisURL})
		require.NoError(t, err)
		assert.Equal(t, 100, cfg.Store.SessionHistorySize)
		assert.Equal(t, 5*time.Minute, cfg.Store.SessionHistoryTTL)
	}
}

func TestLoadValues(t *testing.T) {
	cfg, err := loadEnv(t, map[string]string{
		"DJANGO_SECRET_KEY":               goodSecret,
		"INSTANCE_ID":                     "i-0abc123",
		"LISTEN_ADDR":                     ":9000",
		"DJANGO_ALLOWED_HOSTS":            " A.example.com , ,.Example.ORG,host.,[::1],* ",
		"ALLOWED_ORIGINS":                 "https://App.example.com, http://b.com:08000/, .c.com:443, [::1]:3000",
		"MAX_CONNECTIONS":                 "10",
		"MAX_CONNECTIONS_PER_IP":          "0",
		"TRUSTED_PROXIES":                 " 10.0.0.0/16, 192.168.1.7 ,10.1.2.3/8,2001:DB8::/32,::1",
		"SHUTDOWN_GRACE":                  "0",
		"AUTH_API_KEY":                    " k\n",
		"MAX_MESSAGE_CHARS":               "1",
		"MAX_FRAME_BYTES":                 "1024",
		"RATE_LIMIT_PER_SEC":              "0.5",
		"RATE_LIMIT_BURST":                "1",
		"SEND_QUEUE_SIZE":                 "8",
		"WS_PING_INTERVAL":                "1m30s",
		"WS_WRITE_TIMEOUT":                "2.5",
		"PRESENCE_TTL":                    "3",
		"PRESENCE_DIFF_INTERVAL":          "250ms",
		"PRESENCE_LEAVE_GRACE":            "0",
		"PRESENCE_EVENTS_MAX":             "1",
		"SESSION_HISTORY_TTL":             "45",
		"REDIS_URL":                       "rediss://user:pw@cache.internal:6380/2",
		"REDIS_CLUSTER":                   " Off",
		"REDIS_SHARDED_PUBSUB_PARTITIONS": "16",
		"MAXIMUM_GUARDRAIL_REWRITES":      "0",
		"GUARDRAIL_FIRST_CHUNK_CHARS":     "100",
		"GUARDRAIL_CHUNK_CHARS":           "100",
		"BEDROCK_GUARDRAIL_STREAM_MODE":   " Async",
		"APPDATA_FOLDER_PATH":             "/srv/appdata",
		"LOCAL_MODEL_TOKEN_DELAY":         "0",
		"MAX_QUEUED_PER_THREAD":           "0",
		"RESUME_TTL":                      "90",
		"RESUME_MAX_EVENTS":               "10",
		"RESUME_LOG_INTERVAL":             "0",
		"AWS_BEDROCK_REGION":              "eu-west-1",
		"BEDROCK_MODEL_ID_CHAT":           "chat",
		"BEDROCK_MODEL_ID_SUMMARY":        "summary",
		"BEDROCK_MODEL_ID_GUARDRAIL":      "guard",
		"BEDROCK_MODEL_ID_ESCALATION":     "esc",
		"BEDROCK_GUARDRAIL_ID":            "gr-1",
		"BEDROCK_GUARDRAIL_VERSION":       "DRAFT",
		"BEDROCK_ENDPOINT_URL":            "http://127.0.0.1:4566",
		"LOG_LEVEL":                       "WARNING",
		"LOG_FORMAT":                      "Text",
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
	assert.Equal(t, Store{
		RedisURL: "rediss://user:pw@cache.internal:6380/2", RedisCluster: "off", ShardedPubSubPartitions: 16,
		PresenceTTL: 3 * time.Second, MemoryMaxThreads: 10000, SessionHistoryTTL: 45 * time.Second,
	}, cfg.Store)
	assert.Equal(t, Presence{DiffInterval: 250 * time.Millisecond, EventsMax: 1}, cfg.Presence, "a grace of 0 is honoured")
	assert.Equal(t, Conversation{AppdataPath: "/srv/appdata", FirstChunkChars: 100, ChunkChars: 100, ResumeTTL: 90 * time.Second, ResumeMaxEvents: 10},
		cfg.Conversation, "MAX_QUEUED_PER_THREAD=0 and RESUME_LOG_INTERVAL=0 are honoured")
	assert.Equal(t, Bedrock{
		Region: "eu-west-1", ChatModelID: "chat", SummaryModelID: "summary", GuardrailModelID: "guard",
		EscalationModelID: "esc", GuardrailID: "gr-1", GuardrailVersion: "DRAFT", GuardrailStreamMode: "async", EndpointURL: "http://127.0.0.1:4566",
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
		{map[string]string{"GUARDRAIL_FIRST_CHUNK_CHARS": "0"}, []string{`config: GUARDRAIL_FIRST_CHUNK_CHARS: must be between 1 and 10000`}},
		{map[string]string{"GUARDRAIL_CHUNK_CHARS": "99"}, []string{`config: GUARDRAIL_CHUNK_CHARS: must be between 100 and 100000`}},
		{map[string]string{"GUARDRAIL_FIRST_CHUNK_CHARS": "500", "GUARDRAIL_CHUNK_CHARS": "400"}, []string{`config: GUARDRAIL_FIRST_CHUNK_CHARS: must not be more than GUARDRAIL_CHUNK_CHARS (400), got 500`}},
		{map[string]string{"AWS_BEDROCK_REGION": "r", "BEDROCK_MODEL_ID_CHAT": "m", "BEDROCK_GUARDRAIL_STREAM_MODE": "later"}, []string{`config: BEDROCK_GUARDRAIL_STREAM_MODE: must be sync or async (or unset), got "later"`}},
		{map[string]string{"AWS_BEDROCK_REGION": "r", "BEDROCK_MODEL_ID_CHAT": "m", "BEDROCK_GUARDRAIL_STREAM_MODE": "sync"}, []string{`config: BEDROCK_GUARDRAIL_ID: required when BEDROCK_GUARDRAIL_STREAM_MODE is set`}},
		{map[string]string{"MAX_QUEUED_PER_THREAD": "101"}, []string{`config: MAX_QUEUED_PER_THREAD: must be between 0 and 100, got 101`}},
		{map[string]string{"MAX_QUEUED_PER_THREAD": "-1"}, []string{`config: MAX_QUEUED_PER_THREAD: must be between`}},
		{map[string]string{"MAX_QUEUED_PER_THREAD": "five"}, []string{`config: MAX_QUEUED_PER_THREAD: must be an integer, got "five"`}},
		{map[string]string{"RESUME_TTL": "0.5"}, []string{`config: RESUME_TTL: must be between 1s and 24h0m0s, got "0.5"`}},
		{map[string]string{"RESUME_TTL": "25h"}, []string{`config: RESUME_TTL: must be between`}},
		{map[string]string{"RESUME_TTL": "later"}, []string{`config: RESUME_TTL: must be a duration`}},
		{map[string]string{"RESUME_LOG_INTERVAL": "2s"}, []string{`config: RESUME_LOG_INTERVAL: must be between 0s and 1s, got "2s"`}},
		{map[string]string{"RESUME_LOG_INTERVAL": "-1ms"}, []string{`config: RESUME_LOG_INTERVAL: must be`}},
		{map[string]string{"RESUME_MAX_EVENTS": "9"}, []string{`config: RESUME_MAX_EVENTS: must be between 10 and 100000, got 9`}},
		{map[string]string{"RESUME_MAX_EVENTS": "100001"}, []string{`config: RESUME_MAX_EVENTS: must be between`}},
		{map[string]string{"PRESENCE_TTL": "2s"}, []string{`config: PRESENCE_TTL: must be between 3s and 1h0m0s, got "2s"`}},
		{map[string]string{"PRESENCE_TTL": "7200"}, []string{`config: PRESENCE_TTL: must be between`}},
		{map[string]string{"PRESENCE_TTL": "soon"}, []string{`config: PRESENCE_TTL: must be a duration like "25s" or a number of seconds, got "soon"`}},
		{map[string]string{"PRESENCE_TTL": "-5"}, []string{`config: PRESENCE_TTL: must be a duration`}},
		{map[string]string{"PRESENCE_DIFF_INTERVAL": "10ms"}, []string{`config: PRESENCE_DIFF_INTERVAL: must be between 50ms and 1m0s, got "10ms"`}},
		{map[string]string{"PRESENCE_DIFF_INTERVAL": "0"}, []string{`config: PRESENCE_DIFF_INTERVAL: must be between`}},
		{map[string]string{"PRESENCE_LEAVE_GRACE": "11m"}, []string{`config: PRESENCE_LEAVE_GRACE: must be between 0s and 10m0s, got "11m"`}},
		{map[string]string{"PRESENCE_EVENTS_MAX": "0"}, []string{`config: PRESENCE_EVENTS_MAX: must be`}},
		{map[string]string{"PRESENCE_EVENTS_MAX": "10001"}, []string{`config: PRESENCE_EVENTS_MAX: must be`}},
		{map[string]string{"SESSION_HISTORY_SIZE": "-1"}, []string{`config: SESSION_HISTORY_SIZE: must be between 0 and 10000`}},
		{map[string]string{"SESSION_HISTORY_SIZE": "100", "REDIS_URL": "redis://r:6379", "REDIS_SHARDED_PUBSUB_PARTITIONS": "4"}, []string{`config: SESSION_HISTORY_SIZE: needs plain pub/sub`}},
		{map[string]string{"SESSION_HISTORY_SIZE": "10001"}, []string{`config: SESSION_HISTORY_SIZE: must be between 0 and 10000`}},
		{map[string]string{"SESSION_HISTORY_SIZE": "many"}, []string{`config: SESSION_HISTORY_SIZE: must be`}},
		{map[string]string{"SESSION_HISTORY_TTL": "29s"}, []string{`config: SESSION_HISTORY_TTL: must be between 30s and 24h0m0s, got "29s"`}},
		{map[string]string{"SESSION_HISTORY_TTL": "25h"}, []string{`config: SESSION_HISTORY_TTL: must be between`}},
		{map[string]string{"SESSION_HISTORY_TTL": "0"}, []string{`config: SESSION_HISTORY_TTL: must be between`}},
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
		{map[string]string{"REDIS_URL": "redis://cache", "REDIS_CLUSTER": "maybe"}, []string{`config: REDIS_CLUSTER: must be auto, 1/true/on or 0/false/off, got "maybe"`}},
		{map[string]string{"REDIS_CLUSTER": "1"}, []string{`config: REDIS_CLUSTER: needs REDIS_URL`}},
		{map[string]string{"REDIS_URL": "redis://cache:6379/3", "REDIS_CLUSTER": "1"}, []string{`config: REDIS_URL: a Redis Cluster has database 0 only`}},
		{map[string]string{"REDIS_SHARDED_PUBSUB_PARTITIONS": "8"}, []string{`config: REDIS_SHARDED_PUBSUB_PARTITIONS: needs REDIS_URL`}},
		{map[string]string{"REDIS_URL": "redis://cache", "REDIS_SHARDED_PUBSUB_PARTITIONS": "1025"}, []string{`config: REDIS_SHARDED_PUBSUB_PARTITIONS: must be between 0 and 1024`}},
		{map[string]string{"REDIS_URL": "redis://cache", "REDIS_SHARDED_PUBSUB_PARTITIONS": "-1"}, []string{`config: REDIS_SHARDED_PUBSUB_PARTITIONS: must be between 0 and 1024`}},
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
		{map[string]string{"OPENAI_BASE_URL": "http://localhost:11434/v1"}, []string{`config: OPENAI_MODEL_ID_CHAT: required when OPENAI_BASE_URL is set`}},
		{map[string]string{"OPENAI_MODEL_ID_CHAT": "llama3.2"}, []string{`config: OPENAI_BASE_URL: required when OPENAI_MODEL_ID_CHAT is set`}},
		{map[string]string{"OPENAI_BASE_URL": "localhost:11434/v1", "OPENAI_MODEL_ID_CHAT": "m"}, []string{`config: OPENAI_BASE_URL: must be an http:// or https:// URL with a host`}},
		{map[string]string{"OPENAI_BASE_URL": "ftp://h/v1", "OPENAI_MODEL_ID_CHAT": "m"}, []string{`config: OPENAI_BASE_URL: must be an http:// or https:// URL with a host`}},
		{map[string]string{"OPENAI_BASE_URL": "http://u:p@h/v1", "OPENAI_MODEL_ID_CHAT": "m"}, []string{`config: OPENAI_BASE_URL: must not carry a user or password; set OPENAI_API_KEY`}},
		{map[string]string{"OPENAI_BASE_URL": "http://h/v1?key=1", "OPENAI_MODEL_ID_CHAT": "m"}, []string{`config: OPENAI_BASE_URL: must not carry a query or fragment`}},
		{map[string]string{"OPENAI_BASE_URL": "http://h/v1", "OPENAI_MODEL_ID_CHAT": "m", "OPENAI_STREAM_USAGE": "sometimes"}, []string{`config: OPENAI_STREAM_USAGE: `}},
		{map[string]string{"OPENAI_MODEL_ID_CHAT": long}, []string{`config: OPENAI_MODEL_ID_CHAT: value is 4097 bytes`}},
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
		{"OPENAI_BASE_URL": "http://user:" + secret + "@vllm:8000/v1", "OPENAI_MODEL_ID_CHAT": "m"},
		{"OPENAI_BASE_URL": "http://vllm:8000/v1?api_key=" + secret, "OPENAI_MODEL_ID_CHAT": "m"},
		{"OPENAI_API_KEY": secret},
		{"OPENAI_API_KEY": strings.Repeat(secret, 300)},
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

func TestAllowedOrigins(t *testing.T) {
	h := Hosts{Allowed: []string{"a.com", "*"}}
	assert.Equal(t, []string{"a.com", "*"}, h.AllowedOrigins())
	h.Origins = []string{"b.com:8000"}
	got := h.AllowedOrigins()
	assert.Equal(t, []string{"b.com:8000"}, got)
	got[0] = "changed"
	assert.Equal(t, "b.com:8000", h.Origins[0], "AllowedOrigins returns a copy")
}

// Loaded patterns behave like Django's in web.Hosts: the lists round-trip through Load.
func TestHostsFromLoad(t *testing.T) {
	cfg, err := loadEnv(t, dev(map[string]string{
		"DJANGO_ALLOWED_HOSTS": "Example.com.,.Internal.ALB.amazonaws.com",
		"ALLOWED_ORIGINS":      "HTTPS://App.Example.com/,localhost:3000",
	}))
	require.NoError(t, err)
	h := web.Hosts{Allowed: cfg.HTTP.Hosts.Allowed, Origins: cfg.HTTP.Hosts.AllowedOrigins()}
	assert.True(t, h.HostAllowed("example.com:8000"))
	assert.True(t, h.HostAllowed("x.internal.alb.amazonaws.com"))
	assert.True(t, h.OriginAllowed("https://app.example.com"))
	assert.True(t, h.OriginAllowed("http://localhost:3000"))
	assert.False(t, h.OriginAllowed("http://localhost:8000"))
	assert.False(t, h.OriginAllowed("https://example.com"))
}
