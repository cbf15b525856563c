package router

import (
	"time"

	"github.com/interceptd/interceptd/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the router's metrics.
//
//	interceptd_router_connections_total            intercepted TCP connections accepted
//	interceptd_router_connections_active
//	interceptd_router_requests_total{handler,code} handler: a configured host, _forward, _unknown_source
//	interceptd_router_request_duration_seconds{handler}
//	interceptd_router_response_bytes_total{handler}
//	interceptd_router_forward_errors_total{kind}    kind: refused|reset|unreachable|timeout|canceled|error
type Metrics struct {
	conns       prometheus.Counter
	active      prometheus.Gauge
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	bytes       *prometheus.CounterVec
	forwardErrs *prometheus.CounterVec
}

// NewMetrics registers the router metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		conns: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "router", Name: "connections_total",
			Help: "Intercepted TCP connections accepted by the transparent listener.",
		}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "interceptd", Subsystem: "router", Name: "connections_active",
			Help: "Intercepted TCP connections open now.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "router", Name: "requests_total",
			Help: "Intercepted HTTP requests by handler and status code.",
		}, []string{"handler", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "interceptd", Subsystem: "router", Name: "request_duration_seconds",
			Help:    "Time from request headers read to response written, by handler.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"handler"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "router", Name: "response_bytes_total",
			Help: "Response body bytes sent to sandboxes, by handler.",
		}, []string{"handler"}),
		forwardErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "router", Name: "forward_errors_total",
			Help: "Failures forwarding to the original destination, by kind.",
		}, []string{"kind"}),
	}
	reg.MustRegister(m.conns, m.active, m.requests, m.duration, m.bytes, m.forwardErrs)
	return m
}

func (m *Metrics) request(handler string, code int, bytes int64, d time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(handler, metrics.CodeLabel(code)).Inc()
	m.duration.WithLabelValues(handler).Observe(d.Seconds())
	m.bytes.WithLabelValues(handler).Add(float64(bytes))
}

func (m *Metrics) connOpened() {
	if m != nil {
		m.conns.Inc()
		m.active.Inc()
	}
}

func (m *Metrics) connClosed() {
	if m != nil {
		m.active.Dec()
	}
}

func (m *Metrics) forwardError(kind string) {
	if m != nil {
		m.forwardErrs.WithLabelValues(kind).Inc()
	}
}
