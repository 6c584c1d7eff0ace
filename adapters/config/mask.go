package config

import (
	"log/slog"
	"net/url"
	"strings"
)

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
			slog.String("redis_cluster", string(c.Store.RedisCluster)),
			slog.Int("redis_sharded_pubsub_partitions", c.Store.ShardedPubSubPartitions),
			slog.String("database_url", maskURL(c.Store.DatabaseURL)),
			slog.Duration("presence_ttl", c.Store.PresenceTTL),
			slog.Int("session_history_size", c.Store.SessionHistorySize),
			slog.Duration("session_history_ttl", c.Store.SessionHistoryTTL),
			slog.Int("memory_max_threads", c.Store.MemoryMaxThreads),
		),
		slog.Group("presence",
			slog.Duration("diff_interval", c.Presence.DiffInterval),
			slog.Duration("leave_grace", c.Presence.LeaveGrace),
			slog.Int("events_max", c.Presence.EventsMax),
		),
		slog.Group("conversation",
			slog.Int("max_guardrail_rewrites", c.Conversation.MaxGuardrailRewrites),
			slog.Int("guardrail_first_chunk_chars", c.Conversation.FirstChunkChars),
			slog.Int("guardrail_chunk_chars", c.Conversation.ChunkChars),
			slog.String("appdata_path", c.Conversation.AppdataPath),
			slog.Duration("local_token_delay", c.Conversation.LocalTokenDelay),
			slog.Int("max_queued_per_thread", c.Conversation.MaxQueuedPerThread),
			slog.Duration("resume_ttl", c.Conversation.ResumeTTL),
			slog.Int("resume_max_events", c.Conversation.ResumeMaxEvents),
			slog.Duration("resume_log_interval", c.Conversation.ResumeLogInterval),
		),
		slog.Group("bedrock",
			slog.String("region", c.Bedrock.Region),
			slog.String("model_id_chat", c.Bedrock.ChatModelID),
			slog.String("model_id_summary", c.Bedrock.SummaryModelID),
			slog.String("model_id_guardrail", c.Bedrock.GuardrailModelID),
			slog.String("model_id_escalation", c.Bedrock.EscalationModelID),
			slog.String("guardrail_id", c.Bedrock.GuardrailID),
			slog.String("guardrail_version", c.Bedrock.GuardrailVersion),
			slog.String("guardrail_stream_mode", c.Bedrock.GuardrailStreamMode),
			slog.String("endpoint_url", maskURL(c.Bedrock.EndpointURL)),
		),
		slog.Group("openai",
			slog.String("base_url", maskURL(c.OpenAI.BaseURL)),
			slog.String("api_key", maskSecret(c.OpenAI.APIKey)),
			slog.String("model_id_chat", c.OpenAI.ChatModelID),
			slog.String("model_id_summary", c.OpenAI.SummaryModelID),
			slog.String("model_id_guardrail", c.OpenAI.GuardrailModelID),
			slog.String("model_id_escalation", c.OpenAI.EscalationModelID),
			slog.Bool("stream_usage", c.OpenAI.StreamUsage),
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
