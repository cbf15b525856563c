package policy

import "github.com/prometheus/client_golang/prometheus"

// Metrics count policy decisions.
//
//	interceptd_policy_decisions_total{protocol,result,reason}
//
// protocol is http or dns; result handler, catch_all, forward or deny;
// reason one of Reasons.
type Metrics struct {
	decisions *prometheus.CounterVec
}

// NewMetrics registers the policy metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "interceptd", Subsystem: "policy", Name: "decisions_total",
		Help: "Policy decisions by protocol, result and reason.",
	}, []string{"protocol", "result", "reason"})}
	reg.MustRegister(m.decisions)
	return m
}

// Observe counts one decision.
func (m *Metrics) Observe(protocol string, d Decision) {
	if m != nil {
		m.decisions.WithLabelValues(protocol, string(d.Result), d.Reason).Inc()
	}
}
