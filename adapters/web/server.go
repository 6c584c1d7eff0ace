// Package web is wsserver's edge: the HTTP endpoints and the WebSocket
// endpoints, on Echo. It checks hosts, keys and origins, turns the core's
// errors into statuses and close codes, and nothing else: the rules live in
// the core.
package web

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/labstack/echo/v4"

	"github.com/wsserver/wsserver/adapters/metrics"
	"github.com/wsserver/wsserver/adapters/socket"
	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/core/session"
)

// Check is one dependency that /ready/ asks.
type Check struct {
	Name  string
	Check func(ctx context.Context) error
}

// Defaults of Config, which are also the defaults of MAX_CONNECTIONS,
// RATE_LIMIT_PER_SEC and RATE_LIMIT_BURST.
const (
	DefaultMaxConnections = 50000
	DefaultRatePerSec     = 100
	DefaultRateBurst      = 200
)

// Config configures the edge.
type Config struct {
	// InstanceID is reported by /health/. Required.
	InstanceID string
	// APIKey, when set, must come with every WebSocket upgrade and API call.
	APIKey string
	// HostAllowed and OriginAllowed decide the Host and Origin checks.
	// Required.
	HostAllowed   func(host string) bool
	OriginAllowed func(origin string) bool
	// MaxConnections caps this instance's sockets; beyond it upgrades get
	// 503 max_connections. Zero means 50000.
	MaxConnections int
	// MaxConnectionsPerIP caps the sockets of one client address (IPv6
	// addresses count per /64); beyond it upgrades get 429
	// too_many_connections. Zero means no per-address limit.
	MaxConnectionsPerIP int
	// TrustedProxies lists the proxies whose X-Forwarded-For is believed.
	// The client address, logged as "remote" and counted by
	// MaxConnectionsPerIP, is the TCP peer, or, when the peer is a trusted
	// proxy, the rightmost X-Forwarded-For entry that is not one. Nil
	// trusts no proxy: X-Forwarded-For is ignored.
	TrustedProxies []netip.Prefix
	// RatePerSec and RateBurst limit the messages of one socket. Zero
	// means 100 and 200 (config.Load never passes zero: it refuses it).
	RatePerSec float64
	RateBurst  int
	// HelloTimeout bounds the wait for a session socket's hello. Zero
	// means 10 seconds.
	HelloTimeout time.Duration
	// Sockets configures every WebSocket.
	Sockets socket.Config
	// Hub runs the session streams. Required.
	Hub *session.Hub
	// Chat runs the conversations of /ws/chat/ and the thread API.
	// Required.
	Chat *conversation.Conversation
	// MaxMessageChars bounds a chat message (MAX_MESSAGE_CHARS). Zero
	// means 8000.
	MaxMessageChars int
	// CSRFSecret signs the CSRF tokens of the API. Required.
	CSRFSecret string
	// CSRFTTL is how long a CSRF token stays valid. Zero means 12 hours.
	CSRFTTL time.Duration
	// SaveWait is how long CloseChats waits, once its grace is over and
	// the answers are cancelled, for them to finish saving what they sent
	// before it gives them up. Zero means 5 seconds.
	SaveWait time.Duration
	// Ready lists what /ready/ checks.
	Ready []Check
	// Components names the adapters of the conversation, shown by /ready/
	// under "model": "chat", "guardrail" and "escalation", each "local" or
	// a Bedrock one ("bedrock", "bedrock-guardrail", "bedrock-judge",
	// "local+bedrock-classifier"). Names only: never endpoints or
	// credentials. Nil leaves "model" out.
	Components map[string]string
	// TestPage is the browser test page (docs.WSTestPage), served at
	// /ws-test/. Nil means no test page: /ws-test/ is a 404.
	TestPage []byte
	// Metrics is required.
	Metrics *metrics.Metrics
	// Log's lines name the endpoint, connection, session and thread
	// through the context (logctx): its handler should be a
	// logctx.Handler.
	Log *slog.Logger
}

// Server is the HTTP handler of one instance.
type Server struct {
	cfg      Config
	echo     *echo.Echo
	upgrader websocket.Upgrader
	sessions *endpoint
	chats    *endpoint
	csrf     *CSRF

	draining atomic.Bool
	open     atomic.Int64 // sockets on every endpoint

	addrMu sync.Mutex
	perIP  map[string]int // sockets by client address key (addrKey)

	// base is the context of every socket; it carries no deadline and is
	// never cancelled: sockets end by being closed.
	base context.Context

	mu      sync.Mutex
	conns   map[*conn]struct{} // the sockets of both endpoints, to close on drain
	answers map[*answer]string // answers running, by thread id; they outlive their sockets
	gone    *sync.Cond         // signalled when an endpoint's last socket or an answer ends
}

// New builds the edge.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.InstanceID == "":
		return nil, errors.New("web: instance id is required")
	case cfg.HostAllowed == nil || cfg.OriginAllowed == nil:
		return nil, errors.New("web: host and origin checks are required")
	case cfg.Hub == nil:
		return nil, errors.New("web: a session hub is required")
	case cfg.Metrics == nil:
		return nil, errors.New("web: metrics are required")
	case cfg.Chat == nil:
		return nil, errors.New("web: a conversation service is required")
	case cfg.CSRFSecret == "":
		return nil, errors.New("web: a CSRF secret is required")
	case cfg.MaxConnections < 0 || cfg.MaxConnectionsPerIP < 0 || cfg.RateBurst < 0 || cfg.MaxMessageChars < 0:
		return nil, errors.New("web: connection, burst and message limits must not be negative")
	case !(cfg.RatePerSec >= 0) || math.IsInf(cfg.RatePerSec, 0):
		return nil, errors.New("web: the rate per second must be a finite number, not negative")
	case cfg.HelloTimeout < 0 || cfg.CSRFTTL < 0 || cfg.SaveWait < 0:
		return nil, errors.New("web: the hello timeout, the CSRF lifetime and the save wait must not be negative")
	}
	if cfg.MaxMessageChars <= 0 {
		cfg.MaxMessageChars = conversation.DefaultMaxMessageChars
	}
	if cfg.CSRFTTL <= 0 {
		cfg.CSRFTTL = 12 * time.Hour
	}
	if cfg.SaveWait == 0 {
		cfg.SaveWait = 5 * time.Second
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	if cfg.RatePerSec <= 0 {
		cfg.RatePerSec = DefaultRatePerSec
	}
	if cfg.RateBurst <= 0 {
		cfg.RateBurst = DefaultRateBurst
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:     cfg,
		perIP:   make(map[string]int),
		base:    context.Background(),
		conns:   make(map[*conn]struct{}),
		answers: make(map[*answer]string),
	}
	s.gone = sync.NewCond(&s.mu)
	csrf, err := NewCSRF(CSRFConfig{Secret: cfg.CSRFSecret, TTL: cfg.CSRFTTL})
	if err != nil {
		return nil, err
	}
	s.csrf = csrf
	s.sessions = newEndpoint("session", cfg.Sockets, cfg.Metrics)
	s.chats = newEndpoint("chat", cfg.Sockets, cfg.Metrics)
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		// Pooled write buffers: an idle socket should cost little.
		// Frames are written by package socket, which needs no gorilla
		// write buffer at all, and reads through a small buffer of its
		// own (socket.Server.Upgrade).
		WriteBufferPool: &sync.Pool{},
		// Origins are checked before the upgrade, with the JSON errors.
		CheckOrigin: func(*http.Request) bool { return true },
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			writeError(w, status, "bad_handshake", reason.Error())
		},
	}

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.IPExtractor = clientIP(cfg.TrustedProxies)
	e.HTTPErrorHandler = s.httpError
	e.Use(s.recoverPanics, s.logRequests, s.checkHost)
	e.GET("/health/", s.health)
	e.GET("/ready/", s.ready)
	e.GET("/metrics", echo.WrapHandler(cfg.Metrics.Handler()))
	e.GET("/ws/session/:id/", s.sessionSocket)
	e.GET("/ws/chat/", s.chatSocket)
	e.GET("/api/csrf-token/", s.csrfToken)
	e.POST("/api/thread/history", s.threadHistory)
	e.POST("/api/thread/summarize", s.threadSummarize)
	s.routeTestPage(e)
	s.echo = e
	return s, nil
}

// Handler returns the HTTP handler.
func (s *Server) Handler() http.Handler { return s.echo }

// Echo exposes the router, for the endpoints of later packages.
func (s *Server) Echo() *echo.Echo { return s.echo }

// Drain starts the shutdown: /health/ answers 503 and no new WebSocket is
// accepted.
func (s *Server) Drain() { s.draining.Store(true) }

func (s *Server) health(c echo.Context) error {
	if s.draining.Load() {
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "draining", "instance_id": s.cfg.InstanceID})
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ok", "instance_id": s.cfg.InstanceID})
}

func (s *Server) ready(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	// Anyone may ask /ready/: it names the check that failed, and only
	// the log has the driver's words (users, databases, addresses).
	failing := map[string]string{}
	for _, ch := range s.cfg.Ready {
		if err := ch.Check(ctx); err != nil {
			failing[ch.Name] = "unavailable"
			s.cfg.Log.WarnContext(ctx, "ready check failed", "check", ch.Name, "err", redact(err.Error()))
		}
	}
	body := map[string]any{"status": "ok", "instance_id": s.cfg.InstanceID}
	if s.cfg.Components != nil {
		body["model"] = s.cfg.Components
	}
	status := http.StatusOK
	if s.draining.Load() {
		status, body["status"] = http.StatusServiceUnavailable, "draining"
	}
	if len(failing) > 0 {
		status, body["status"], body["failing"] = http.StatusServiceUnavailable, "unavailable", failing
	}
	return c.JSON(status, body)
}

var (
	urlPassword = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]*@`)
	kvPassword  = regexp.MustCompile(`(?i)(password\s*=\s*)('[^']*'|"[^"]*"|\S+)`)
)

// redact masks the passwords that an error from a driver may quote: a
// URL's user information and a connection string's password=.
func redact(s string) string {
	s = urlPassword.ReplaceAllString(s, "${1}xxxxx@")
	return kvPassword.ReplaceAllString(s, "${1}xxxxx")
}

// admit decides whether a WebSocket upgrade may go on; it writes the
// refusal itself and reports false when not.
func (s *Server) admit(c echo.Context) bool {
	r, w := c.Request(), c.Response()
	refuse := func(status int, code, msg string) bool {
		s.cfg.Metrics.Refused(code)
		writeError(w, status, code, msg)
		return false
	}
	switch {
	case s.draining.Load():
		return refuse(http.StatusServiceUnavailable, "draining", "this instance is shutting down; connect again")
	case !s.authorized(r):
		return refuse(http.StatusUnauthorized, "unauthorized", "a valid API key is required (authorization query parameter or Authorization header)")
	case r.Header.Get("Origin") != "" && !s.cfg.OriginAllowed(r.Header.Get("Origin")):
		return refuse(http.StatusForbidden, "forbidden_origin", "this origin is not allowed")
	}
	return true
}

// reserve counts a socket against MaxConnections and against the
// MaxConnectionsPerIP of its client address, which it returns; it writes
// the refusal itself and reports false when either is full. release
// undoes it.
func (s *Server) reserve(c echo.Context) (addr string, ok bool) {
	addr = addrKey(c.RealIP())
	refuse := func(status int, code, msg string) (string, bool) {
		s.cfg.Metrics.Refused(code)
		writeError(c.Response(), status, code, msg)
		return "", false
	}
	if s.open.Add(1) > int64(s.cfg.MaxConnections) {
		s.open.Add(-1)
		return refuse(http.StatusServiceUnavailable, "max_connections", "this instance is full; connect again")
	}
	if s.cfg.MaxConnectionsPerIP > 0 {
		s.addrMu.Lock()
		full := s.perIP[addr] >= s.cfg.MaxConnectionsPerIP
		if !full {
			s.perIP[addr]++
		}
		s.addrMu.Unlock()
		if full {
			s.open.Add(-1)
			return refuse(http.StatusTooManyRequests, "too_many_connections", "too many connections from this address; close some first")
		}
	}
	return addr, true
}

// release gives back the place reserve took for a socket of addr.
func (s *Server) release(addr string) {
	if s.cfg.MaxConnectionsPerIP > 0 {
		s.addrMu.Lock()
		if s.perIP[addr]--; s.perIP[addr] <= 0 {
			delete(s.perIP, addr)
		}
		s.addrMu.Unlock()
	}
	s.open.Add(-1)
}

// clientIP returns the IP extractor of the edge: X-Forwarded-For is read
// only from a trusted proxy, right to left, up to the first address that
// is not one (echo.ExtractIPFromXFFHeader). Echo trusts loopback, link-local
// and private addresses by default; here only the configured ranges are.
func clientIP(trusted []netip.Prefix) echo.IPExtractor {
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range trusted {
		opts = append(opts, echo.TrustIPRange(&net.IPNet{
			IP:   p.Addr().AsSlice(),
			Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
		}))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}

// addrKey is what MaxConnectionsPerIP counts: an IPv4 address, or the /64
// of an IPv6 one, since one IPv6 client may hold a whole /64.
func addrKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}
