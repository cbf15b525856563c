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
	if m != nil {
		m.decisions.WithLabelValues(protocol, string(d.Result), d.Reason, m.sandboxes.Get(sandbox)).Inc()
	}
}
