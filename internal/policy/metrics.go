package policy

import (
	"github.com/interceptd/interceptd/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics count policy decisions.
//
//	interceptd_policy_decisions_total{protocol,result,reason,sandbox}
//
// protocol is http or dns; result handler, catch_all, forward or deny;
// reason one of Reasons.
type Metrics struct {
	decisions *prometheus.CounterVec
	sandboxes *metrics.SandboxLabels
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
// so that the series is looked up once instead of on every decision.
type Series struct {
	protocol, sandbox, reason string
	result                    Result
	c                         prometheus.Counter
}

// ObserveInto counts one decision, through s when it holds the decision's
// series (and into s otherwise); s may be nil.
func (m *Metrics) ObserveInto(s *Series, protocol, sandbox string, d Decision) {
	if m == nil {
		return
	}
	if s != nil && s.c != nil && s.result == d.Result && s.reason == d.Reason && s.sandbox == sandbox && s.protocol == protocol {
		s.c.Inc()
		return
	}
	c := m.decisions.WithLabelValues(protocol, string(d.Result), d.Reason, m.sandboxes.Get(sandbox))
	c.Inc()
	if s != nil {
		*s = Series{protocol: protocol, sandbox: sandbox, reason: d.Reason, result: d.Result, c: c}
	}
}

// Denials is how many deny decisions interceptd_policy_decisions_total
// counts now, over every protocol (the series of deleted sandboxes are gone
// from it, as from /metrics).
func (m *Metrics) Denials() int64 {
	return int64(metrics.Sum(m.decisions, func(l map[string]string) bool { return l["result"] == string(Deny) }))
}
