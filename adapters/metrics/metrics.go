// Package metrics exposes wsserver's figures to Prometheus.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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
	refused       *prometheus.CounterVec
	backendErrors *prometheus.CounterVec
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
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsserver_upgrades_refused_total", Help: "WebSocket upgrades refused, by reason.",
		}, []string{"reason"}),
		backendErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wsserver_backend_errors_total", Help: "Failed calls to shared backends, by backend and operation.",
		}, []string{"backend", "op"}),
	}
	m.registry.MustRegister(
		m.socketsOpen, m.messagesIn, m.messagesOut, m.delivery, m.slowConsumers, m.refused, m.backendErrors,
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
}

// Endpoint returns the collectors labelled with name.
func (m *Metrics) Endpoint(name string) Endpoint {
	return Endpoint{
		Open: m.socketsOpen.WithLabelValues(name),
		In:   m.messagesIn.WithLabelValues(name),
		Out:  m.messagesOut.WithLabelValues(name),
		Slow: m.slowConsumers.WithLabelValues(name),
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
