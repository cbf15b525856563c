package dnsshim

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/interceptd/interceptd/metrics"
	"github.com/interceptd/interceptd/policy"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the DNS shim's metrics.
//
//	interceptd_dns_queries_total{answer,rcode,sandbox}  answer: handler|forwarded|denied|limited|servfail|refused|malformed
//	interceptd_dns_query_duration_seconds{answer}
//	interceptd_dns_upstream_requests_total{result}  result: ok|timeout|refused|error
//	interceptd_dns_tcp_connections_rejected_total
type Metrics struct {
	sandboxes *metrics.SandboxLabels
	queries   *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	upstreams *prometheus.CounterVec
	rejected  prometheus.Counter
	durations metrics.Series[string, prometheus.Observer] // by answer
	answered  atomic.Int64                                // queries since start (Queries)
}

// querySeries is one reader of the socket's last series: a reader mostly
// answers one sandbox alike, so the series (with its sandbox label) is
// looked up when that changes, not per query (see metrics.Last, also for a
// deleted sandbox).
type querySeries struct {
	queries   metrics.Last[queryKey, prometheus.Counter]
	decisions policy.Series
}

// queryKey is what a queries series is made for.
type queryKey struct {
	rcode           int
	answer, sandbox string
}

// NewMetrics registers the DNS metrics on reg.
func NewMetrics(reg prometheus.Registerer, sandboxes *metrics.SandboxLabels) *Metrics {
	m := &Metrics{
		sandboxes: sandboxes,
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "dns", Name: "queries_total",
			Help: "DNS queries from sandboxes by answer kind, response code and sandbox.",
		}, []string{"answer", "rcode", "sandbox"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "interceptd", Subsystem: "dns", Name: "query_duration_seconds",
			Help:    "Time to answer a DNS query, upstream time included.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"answer"}),
		upstreams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "dns", Name: "upstream_requests_total",
			Help: "Exchanges with upstream resolvers by result.",
		}, []string{"result"}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "dns", Name: "tcp_connections_rejected_total",
			Help: "TCP connections reset at once because their sandbox held dns.max_tcp_connections_per_sandbox already.",
		}),
	}
	for _, r := range []string{"ok", "timeout", "refused", "error"} {
		m.upstreams.WithLabelValues(r)
	}
	reg.MustRegister(m.queries, m.duration, m.upstreams, m.rejected)
	sandboxes.Track(m.queries)
	return m
}

// observe counts one answered query; qs, if not nil, caches its series.
func (m *Metrics) observe(qs *querySeries, answer, sandbox string, rcode int, start time.Time) {
	if m == nil {
		return
	}
	var last *metrics.Last[queryKey, prometheus.Counter]
	if qs != nil {
		last = &qs.queries
	}
	last.Get(queryKey{rcode, answer, sandbox}, func() prometheus.Counter {
		rc, ok := dns.RcodeToString[rcode]
		if !ok {
			rc = "other"
		}
		return m.queries.WithLabelValues(answer, rc, m.sandboxes.Get(sandbox))
	}).Inc()
	m.answered.Add(1)
	m.durations.Get(answer, func() prometheus.Observer { return m.duration.WithLabelValues(answer) }).
		Observe(time.Since(start).Seconds())
}

func (m *Metrics) rejectedTCPConn() {
	if m != nil {
		m.rejected.Inc()
	}
}

func (m *Metrics) upstream(err error) {
	if m == nil {
		return
	}
	m.upstreams.WithLabelValues(upstreamResult(err)).Inc()
}

func upstreamResult(err error) string {
	var ne net.Error
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	default:
		return "error"
	}
}

// Queries is how many queries interceptd_dns_queries_total counts now (the
// series of deleted sandboxes are gone from it, as from /metrics).
// Queries is how many queries were answered since the daemon started, the
// deleted sandboxes' included (it never goes down).
func (m *Metrics) Queries() int64 { return m.answered.Load() }
