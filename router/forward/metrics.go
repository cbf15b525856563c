package forward

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the forwarder's metrics.
//
//	interceptd_router_forward_errors_total{kind}  kind: refused|reset|unreachable|timeout|canceled|certificate|error
//
// The name keeps the router's subsystem: the forwarder is the router's hop
// to the original destination, and dashboards know it by that name.
type Metrics struct {
	errors *prometheus.CounterVec
}

// NewMetrics registers the forwarder's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{errors: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "interceptd", Subsystem: "router", Name: "forward_errors_total",
		Help: "Failures forwarding to the original destination, by kind.",
	}, []string{"kind"})}
	reg.MustRegister(m.errors)
	return m
}

// Failed counts a failure of kind (see ErrorKind). A nil Metrics counts
// nothing.
func (m *Metrics) Failed(kind string) {
	if m != nil {
		m.errors.WithLabelValues(kind).Inc()
	}
}
