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

// UpgradedOpen is m's gauge of switched connections open now.
func UpgradedOpen(m *Metrics) prometheus.Gauge { return m.upgrades.open }

// UpgradedBytes is m's counter of stream bytes in direction.
func UpgradedBytes(m *Metrics, direction string) prometheus.Counter {
	if direction == "from_sandbox" {
		return m.upgrades.bytes[dirFromSandbox]
	}
	return m.upgrades.bytes[dirToSandbox]
}

// Upgrades is m's counter of upgrade requests of kind with outcome.
func Upgrades(m *Metrics, kind, outcome string) prometheus.Counter {
	return m.upgrades.requests.WithLabelValues(kind, outcome)
}
