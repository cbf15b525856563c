package router

import (
	"sync/atomic"
	"time"

	"github.com/interceptd/interceptd/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the dispatch's metrics. The transport's (connections) are
// router/httpserve's, the forwarder's (forward errors) router/forward's,
// under the same interceptd_router_ prefix.
//
//	interceptd_router_requests_total{handler,code,sandbox} handler: a configured host, worker:NAME, worker:NAME:outbound, _catch_all, _forward, _deny, _unknown_source
//	interceptd_router_requests_in_flight
//	interceptd_router_request_bytes_total{handler}
//	interceptd_router_request_duration_seconds{handler}
//	interceptd_router_response_bytes_total{handler}
//	interceptd_router_tunnels_open                  upgraded or spliced connections open now (tunnel.go)
//	interceptd_router_tunnels_cut_total{reason}     reason: a policy deny reason, rerouted, sandbox_deleted, idle_timeout
//	interceptd_router_upgrades_total{kind,outcome}  kind: websocket|h2c|other; outcome: switched|denied|unsupported|failed|not_switched (upgrade.go)
//	interceptd_router_upgraded_connections_open     switched connections (after their 101) open now
//	interceptd_router_upgraded_bytes_total{direction} direction: from_sandbox|to_sandbox, stream bytes after the 101
type Metrics struct {
	sandboxes *metrics.SandboxLabels
	bytesIn   *prometheus.CounterVec
	inFlight  prometheus.GaugeFunc
	flying    atomic.Int64 // what inFlight reports: an add, not a compare-and-swap loop on a float
	requests  *prometheus.CounterVec
	served    atomic.Int64 // requests since start (Requests), deleted sandboxes' included
	duration  *prometheus.HistogramVec
	bytes     *prometheus.CounterVec
	tunnels   tunnelMetrics
	upgrades  upgradeMetrics

	// perHandler holds each handler's series without a sandbox label: the
	// vector lookups were a visible part of a request's cost.
	perHandler metrics.Series[string, *handlerSeries]
}

type handlerSeries struct {
	duration       prometheus.Observer
	bytes, bytesIn prometheus.Counter
}

// NewMetrics registers the router metrics on reg.
func NewMetrics(reg prometheus.Registerer, sandboxes *metrics.SandboxLabels) *Metrics {
	m := &Metrics{
		sandboxes: sandboxes,
		bytesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "router", Name: "request_bytes_total",
			Help: "Request body bytes received from sandboxes, by handler.",
		}, []string{"handler"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "router", Name: "requests_total",
			Help: "Intercepted HTTP requests by handler, status code and sandbox.",
		}, []string{"handler", "code", "sandbox"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "interceptd", Subsystem: "router", Name: "request_duration_seconds",
			Help:    "Time from request headers read to response written, by handler.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"handler"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "router", Name: "response_bytes_total",
			Help: "Response body bytes sent to sandboxes, by handler.",
		}, []string{"handler"}),
	}
	m.inFlight = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "interceptd", Subsystem: "router", Name: "requests_in_flight",
		Help: "Intercepted HTTP requests being served now.",
	}, func() float64 { return float64(m.flying.Load()) })
	reg.MustRegister(m.requests, m.duration, m.bytes, m.bytesIn, m.inFlight)
	m.tunnels = newTunnelMetrics(reg)
	m.upgrades = newUpgradeMetrics(reg)
	sandboxes.Track(m.requests)
	return m
}

// requestSeries is one connection's last series of the requests counter.
// A connection is one sandbox's and mostly sees one handler and one
// outcome, so the series is looked up once, not per request (see
// metrics.Last, also for a deleted sandbox's connection).
type requestSeries = metrics.Last[requestKey, prometheus.Counter]

// requestKey is what a requests series is made for; the code first, as it
// is what changes most often.
type requestKey struct {
	code             int
	handler, sandbox string
}

// request counts one request; rs, if not nil, caches its series.
func (m *Metrics) request(rs *requestSeries, handler, sandbox string, code int, in, out int64, d time.Duration) {
	if m == nil {
		return
	}
	rs.Get(requestKey{code, handler, sandbox}, func() prometheus.Counter {
		return m.requests.WithLabelValues(handler, metrics.CodeLabel(code), m.sandboxes.Get(sandbox))
	}).Inc()
	m.served.Add(1)
	s := m.perHandler.Get(handler, func() *handlerSeries {
		return &handlerSeries{
			duration: m.duration.WithLabelValues(handler),
			bytes:    m.bytes.WithLabelValues(handler),
			bytesIn:  m.bytesIn.WithLabelValues(handler),
		}
	})
	s.duration.Observe(d.Seconds())
	if out > 0 {
		s.bytes.Add(float64(out))
	}
	if in > 0 {
		s.bytesIn.Add(float64(in))
	}
}

func (m *Metrics) flight(delta int64) {
	if m != nil {
		m.flying.Add(delta)
	}
}

// Requests is the number of intercepted requests counted so far, as
// interceptd_router_requests_total sums them.
// Requests is how many requests were served since the daemon started: it
// never goes down, where the sum of interceptd_router_requests_total loses a
// deleted sandbox's series.
func (m *Metrics) Requests() int64 { return m.served.Load() }
