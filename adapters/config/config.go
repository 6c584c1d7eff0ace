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
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/wsserver/wsserver/adapters/redis"
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

	HTTP      HTTP
	Auth      Auth
	WebSocket WebSocket
	Store     Store
	// Presence rules the presence events of the session streams.
	Presence     Presence
	Conversation Conversation
	Bedrock      Bedrock
	OpenAI       OpenAI
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

// Hosts holds the accepted Host and Origin header patterns, parsed and lowercase as
// web.ParseHostPattern and web.ParseOriginPattern return them; web.Hosts matches
// header values against them.
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

// CheckedKey returns the key requests must carry, or "" when none is checked:
// AUTH_DISABLED is on, or no AUTH_API_KEY is set (which Load allows only with DEBUG
// on).
func (a Auth) CheckedKey() string {
	if !a.Required() {
		return ""
	}
	return a.APIKey
}

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

	// RedisCluster says whether REDIS_URL names a Redis Cluster (ElastiCache
	// cluster mode): auto asks the server (CLUSTER SLOTS) and follows its
	// answer, on requires a cluster (start-up fails otherwise), off talks to
	// the one server named, never following a cluster's redirections.
	// REDIS_CLUSTER: auto, 1/true/on or 0/false/off; default auto.
	RedisCluster redis.ClusterMode

	// ShardedPubSubPartitions is the number of sharded pub/sub channels
	// (SSUBSCRIBE/SPUBLISH, Redis 7) that carry the sessions' broadcasts,
	// each session on one by a stable hash of its id, with one subscription
	// connection per channel; 0 means plain PUBLISH on a channel per
	// session. Every instance must use the same number.
	// REDIS_SHARDED_PUBSUB_PARTITIONS; default 0 (0..1024); needs REDIS_URL.
	ShardedPubSubPartitions int

	// DatabaseURL is a postgres:// URL. DATABASE_URL, or assembled from PSQL_HOST,
	// PSQL_PORT (default 5432), PSQL_BOT_USERNAME, PSQL_BOT_PASSWORD and
	// PSQL_STATE_DATABASE when PSQL_HOST is set; DATABASE_URL wins. Default empty,
	// meaning the in-process thread store.
	DatabaseURL string

	// PresenceTTL is how long the presence of a vanished instance lingers.
	// PRESENCE_TTL; default 30s (3s..1h).
	PresenceTTL time.Duration
	// SessionHistorySize is how many broadcasts each session keeps, so that a
	// connection that comes back with since gets those it missed (PROTOCOL.md
	// §4.8). SESSION_HISTORY_SIZE; default 0 (0..10000), meaning no history:
	// broadcasts carry no offset, as before.
	SessionHistorySize int
	// SessionHistoryTTL is how long a session's history is kept after its last
	// broadcast or join. SESSION_HISTORY_TTL; default 5m (30s..24h).
	SessionHistoryTTL time.Duration
	// MemoryMaxThreads bounds the in-process thread store (no database):
	// past it, the thread written longest ago is forgotten.
	// MEMORY_MAX_THREADS; default 10000 (1..10,000,000).
	MemoryMaxThreads int
}

// Presence rules the presence events (PROTOCOL.md §4.7), in memory and on
// Redis alike.
type Presence struct {
	// DiffInterval is the least time between two presence_diff messages to
	// a session's listeners. PRESENCE_DIFF_INTERVAL; default 1s (50ms..1m).
	DiffInterval time.Duration
	// LeaveGrace is how long a member that dropped without a clean close
	// stays present, waiting for its presence_key to come back.
	// PRESENCE_LEAVE_GRACE; default 15s (0..10m; 0 tells every leave at once).
	LeaveGrace time.Duration
	// EventsMax is the most members whose joins and leaves are listed;
	// above it listeners get the count only. PRESENCE_EVENTS_MAX; default
	// 1000 (1..10,000: a presence_state of 10,000 members is about 1.5 MB).
	EventsMax int
}

// Conversation configures the conversation graph and the local model.
type Conversation struct {
	// MaxGuardrailRewrites is how many times a failing answer is rewritten before
	// the fallback. MAXIMUM_GUARDRAIL_REWRITES; default 2 (0..10).
	MaxGuardrailRewrites int

	// AppdataPath is a folder of appdata (prompts, rules). APPDATA_FOLDER_PATH;
	// default empty, meaning the appdata embedded in the binary.
	AppdataPath string

	// FirstChunkChars is the length in bytes at which the first chunk of an
	// answer goes to the guardrail, at a word boundary, if its first sentence
	// has not ended before. GUARDRAIL_FIRST_CHUNK_CHARS; default 40 (1..10,000).
	FirstChunkChars int
	// ChunkChars bounds the later chunks the guardrail checks, in bytes (one
	// Bedrock text unit is 1,000 characters). GUARDRAIL_CHUNK_CHARS; default
	// 1000 (100..100,000), no less than FirstChunkChars.
	ChunkChars int

	// LocalTokenDelay is the pause between tokens streamed by the local model.
	// LOCAL_MODEL_TOKEN_DELAY; default 20ms (0..10s). A bare number means seconds,
	// as for every duration: write "20ms" or "0.02".
	LocalTokenDelay time.Duration

	// MaxQueuedPerThread bounds the chats that wait for a busy thread
	// ("multitask":"enqueue", PROTOCOL.md §3.4), across instances; one more
	// gets thread_busy. MAX_QUEUED_PER_THREAD; default 5 (0..100; 0 refuses
	// every enqueue, as "reject" does).
	MaxQueuedPerThread int

	// ResumeTTL is how long a resumable answer's events are kept after
	// its last one, for a resume (PROTOCOL.md §3.9). RESUME_TTL; default
	// 300s (1s..24h).
	ResumeTTL time.Duration
	// ResumeMaxEvents bounds the events kept per resumable answer; a
	// resume that missed more gets a snapshot. RESUME_MAX_EVENTS; default
	// 1000 (10..100,000).
	ResumeMaxEvents int
	// ResumeLogInterval is the least time between two appends to a
	// resumable answer's log: the events sent meanwhile go in one append.
	// RESUME_LOG_INTERVAL; default 50ms (0..1s; 0 appends each event as
	// soon as the previous append returned).
	ResumeLogInterval time.Duration
}

// Bedrock holds the AWS Bedrock settings. Region and ChatModelID together
// select the bedrock adapters (see Enabled; set one without the other and Load
// fails); the others need them (see Validate). All default to empty.
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
	// GuardrailStreamMode is BEDROCK_GUARDRAIL_STREAM_MODE: "" (unset: the
	// server checks answers with ApplyGuardrail, chunk by chunk), "sync" or
	// "async" (Bedrock checks the stream itself, ConverseStream's
	// guardrailConfig streamProcessingMode). Needs GuardrailID.
	GuardrailStreamMode string
	// EndpointURL overrides the Bedrock Runtime endpoint (an http or https URL).
	// BEDROCK_ENDPOINT_URL.
	EndpointURL string
}

// OpenAI holds the settings of an OpenAI-compatible chat completions endpoint
// (vLLM, Ollama, llama.cpp's server, LiteLLM, a hosted API). BaseURL and ChatModelID
// together select the openai adapters (see Enabled; set one without the other and
// Load fails); the others need them (see Validate). Bedrock and OpenAI are never
// selected together. All strings default to empty.
type OpenAI struct {
	// BaseURL is the API's root up to /chat/completions, an http or https URL:
	// "http://localhost:11434/v1" for Ollama, "http://localhost:8000/v1" for vLLM.
	// OPENAI_BASE_URL.
	BaseURL string
	// APIKey is sent as a bearer token; empty sends none, as local servers need
	// none. OPENAI_API_KEY. A secret: logged as set or unset only.
	APIKey string
	// ChatModelID is OPENAI_MODEL_ID_CHAT.
	ChatModelID string
	// SummaryModelID is OPENAI_MODEL_ID_SUMMARY; empty means ChatModelID.
	SummaryModelID string
	// GuardrailModelID is OPENAI_MODEL_ID_GUARDRAIL: a judge model checks answers;
	// empty means the local rules.
	GuardrailModelID string
	// EscalationModelID is OPENAI_MODEL_ID_ESCALATION: a classifier after the local
	// escalation rules; empty means the local rules only.
	EscalationModelID string
	// StreamUsage asks each stream for its token usage (stream_options.include_usage).
	// OPENAI_STREAM_USAGE; default true. A server that refuses the field is asked again
	// without it, and never again; off, output tokens are counted as chunks.
	StreamUsage bool
}

// Log configures the process logger.
type Log struct {
	// Level is LOG_LEVEL: debug, info, warn (or warning) or error; default info.
	Level slog.Level
	// Format is LOG_FORMAT: "json" or "text"; default "json".
	Format string
}
