package policy

import (
	"sync/atomic"

	"github.com/interceptd/interceptd/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics count policy decisions.
//
//	interceptd_policy_decisions_total{protocol,result,reason,sandbox}
//
// protocol is http, dns or tls; result handler, catch_all, forward or deny;
// reason one of Reasons.
type Metrics struct {
	decisions *prometheus.CounterVec
	sandboxes *metrics.SandboxLabels
	denied    atomic.Int64 // deny decisions since start (Denials)
}

// NewMetrics registers the policy metrics on reg.
func NewMetrics(reg prometheus.Registerer, sandboxes *metrics.SandboxLabels) *Metrics {
	m := &Metrics{sandboxes: sandboxes, decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "interceptd", Subsystem: "policy", Name: "decisions_total",
		Help: "Policy decisions by protocol, result, reason and sandbox.",
	}, []string{"protocol", "result", "reason", "sandbox"})}
	reg.MustRegister(m.decisions)
	sandboxes.Track(m.decisions)
	return m
}

// Observe counts one decision.
func (m *Metrics) Observe(protocol, sandbox string, d Decision) {
	m.ObserveInto(nil, protocol, sandbox, d)
}

// Series is the last series one caller counted a decision into. A caller
// that is one sandbox's and mostly decides alike (a connection) keeps one,
// so that the series is looked up once instead of on every decision (see
// metrics.Last, also for a deleted sandbox).
type Series struct {
	last metrics.Last[seriesKey, prometheus.Counter]
}

// seriesKey is what a decisions series is made for.
type seriesKey struct {
	result                    Result
	reason, sandbox, protocol string
}

// ObserveInto counts one decision, through s when it holds the decision's
// series (and into s otherwise); s may be nil.
func (m *Metrics) ObserveInto(s *Series, protocol, sandbox string, d Decision) {
	if m == nil {
		return
	}
	var last *metrics.Last[seriesKey, prometheus.Counter]
	if s != nil {
		last = &s.last
	}
	last.Get(seriesKey{d.Result, d.Reason, sandbox, protocol}, func() prometheus.Counter {
		return m.decisions.WithLabelValues(protocol, string(d.Result), d.Reason, m.sandboxes.Get(sandbox))
	}).Inc()
	if d.Result == Deny {
		m.denied.Add(1)
	}
}

// Denials is how many deny decisions were taken since the daemon started,
// over every protocol and every sandbox, deleted ones included: it never
// goes down (interceptd_policy_decisions_total loses a deleted sandbox's
// series).
func (m *Metrics) Denials() int64 { return m.denied.Load() }
