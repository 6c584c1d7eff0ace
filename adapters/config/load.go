package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/wsserver/wsserver/adapters/memory"
	"github.com/wsserver/wsserver/adapters/redis"
	"github.com/wsserver/wsserver/adapters/socket"
	"github.com/wsserver/wsserver/adapters/web"
	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/core/session"
	"github.com/wsserver/wsserver/core/wire"
)

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

func pronoun(n int) string {
	if n == 1 {
		return "it"
	}
	return "them"
}

// load reads every setting in the order of .env.example; the rules that judge
// settings together (validate.go) run as their settings are read. A setting that
// configures an adapter takes its default from that adapter (web, socket, redis,
// memory, conversation), whose zero value means the same default.
func (l *loader) load() Config {
	var c Config
	c.Debug, _ = l.boolean(false, "DJANGO_DEBUG", "DEBUG")
	c.InstanceID = l.instanceID()

	c.HTTP.ListenAddr = l.listenAddr()
	c.HTTP.Hosts.Allowed = l.allowedHosts()
	c.HTTP.Hosts.Origins = l.allowedOrigins()
	c.HTTP.MaxConnections = l.integer("MAX_CONNECTIONS", web.DefaultMaxConnections, 1, 10_000_000)
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
		MaxMessageChars: l.integer("MAX_MESSAGE_CHARS", conversation.DefaultMaxMessageChars, 1, 1_000_000),
		MaxFrameBytes:   l.integer("MAX_FRAME_BYTES", socket.DefaultReadLimit, 1024, 16<<20),
		RateLimitPerSec: l.float("RATE_LIMIT_PER_SEC", web.DefaultRatePerSec, 0, 100000),
		RateLimitBurst:  l.integer("RATE_LIMIT_BURST", web.DefaultRateBurst, 1, 1_000_000),
		SendQueueSize:   l.integer("SEND_QUEUE_SIZE", socket.DefaultMaxQueue, 8, 65536),
		PingInterval:    l.duration("WS_PING_INTERVAL", socket.DefaultPingInterval, time.Second, 10*time.Minute),
		WriteTimeout:    l.duration("WS_WRITE_TIMEOUT", socket.DefaultWriteTimeout, time.Second, 2*time.Minute),
	}

	c.Store = Store{
		RedisURL:                l.redisURL(),
		RedisCluster:            l.redisCluster(),
		ShardedPubSubPartitions: l.integer("REDIS_SHARDED_PUBSUB_PARTITIONS", 0, 0, redis.MaxPartitions),
		DatabaseURL:             l.databaseURL(),
		PresenceTTL:             l.duration("PRESENCE_TTL", redis.DefaultPresenceTTL, 3*time.Second, time.Hour),
		MemoryMaxThreads:        l.integer("MEMORY_MAX_THREADS", memory.DefaultMaxThreads, 1, 10_000_000),
		SessionHistorySize:      l.integer("SESSION_HISTORY_SIZE", 0, 0, 10000),
		// A rejoined connection counts on its epoch for a while after its
		// read (core/session catchUp, 10 s): the TTL stays well above it.
		SessionHistoryTTL: l.duration("SESSION_HISTORY_TTL", 5*time.Minute, 30*time.Second, 24*time.Hour),
	}
	if c.Store.SessionHistorySize > 0 && c.Store.RedisURL != "" && c.Store.ShardedPubSubPartitions > 0 {
		// The history's script numbers, keeps and publishes a broadcast in
		// the session's slot; a partition's channel lies in another.
		l.fail("SESSION_HISTORY_SIZE", "needs plain pub/sub: set REDIS_SHARDED_PUBSUB_PARTITIONS=0, or SESSION_HISTORY_SIZE=0")
	}
	if c.Store.RedisURL == "" {
		if _, name, ok := l.raw("REDIS_CLUSTER"); ok {
			l.fail(name, "needs REDIS_URL")
		}
		if c.Store.ShardedPubSubPartitions > 0 {
			l.fail("REDIS_SHARDED_PUBSUB_PARTITIONS", "needs REDIS_URL")
		}
	} else if c.Store.RedisCluster == redis.ClusterOn {
		if u, err := url.Parse(c.Store.RedisURL); err == nil && strings.Trim(u.Path, "/0") != "" {
			l.fail("REDIS_URL", "a Redis Cluster has database 0 only (REDIS_CLUSTER is on): drop the path or write /0")
		}
	}

	c.Presence = Presence{
		DiffInterval: l.duration("PRESENCE_DIFF_INTERVAL", session.DefaultPresenceDiffInterval, 50*time.Millisecond, time.Minute),
		LeaveGrace:   l.duration("PRESENCE_LEAVE_GRACE", session.DefaultPresenceLeaveGrace, 0, 10*time.Minute),
		EventsMax:    l.integer("PRESENCE_EVENTS_MAX", session.DefaultPresenceEventsMax, 1, 10_000),
	}

	c.Conversation = Conversation{
		MaxGuardrailRewrites: l.integer("MAXIMUM_GUARDRAIL_REWRITES", 2, 0, 10),
		FirstChunkChars:      l.integer("GUARDRAIL_FIRST_CHUNK_CHARS", conversation.DefaultFirstChunkChars, 1, 10_000),
		ChunkChars:           l.integer("GUARDRAIL_CHUNK_CHARS", conversation.DefaultChunkChars, 100, 100_000),
		AppdataPath:          l.str("", "APPDATA_FOLDER_PATH"),
		LocalTokenDelay:      l.duration("LOCAL_MODEL_TOKEN_DELAY", 20*time.Millisecond, 0, 10*time.Second),
		MaxQueuedPerThread:   l.integer("MAX_QUEUED_PER_THREAD", conversation.DefaultMaxQueued, 0, conversation.MaxQueuedLimit),
		ResumeTTL:            l.duration("RESUME_TTL", 300*time.Second, time.Second, 24*time.Hour),
		ResumeMaxEvents:      l.integer("RESUME_MAX_EVENTS", 1000, 10, 100_000),
		ResumeLogInterval:    l.duration("RESUME_LOG_INTERVAL", 50*time.Millisecond, 0, time.Second),
	}
	if c.Conversation.FirstChunkChars > c.Conversation.ChunkChars {
		l.fail("GUARDRAIL_FIRST_CHUNK_CHARS", "must not be more than GUARDRAIL_CHUNK_CHARS (%d), got %d", c.Conversation.ChunkChars, c.Conversation.FirstChunkChars)
	}
	c.Bedrock = l.bedrock()
	c.OpenAI = l.openai()
	l.errs = append(l.errs, c.providerProblems()...)
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
		h, err := web.ParseHostPattern(entry)
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
		o, err := web.ParseOriginPattern(entry)
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
		if e = wire.LowerASCII(strings.TrimSpace(e)); e != "" {
			out = append(out, e)
		}
	}
	return out
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

func (l *loader) redisCluster() redis.ClusterMode {
	v, name, ok := l.raw("REDIS_CLUSTER")
	if !ok {
		return redis.ClusterAuto
	}
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "auto", "":
		return redis.ClusterAuto
	case "1", "true", "yes", "on":
		return redis.ClusterOn
	case "0", "false", "no", "off":
		return redis.ClusterOff
	}
	l.fail(name, "must be auto, 1/true/on or 0/false/off, got %s", quote(v))
	return redis.ClusterAuto
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

// bedrock reads the Bedrock settings; Bedrock.problems judges them together.
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
	if v, name, ok := l.raw("BEDROCK_GUARDRAIL_STREAM_MODE"); ok {
		switch m := strings.ToLower(strings.TrimSpace(v)); m {
		case "", "sync", "async":
			b.GuardrailStreamMode = m
		default:
			l.fail(name, "must be sync or async (or unset), got %s", quote(v))
		}
	}
	l.errs = append(l.errs, b.problems()...)
	if b.EndpointURL != "" {
		u, err := url.Parse(b.EndpointURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			l.fail("BEDROCK_ENDPOINT_URL", "must be an http:// or https:// URL with a host")
		}
	}
	return b
}

// openai reads the settings of an OpenAI-compatible endpoint; OpenAI.problems judges
// them together.
func (l *loader) openai() OpenAI {
	o := OpenAI{
		BaseURL:           l.str("", "OPENAI_BASE_URL"),
		APIKey:            strings.TrimSpace(l.str("", "OPENAI_API_KEY")),
		ChatModelID:       l.str("", "OPENAI_MODEL_ID_CHAT"),
		SummaryModelID:    l.str("", "OPENAI_MODEL_ID_SUMMARY"),
		GuardrailModelID:  l.str("", "OPENAI_MODEL_ID_GUARDRAIL"),
		EscalationModelID: l.str("", "OPENAI_MODEL_ID_ESCALATION"),
	}
	usageSet := false
	o.StreamUsage, usageSet = l.boolean(true, "OPENAI_STREAM_USAGE")
	problems := o.problems()
	l.errs = append(l.errs, problems...)
	if len(problems) == 0 && usageSet && !o.Enabled() {
		l.fail("OPENAI_STREAM_USAGE", "needs OPENAI_BASE_URL and OPENAI_MODEL_ID_CHAT, which select the openai adapters")
	}
	return o
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
