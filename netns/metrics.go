package netns

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the sandbox lifecycle metrics.
//
//	interceptd_sandbox_active                      gauge
//	interceptd_sandbox_operations_total{op,result} op: create|attach|chain|delete; result: ok|error
//	                                               (chain: attached to a primary CNI plugin's wiring)
//	interceptd_sandbox_operation_duration_seconds{op}
//	interceptd_sandbox_lost_total                  namespaces that disappeared under the daemon
type Metrics struct {
	active   prometheus.Gauge
	ops      *prometheus.CounterVec
	duration *prometheus.HistogramVec
	lostN    prometheus.Counter
}

// NewMetrics registers the sandbox metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "interceptd", Subsystem: "sandbox", Name: "active",
			Help: "Sandboxes that exist now.",
		}),
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "sandbox", Name: "operations_total",
			Help: "Sandbox create and delete operations by result.",
		}, []string{"op", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "interceptd", Subsystem: "sandbox", Name: "operation_duration_seconds",
			Help:    "Time to create or delete a sandbox.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"op"}),
	}
	for _, op := range []string{"create", "attach", "chain", "delete"} {
		for _, r := range []string{"ok", "error"} {
			m.ops.WithLabelValues(op, r)
		}
	}
	m.lostN = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "interceptd", Subsystem: "sandbox", Name: "lost_total",
		Help: "Sandboxes whose namespace disappeared under the daemon (removed by something else).",
	})
	reg.MustRegister(m.active, m.ops, m.duration, m.lostN)
	return m
}

func (m *Metrics) observe(op string, start time.Time, err error) {
	if m == nil {
		return
	}
	r := "ok"
	if err != nil {
		r = "error"
	}
	m.ops.WithLabelValues(op, r).Inc()
	m.duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

func (m *Metrics) lost() {
	if m != nil {
		m.lostN.Inc()
	}
}

func (m *Metrics) setActive(n int) {
	if m != nil {
		m.active.Set(float64(n))
	}
}
