package store

import (
	"errors"
	"os"
	"time"

	"github.com/interceptd/interceptd/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the store's Prometheus metrics.
//
//	interceptd_store_operations_total{kind,op,result}
//	interceptd_store_operation_duration_seconds{kind,op}
//	interceptd_store_bytes_total{kind,direction}     direction: read|written
//	interceptd_store_commit_writes                   writes per shared commit
//	interceptd_store_file_size_bytes
//
// kind is kv, state or blob; op get, head, put, delete, list or txn; result
// ok, not_found, invalid, conflict, precondition_failed or error.
type Metrics struct {
	ops      *prometheus.CounterVec
	duration *prometheus.HistogramVec
	bytes    *prometheus.CounterVec
	commits  prometheus.Histogram
	reg      prometheus.Registerer
	series   metrics.Series[opKey, *opSeries]
	byteDirs metrics.Series[[2]string, prometheus.Counter] // kind, dir
}

// NewMetrics registers the store metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		reg: reg,
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "store", Name: "operations_total",
			Help: "Store operations by store kind, operation and result.",
		}, []string{"kind", "op", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "interceptd", Subsystem: "store", Name: "operation_duration_seconds",
			Help:    "Duration of store operations, including the fsync of writes.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1, 5, 30},
		}, []string{"kind", "op"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "store", Name: "bytes_total",
			Help: "Value and object bytes read from and written to the store.",
		}, []string{"kind", "direction"}),
		commits: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "interceptd", Subsystem: "store", Name: "commit_writes",
			Help:    "Writes grouped into each shared commit (one fsync each).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}),
	}
	for _, k := range []string{KindKV, KindState, KindBlob} {
		for _, d := range []string{"read", "written"} {
			m.bytes.WithLabelValues(k, d)
		}
	}
	reg.MustRegister(m.ops, m.duration, m.bytes, m.commits)
	return m
}

// watchFile exports the database file size.
func (m *Metrics) watchFile(db *DB) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "interceptd", Subsystem: "store", Name: "file_size_bytes",
		Help: "Size of the bbolt database file.",
	}, func() float64 {
		fi, err := os.Stat(db.Path())
		if err != nil {
			return 0
		}
		return float64(fi.Size())
	}))
}

func (m *Metrics) observe(kind, op string, start time.Time, err error) {
	result := "ok"
	switch {
	case err == nil:
	case errors.Is(err, ErrNotFound):
		result = "not_found"
	case errors.Is(err, ErrConditionFailed):
		result = "conflict"
	case errors.Is(err, ErrPreconditionFailed):
		result = "precondition_failed"
	case errors.Is(err, ErrInvalidKey), errors.Is(err, ErrKeyTooLarge), errors.Is(err, ErrValueTooLarge),
		errors.Is(err, ErrMetadataTooLarge), errors.Is(err, ErrInvalidMetadata), errors.Is(err, ErrInvalidCursor),
		errors.Is(err, ErrBadDigest), errors.Is(err, ErrIncomplete):
		result = "invalid"
	default:
		result = "error"
	}
	k := opKey{kind, op, result}
	s := m.series.Get(k, func() *opSeries {
		return &opSeries{
			ops:      m.ops.WithLabelValues(kind, op, result),
			duration: m.duration.WithLabelValues(kind, op),
		}
	})
	s.ops.Inc()
	s.duration.Observe(time.Since(start).Seconds())
}

// opKey and opSeries cache the series of each (kind, op, result): a set of
// a few dozen, never deleted, looked up on every store operation.
type opKey struct{ kind, op, result string }

type opSeries struct {
	ops      prometheus.Counter
	duration prometheus.Observer
}
