// Package metrics exposes wsserver's figures to Prometheus.
package metrics

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wsserver/wsserver/ports"
)

// Metrics holds the server's collectors in a registry of its own, so that
// several servers in one process (as in tests) do not collide.
type Metrics struct {
	registry      *prometheus.Registry
	socketsOpen   *prometheus.GaugeVec
	messagesIn    *prometheus.CounterVec
	messagesOut   *prometheus.CounterVec
	delivery      prometheus.Histogram
	slowConsumers *prometheus.CounterVec
	rateLimited   *prometheus.CounterVec
	refused       *prometheus.CounterVec
	backendErrors *prometheus.CounterVec
	httpConns     prometheus.Gauge
	unserved      prometheus.Counter
	guardChecks   *prometheus.CounterVec
	guardChars    prometheus.Counter

	mu     sync.Mutex
	served map[net.Conn]bool // connections in net/http's hands: has one sent a whole request?
}

// New registers every collector.
func New() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		socketsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wsserver_sockets_open", Help: "Open WebSocket connections, by endpoint.",
		}, []string{"endpoint"}),
		messagesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsserver_messages_in_total", Help: "WebSocket messages received, by endpoint.",
		}, []string{"endpoint"}),
		messagesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsserver_messages_out_total", Help: "WebSocket frames written, by endpoint.",
		}, []string{"endpoint"}),
		delivery: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "wsserver_broadcast_delivery_seconds",
			Help:    "Time from a broadcast's publication to its fan-out to this instance's sockets.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		slowConsumers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsserver_slow_consumer_disconnects_total", Help: "Sockets closed with 1008 because their send queue was full.",
		}, []string{"endpoint"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsserver_messages_rate_limited_total", Help: "WebSocket messages refused with rate_limited (over RATE_LIMIT_PER_SEC and _BURST), by endpoint.",
		}, []string{"endpoint"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsserver_upgrades_refused_total", Help: "WebSocket upgrades refused, by reason.",
		}, []string{"reason"}),
		backendErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsserver_backend_errors_total", Help: "Failed calls to shared backends, by backend and operation.",
		}, []string{"backend", "op"}),
		httpConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wsserver_http_connections", Help: "TCP connections the HTTP server holds (a WebSocket leaves it once upgraded).",
		}),
		unserved: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wsserver_http_connections_unserved_total",
			Help: "TCP connections closed before they sent one whole request (header timeout, bad request line, client gone).",
		}),
		guardChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsserver_guardrail_checks_total",
			Help: "Guardrail checks (calls: one ApplyGuardrail or judge call each on Bedrock), by outcome: pass, fail or error.",
		}, []string{"outcome"}),
		guardChars: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wsserver_guardrail_checked_chars_total",
			Help: "Characters given to the guardrail (Bedrock bills text units of up to 1,000 characters a check).",
		}),
		served: make(map[net.Conn]bool),
	}
	for _, outcome := range []string{"pass", "fail", "error"} {
		m.guardChecks.WithLabelValues(outcome) // at 0 from the start, so a scrape before the first check sees it
	}
	m.registry.MustRegister(
		m.socketsOpen, m.messagesIn, m.messagesOut, m.delivery, m.slowConsumers, m.rateLimited, m.refused, m.backendErrors,
		m.httpConns, m.unserved, m.guardChecks, m.guardChars,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry})
}

// Endpoint is the figures of one WebSocket endpoint, resolved once.
type Endpoint struct {
	Open    prometheus.Gauge
	In, Out prometheus.Counter
	Slow    prometheus.Counter
	Limited prometheus.Counter // messages refused by the rate limit
}

// Endpoint returns the collectors labelled with name.
func (m *Metrics) Endpoint(name string) Endpoint {
	return Endpoint{
		Open:    m.socketsOpen.WithLabelValues(name),
		In:      m.messagesIn.WithLabelValues(name),
		Out:     m.messagesOut.WithLabelValues(name),
		Slow:    m.slowConsumers.WithLabelValues(name),
		Limited: m.rateLimited.WithLabelValues(name),
	}
}

// Refused counts an upgrade refused for reason.
func (m *Metrics) Refused(reason string) { m.refused.WithLabelValues(reason).Inc() }

// Delivered records one broadcast's fan-out on this instance.
func (m *Metrics) Delivered(latency time.Duration, _ int) {
	m.delivery.Observe(latency.Seconds())
}

// BackendError counts a failed call to the channel layer or presence store.
func (m *Metrics) BackendError(op string) { m.backendErrors.WithLabelValues("redis", op).Inc() }

// RedisError counts a failed Redis call by operation.
func (m *Metrics) RedisError(op string) { m.backendErrors.WithLabelValues("redis", op).Inc() }

// PostgresError counts a failed PostgreSQL call by operation.
func (m *Metrics) PostgresError(op string) { m.backendErrors.WithLabelValues("postgres", op).Inc() }

// WatchConns makes srv count its connections: those open, and those that
// end before a whole request reached srv.Handler, which is how a client
// that never finishes its headers (slowloris) or sends garbage ends. Call
// it once srv.Handler is set and before srv serves.
func (m *Metrics) WatchConns(srv *http.Server) {
	next := srv.Handler
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
			m.mu.Lock()
			if _, open := m.served[c]; open {
				m.served[c] = true
			}
			m.mu.Unlock()
		}
		next.ServeHTTP(w, r)
	})
	connContext := srv.ConnContext
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if connContext != nil {
			ctx = connContext(ctx, c)
		}
		return context.WithValue(ctx, connKey{}, c)
	}
	connState := srv.ConnState
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		m.connState(c, s)
		if connState != nil {
			connState(c, s)
		}
	}
}

type connKey struct{}

func (m *Metrics) connState(c net.Conn, s http.ConnState) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch s {
	case http.StateNew:
		m.served[c] = false
		m.httpConns.Inc()
	case http.StateHijacked, http.StateClosed:
		served, open := m.served[c]
		if !open {
			return
		}
		delete(m.served, c)
		m.httpConns.Dec()
		if s == http.StateClosed && !served {
			m.unserved.Inc()
		}
	}
}

// Guardrail returns g counting its checks and the characters it is given
// (wsserver_guardrail_checks_total, wsserver_guardrail_checked_chars_total).
func (m *Metrics) Guardrail(g ports.Guardrail) ports.Guardrail {
	return countedGuardrail{next: g, checks: m.guardChecks, chars: m.guardChars}
}

type countedGuardrail struct {
	next   ports.Guardrail
	checks *prometheus.CounterVec
	chars  prometheus.Counter
}

func (g countedGuardrail) WholeAnswer() bool { return g.next.WholeAnswer() }

func (g countedGuardrail) Check(ctx context.Context, text string) (ports.Verdict, error) {
	v, err := g.next.Check(ctx, text)
	outcome := "pass"
	switch {
	case err != nil:
		outcome = "error"
	case !v.Pass:
		outcome = "fail"
	}
	g.checks.WithLabelValues(outcome).Inc()
	g.chars.Add(float64(utf8.RuneCountInString(text)))
	return v, err
}
