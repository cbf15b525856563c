package router

import "github.com/prometheus/client_golang/prometheus"

// For the tests of package router_test, which go through the server and
// the handlers (neither of which an internal test may import).

// TunnelsOpen is m's gauge of open tunnels.
func TunnelsOpen(m *Metrics) prometheus.Gauge { return m.tunnels.open }

// TunnelsCut is m's counter of tunnels cut for reason.
func TunnelsCut(m *Metrics, reason string) prometheus.Counter {
	return m.tunnels.cut.WithLabelValues(reason)
}
