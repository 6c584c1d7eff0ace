// Package app wires one wsserver instance together by hand: configuration,
// then adapters, then the core, then the servers; and takes it apart again
// in the order PROTOCOL.md §11 gives. cmd/wsserver calls it; the end-to-end tests
// run several instances of it in one process.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/redis/rueidis"

	"github.com/wsserver/wsserver/adapters/bedrock"
	"github.com/wsserver/wsserver/adapters/config"
	"github.com/wsserver/wsserver/adapters/local"
	"github.com/wsserver/wsserver/adapters/memory"
	"github.com/wsserver/wsserver/adapters/metrics"
	"github.com/wsserver/wsserver/adapters/openai"
	"github.com/wsserver/wsserver/adapters/postgres"
	"github.com/wsserver/wsserver/adapters/redis"
	"github.com/wsserver/wsserver/adapters/socket"
	"github.com/wsserver/wsserver/adapters/web"
	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/core/logctx"
	"github.com/wsserver/wsserver/core/session"
	"github.com/wsserver/wsserver/docs"
	"github.com/wsserver/wsserver/ports"
)

// Run serves on ln until ctx ends, then shuts down gracefully: /health/
// turns 503, no new socket is accepted, session sockets close with 1012,
// and streaming answers get cfg.HTTP.ShutdownGrace to finish. Answers
// still running then are cancelled and get up to web.Config.SaveWait
// (5 s) more to save what they sent: the stores close after them. It
// returns nil after a clean shutdown.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger, ln net.Listener) error {
	// Load has checked these; a Config built by hand is held to them too.
	if err := cfg.Validate(); err != nil {
		return err
	}
	log = contextLogger(log)
	m := metrics.New()

	// Adapters: Redis when configured, in-process otherwise.
	var (
		broker      ports.Broker
		presence    ports.Presence
		runs        ports.RunControl
		answers     ports.AnswerLog
		history     ports.History // nil: no session history
		ready       []web.Check
		closers     []func()
		redisClient rueidis.Client
	)
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()
	if cfg.Store.RedisURL != "" {
		rc, err := redis.Connect(ctx, redis.ClientConfig{URL: cfg.Store.RedisURL, Cluster: cfg.Store.RedisCluster, Wait: 10 * time.Second})
		if err != nil {
			return err
		}
		closers = append(closers, rc.Close)
		redisClient = rc
		if n := cfg.Store.ShardedPubSubPartitions; n > 0 {
			// Every instance must agree on the mode: a server that cannot
			// do sharded pub/sub stops the start, rather than falling back
			// to plain PUBLISH that the other instances do not hear.
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := redis.ProbeShardedPubSub(pctx, rc, "", n)
			cancel()
			if err != nil {
				return fmt.Errorf("REDIS_SHARDED_PUBSUB_PARTITIONS=%d: %w; set it to 0 for plain PUBLISH", n, err)
			}
		}
		b, err := redis.NewBroker(redis.BrokerConfig{Client: rc, Partitions: cfg.Store.ShardedPubSubPartitions, OnError: m.RedisError, Log: log})
		if err != nil {
			return err
		}
		closers = append(closers, b.Close)
		p, err := redis.NewPresence(redis.PresenceConfig{
			Client: rc, InstanceID: cfg.InstanceID, TTL: cfg.Store.PresenceTTL, OnError: m.RedisError, Log: log,
		})
		if err != nil {
			return err
		}
		closers = append(closers, p.Close)
		r, err := redis.NewRuns(redis.RunsConfig{Client: rc, OnError: m.RedisError, Log: log})
		if err != nil {
			return err
		}
		closers = append(closers, r.Close)
		al, err := redis.NewAnswers(redis.AnswersConfig{
			Client: rc, TTL: cfg.Conversation.ResumeTTL, MaxEvents: cfg.Conversation.ResumeMaxEvents, OnError: m.RedisError, Log: log,
		})
		if err != nil {
			return err
		}
		closers = append(closers, al.Close)
		broker, presence, runs, answers = b, p, r, al
		if n := cfg.Store.SessionHistorySize; n > 0 {
			h, err := redis.NewHistory(redis.HistoryConfig{Broker: b, Size: n, TTL: cfg.Store.SessionHistoryTTL})
			if err != nil {
				return err
			}
			history = h
		}
		ready = append(ready, web.Check{Name: "redis", Check: func(ctx context.Context) error {
			return rc.Do(ctx, rc.B().Ping().Build()).Error()
		}})
		log.InfoContext(ctx, "channel layer: redis", "cluster", rc.Mode() == rueidis.ClientModeCluster,
			"sharded_pubsub_partitions", cfg.Store.ShardedPubSubPartitions, "presence_ttl", cfg.Store.PresenceTTL)
	} else {
		al, err := memory.NewAnswers(memory.AnswersConfig{TTL: cfg.Conversation.ResumeTTL, MaxEvents: cfg.Conversation.ResumeMaxEvents})
		if err != nil {
			return err
		}
		b := memory.NewBroker()
		broker, presence, runs, answers = b, memory.NewPresence(), memory.NewRuns(), al
		if n := cfg.Store.SessionHistorySize; n > 0 {
			h, err := memory.NewHistory(memory.HistoryConfig{Broker: b, Size: n, TTL: cfg.Store.SessionHistoryTTL})
			if err != nil {
				return err
			}
			history = h
		}
		log.InfoContext(ctx, "channel layer: in-process (one instance only; set REDIS_URL to share sessions across instances)")
	}

	if history != nil {
		log.InfoContext(ctx, "session history on", "size", cfg.Store.SessionHistorySize, "ttl", cfg.Store.SessionHistoryTTL)
	}

	// Threads: PostgreSQL when configured, in-process otherwise; the thread
	// lock lives where the channel layer does.
	var (
		threads ports.ThreadStore = memory.NewThreads(cfg.Store.MemoryMaxThreads)
		lock    ports.ThreadLock  = memory.NewLock()
		queue   ports.ThreadQueue = memory.NewQueue()
		gate    ports.ThreadGate  // nil: the lock, then a look at the queue
	)
	if cfg.Store.DatabaseURL != "" {
		store, err := postgres.Open(ctx, postgres.Config{
			DSN: cfg.Store.DatabaseURL, OnError: m.PostgresError, Log: log,
		})
		if err != nil {
			return err
		}
		closers = append(closers, store.Close)
		threads = store
		ready = append(ready, web.Check{Name: "postgres", Check: store.Ping})
		log.InfoContext(ctx, "thread store: postgres")
	} else {
		log.InfoContext(ctx, "thread store: in-process (threads are lost on restart; configure DATABASE_URL or PSQL_* to keep them)",
			"max_threads", cfg.Store.MemoryMaxThreads)
	}
	if redisClient != nil {
		l, err := redis.NewLock(redis.LockConfig{Client: redisClient, OnError: m.RedisError})
		if err != nil {
			return err
		}
		lock = l
		// The queue of a busy thread is shared as its lock is.
		q, err := redis.NewQueue(redis.QueueConfig{Client: redisClient, OnError: m.RedisError, Log: log})
		if err != nil {
			return err
		}
		closers = append(closers, q.Close)
		queue = q
		// The lock and the queue share the client and the prefix: a chat
		// takes its thread in one script.
		gate = l
	}

	// The conversation's model, guardrail and escalation detector.
	appdata, err := local.LoadAppdata(cfg.Conversation.AppdataPath)
	if err != nil {
		return err
	}
	log.InfoContext(ctx, "appdata", "files", appdata.Origin)
	model, guardrail, escalation, components, err := conversationPorts(ctx, cfg, appdata, log)
	if err != nil {
		return err
	}

	// Core.
	hub, err := session.NewHub(session.HubConfig{
		Broker: broker, Presence: presence, History: history, Encode: socket.Frame, Observer: m, Log: log,
		PresenceRules:  presenceRules(cfg.Presence),
		PresenceResync: presenceResync(cfg),
	})
	if err != nil {
		return err
	}
	// The hub's periodic work (mending presence views, announcing the
	// leaves of dead instances) stops before Redis closes.
	hubCtx, stopHub := context.WithCancel(context.WithoutCancel(ctx))
	hubDone := make(chan struct{})
	go func() { hub.Run(hubCtx); close(hubDone) }()
	closers = append(closers, func() { stopHub(); <-hubDone })
	chat, err := conversation.New(conversation.Config{
		Store:                threads,
		Lock:                 lock,
		Model:                model,
		Guardrail:            countedGuardrail(m, guardrail),
		Escalation:           escalation,
		Publisher:            chatMirror{hub},
		Runs:                 runs,
		Answers:              answers,
		AnswerLogInterval:    cfg.Conversation.ResumeLogInterval,
		Queue:                queue,
		Gate:                 gate,
		MaxQueued:            cfg.Conversation.MaxQueuedPerThread,
		SystemPrompt:         appdata.SystemPrompt,
		SummaryPrompt:        appdata.SummaryPrompt,
		MaxGuardrailRewrites: cfg.Conversation.MaxGuardrailRewrites,
		FirstChunkChars:      cfg.Conversation.FirstChunkChars,
		ChunkChars:           cfg.Conversation.ChunkChars,
		Log:                  log,
	})
	if err != nil {
		return err
	}
	closers = append(closers, chat.Close) // before the lock's Redis client closes

	// Edge.
	hosts := web.Hosts{Allowed: cfg.HTTP.Hosts.Allowed, Origins: cfg.HTTP.Hosts.AllowedOrigins()}
	var testPage []byte // /ws-test/: config turns it on with DEBUG or TEST_PAGE_ENABLED
	if cfg.HTTP.TestPageEnabled {
		testPage = docs.WSTestPage
	}
	edge, err := web.New(web.Config{
		InstanceID:          cfg.InstanceID,
		APIKey:              cfg.Auth.CheckedKey(),
		HostAllowed:         hosts.HostAllowed,
		OriginAllowed:       hosts.OriginAllowed,
		MaxConnections:      cfg.HTTP.MaxConnections,
		MaxConnectionsPerIP: cfg.HTTP.MaxConnectionsPerIP,
		TrustedProxies:      cfg.HTTP.TrustedProxies,
		RatePerSec:          cfg.WebSocket.RateLimitPerSec,
		RateBurst:           cfg.WebSocket.RateLimitBurst,
		Sockets: socket.Config{
			MaxQueue:     cfg.WebSocket.SendQueueSize,
			WriteTimeout: cfg.WebSocket.WriteTimeout,
			PingInterval: cfg.WebSocket.PingInterval,
			ReadLimit:    int64(cfg.WebSocket.MaxFrameBytes),
		},
		Hub:             hub,
		Chat:            chat,
		MaxMessageChars: cfg.WebSocket.MaxMessageChars,
		CSRFSecret:      cfg.Auth.CSRFSecretKey,
		Ready:           ready,
		Components:      components,
		TestPage:        testPage,
		Metrics:         m,
		Log:             log,
	})
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           edge.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	m.WatchConns(srv) // counts clients that never send a whole request

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.InfoContext(ctx, "serving", "addr", ln.Addr().String(), "instance_id", cfg.InstanceID)

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	// Shutdown, PROTOCOL.md §11.
	log.InfoContext(ctx, "shutting down", "grace", cfg.HTTP.ShutdownGrace)
	edge.Drain()
	grace, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.HTTP.ShutdownGrace)
	defer cancel()
	var errs []error
	closed := make(chan error, 1)
	// Answers may finish within the grace; past it they are cancelled,
	// and CloseChats waits for their saves (bounded) before it returns,
	// so that the deferred closers never close a store under one.
	go func() { closed <- edge.CloseChats(grace) }()
	if err := edge.CloseSessions(grace); err != nil {
		errs = append(errs, err)
	}
	if err := <-closed; err != nil {
		errs = append(errs, err)
	}
	if err := srv.Shutdown(grace); err != nil {
		errs = append(errs, fmt.Errorf("http shutdown: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		log.WarnContext(ctx, "shutdown was not clean", "err", err)
	}
	log.InfoContext(ctx, "stopped")
	return nil
}

// presenceRules are the settings of presence events as the core takes
// them: a grace of 0 means none.
func presenceRules(p config.Presence) session.PresenceRules {
	r := session.PresenceRules{Interval: p.DiffInterval, Grace: p.LeaveGrace, Max: p.EventsMax}
	if r.Grace == 0 {
		r.Grace = -1
	}
	return r
}

// presenceResync is how often the hub mends its presence views and looks
// for dead instances: with Redis, at the presence heartbeat's pace, so a
// dead instance's leaves are announced within PRESENCE_TTL and a third.
func presenceResync(cfg config.Config) time.Duration {
	if cfg.Store.RedisURL != "" {
		return cfg.Store.PresenceTTL / 3
	}
	return 10 * time.Second
}

// contextLogger returns log with a handler that adds the ids a request's
// context carries (logctx) to every line, so that the lines of a socket, a
// session and a chat name them whatever logger the caller gave: the
// process's, or a test's. A logger whose handler does so already is
// returned as it is, so that no id is added twice.
func contextLogger(log *slog.Logger) *slog.Logger {
	if _, ok := log.Handler().(*logctx.Handler); ok {
		return log
	}
	return slog.New(logctx.NewHandler(log.Handler()))
}

// conversationPorts chooses the conversation's model, guardrail and
// escalation detector, logs each choice, and names them for /ready/.
//
// The provider config selects (config.Config.Provider) answers: Bedrock,
// an OpenAI-compatible endpoint (openaiPorts), or the local adapters;
// config.Validate has refused two providers at once, and a provider's
// setting without its provider. On Bedrock, BEDROCK_GUARDRAIL_ID and _VERSION select
// ApplyGuardrail, else BEDROCK_MODEL_ID_GUARDRAIL a judge model, else the
// local rules check answers; BEDROCK_MODEL_ID_ESCALATION adds the
// classifier after the local escalation rules. Credentials are never
// logged: they come from the AWS SDK's default chain.
func conversationPorts(ctx context.Context, cfg config.Config, appdata local.Appdata, log *slog.Logger) (
	ports.ChatModel, ports.Guardrail, ports.EscalationDetector, map[string]string, error,
) {
	b := cfg.Bedrock
	rules, err := local.NewEscalation(appdata.Escalation)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	localGuardrail, err := local.NewGuardrail(local.GuardrailConfig{Rules: appdata.Guardrail})
	if err != nil {
		return nil, nil, nil, nil, err
	}
	names := map[string]string{"chat": "local", "guardrail": "local", "escalation": "local"}

	switch cfg.Provider() {
	case config.ProviderOpenAI:
		return openaiPorts(ctx, cfg.OpenAI, rules, localGuardrail, names, log)
	case config.ProviderBedrock:
		// Below.
	default:
		m, err := local.NewModel(local.ModelConfig{TokenDelay: cfg.Conversation.LocalTokenDelay})
		if err != nil {
			return nil, nil, nil, nil, err
		}
		log.InfoContext(ctx, "model: local", "token_delay", cfg.Conversation.LocalTokenDelay)
		log.InfoContext(ctx, "guardrail: local (rule-based, from appdata)")
		log.InfoContext(ctx, "escalation: local (rule-based, from appdata)")
		return m, localGuardrail, rules, names, nil
	}

	// One client, so one connection pool, for every Bedrock call.
	client, err := bedrock.NewClient(ctx, bedrock.ClientConfig{Region: b.Region, EndpointURL: b.EndpointURL})
	if err != nil {
		return nil, nil, nil, nil, err
	}
	var stream *bedrock.GuardrailStream
	if b.GuardrailStreamMode != "" {
		stream = &bedrock.GuardrailStream{ID: b.GuardrailID, Version: b.GuardrailVersion, Mode: b.GuardrailStreamMode}
	}
	model, err := bedrock.New(ctx, bedrock.Config{
		Client:            client,
		ChatModelID:       b.ChatModelID,
		SummaryModelID:    b.SummaryModelID,
		EscalationModelID: b.EscalationModelID,
		GuardrailStream:   stream,
		Log:               log,
	})
	if err != nil {
		return nil, nil, nil, nil, err
	}
	names["chat"] = "bedrock"
	log.InfoContext(ctx, "model: bedrock", "region", b.Region,
		"model_id_chat", b.ChatModelID,
		"model_id_summary", orDefault(b.SummaryModelID, b.ChatModelID),
		"endpoint_url", endpointForLog(b.EndpointURL))

	var guardrail ports.Guardrail = localGuardrail
	if stream != nil {
		// Bedrock checks the chat streams: its intervention is the
		// failed check; no ApplyGuardrail call of the server's own.
		guardrail = bedrock.StreamChecked{}
		names["guardrail"] = "bedrock-stream-" + stream.Mode
		log.InfoContext(ctx, "guardrail: bedrock, in the model's stream", "guardrail_id", b.GuardrailID,
			"guardrail_version", b.GuardrailVersion, "stream_mode", stream.Mode)
		if stream.Mode == bedrock.StreamAsync {
			log.WarnContext(ctx, "BEDROCK_GUARDRAIL_STREAM_MODE=async: text is sent before the guardrail has checked it; what it blocks may already have reached the client")
		}
	} else if b.GuardrailID != "" || b.GuardrailModelID != "" {
		g, err := bedrock.NewGuardrail(bedrock.GuardrailConfig{
			Client:           client,
			GuardrailID:      b.GuardrailID,
			GuardrailVersion: b.GuardrailVersion,
			JudgeModelID:     b.GuardrailModelID,
			Log:              log,
		})
		if err != nil {
			return nil, nil, nil, nil, err
		}
		guardrail = g
		names["guardrail"] = string(g.Mode())
		if g.Mode() == bedrock.ModeApplyGuardrail {
			log.InfoContext(ctx, "guardrail: bedrock ApplyGuardrail", "guardrail_id", b.GuardrailID, "guardrail_version", b.GuardrailVersion)
			if b.GuardrailModelID != "" {
				log.WarnContext(ctx, "BEDROCK_MODEL_ID_GUARDRAIL is not used: BEDROCK_GUARDRAIL_ID selects ApplyGuardrail", "model_id_guardrail", b.GuardrailModelID)
			}
		} else {
			log.InfoContext(ctx, "guardrail: bedrock judge model", "model_id_guardrail", b.GuardrailModelID)
		}
	} else {
		log.InfoContext(ctx, "guardrail: local (rule-based, from appdata; set BEDROCK_GUARDRAIL_ID and _VERSION, or BEDROCK_MODEL_ID_GUARDRAIL, for Bedrock)")
	}

	var escalation ports.EscalationDetector = rules
	if b.EscalationModelID != "" {
		// The rules first: they cost nothing and name what matched. The
		// classifier's failures are skipped (Detectors), not fatal.
		escalation = conversation.Detectors{rules, conversation.Classifier{Model: model, Log: log}}
		names["escalation"] = "local+bedrock-classifier"
		log.InfoContext(ctx, "escalation: local rules, then the bedrock classifier", "model_id_escalation", b.EscalationModelID)
	} else {
		log.InfoContext(ctx, "escalation: local (rule-based, from appdata; set BEDROCK_MODEL_ID_ESCALATION to add the Bedrock classifier)")
	}
	return model, guardrail, escalation, names, nil
}

// openaiPorts builds the conversation's ports on an OpenAI-compatible
// endpoint: OPENAI_MODEL_ID_GUARDRAIL selects a judge model, else the
// local rules check answers; OPENAI_MODEL_ID_ESCALATION adds the
// classifier after the local escalation rules. The API key is never
// logged, only whether one is set.
func openaiPorts(ctx context.Context, o config.OpenAI, rules *local.Escalation, localGuardrail *local.Guardrail,
	names map[string]string, log *slog.Logger,
) (ports.ChatModel, ports.Guardrail, ports.EscalationDetector, map[string]string, error) {
	model, err := openai.New(openai.Config{
		BaseURL:           o.BaseURL,
		APIKey:            o.APIKey,
		ChatModelID:       o.ChatModelID,
		SummaryModelID:    o.SummaryModelID,
		EscalationModelID: o.EscalationModelID,
		NoStreamUsage:     !o.StreamUsage,
		Log:               log,
	})
	if err != nil {
		return nil, nil, nil, nil, err
	}
	names["chat"] = config.ProviderOpenAI
	log.InfoContext(ctx, "model: openai-compatible endpoint", "base_url", o.BaseURL, // Validate refused a user, password or query in it
		"model_id_chat", o.ChatModelID,
		"model_id_summary", orDefault(o.SummaryModelID, o.ChatModelID),
		"api_key_set", o.APIKey != "", "stream_usage", o.StreamUsage)

	var guardrail ports.Guardrail = localGuardrail
	if o.GuardrailModelID != "" {
		g, err := openai.NewGuardrail(openai.GuardrailConfig{Model: model, JudgeModelID: o.GuardrailModelID})
		if err != nil {
			return nil, nil, nil, nil, err
		}
		guardrail = g
		names["guardrail"] = openai.ModeJudge
		log.InfoContext(ctx, "guardrail: openai judge model", "model_id_guardrail", o.GuardrailModelID)
	} else {
		log.InfoContext(ctx, "guardrail: local (rule-based, from appdata; set OPENAI_MODEL_ID_GUARDRAIL for a judge model)")
	}

	var escalation ports.EscalationDetector = rules
	if o.EscalationModelID != "" {
		// As on Bedrock: the rules first, the classifier's failures skipped.
		escalation = conversation.Detectors{rules, conversation.Classifier{Model: model, Log: log}}
		names["escalation"] = "local+openai-classifier"
		log.InfoContext(ctx, "escalation: local rules, then the openai classifier", "model_id_escalation", o.EscalationModelID)
	} else {
		log.InfoContext(ctx, "escalation: local (rule-based, from appdata; set OPENAI_MODEL_ID_ESCALATION to add a classifier)")
	}
	return model, guardrail, escalation, names, nil
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// endpointForLog names the endpoint without any user information.
func endpointForLog(raw string) string {
	if raw == "" {
		return "regional"
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "set"
	}
	return u.Scheme + "://" + u.Host
}

// chatMirror publishes a thread's chat events on the session of the same
// id, so listeners on /ws/session/<thread_id>/ see the conversation live.
type chatMirror struct{ hub *session.Hub }

func (c chatMirror) PublishChat(ctx context.Context, threadID string, ev ports.ChatEvent) error {
	return c.hub.Publish(ctx, threadID, conversation.EncodeChatEvent(threadID, ev))
}

// countedGuardrail counts the checks of guardrail in m, unless Bedrock
// checks the streams (StreamChecked): its passes cost nothing and would
// only hide that no call was made.
func countedGuardrail(m *metrics.Metrics, guardrail ports.Guardrail) ports.Guardrail {
	if _, ok := guardrail.(bedrock.StreamChecked); ok {
		return guardrail
	}
	return m.Guardrail(guardrail)
}
