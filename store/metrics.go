package store

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the store's Prometheus metrics.
type Metrics struct {
	ops      *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewMetrics registers the store metrics on reg.
//
//	interceptd_store_operations_total{op, result}
//	interceptd_store_operation_duration_seconds{op}
//
// op is one of kv_get, kv_put, kv_delete; result one of ok, not_found,
// invalid, error.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "store", Name: "operations_total",
			Help: "Store operations by operation and result.",
		}, []string{"op", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "interceptd", Subsystem: "store", Name: "operation_duration_seconds",
			Help:    "Duration of store operations, including the fsync of writes.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"op"}),
	}
	reg.MustRegister(m.ops, m.duration)
	return m
}

func (m *Metrics) observe(op string, start time.Time, err error) {
	result := "ok"
	switch {
	case err == nil:
	case errors.Is(err, ErrNotFound):
		result = "not_found"
	case errors.Is(err, ErrInvalidKey), errors.Is(err, ErrKeyTooLarge), errors.Is(err, ErrValueTooLarge):
		result = "invalid"
	default:
		result = "error"
	}
	m.ops.WithLabelValues(op, result).Inc()
	m.duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
}
