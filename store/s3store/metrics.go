package s3store

import (
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/interceptd/interceptd/store"
)

// Metrics are the S3 blob backend's Prometheus metrics.
//
//	interceptd_store_s3_requests_total{op,outcome}
//	interceptd_store_s3_request_duration_seconds{op}
//	interceptd_store_s3_bytes_total{direction}    direction: read|written
//
// op is head, get, put, delete or list (one blob operation, which may be
// several S3 calls); outcome ok, not_found, refused (a precondition, a
// limit, a bad digest: the client's doing), unavailable (the store could
// not be reached in time) or error. Every label has a fixed set of values.
type Metrics struct {
	reqs  *prometheus.CounterVec
	dur   *prometheus.HistogramVec
	bytes *prometheus.CounterVec
}

// NewMetrics registers the metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		reqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "store_s3", Name: "requests_total",
			Help: "Blob operations on the S3 backend by operation and outcome.",
		}, []string{"op", "outcome"}),
		dur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "interceptd", Subsystem: "store_s3", Name: "request_duration_seconds",
			Help:    "Duration of blob operations on the S3 backend (a put or get: until its call returns, not the whole stream).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"op"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "store_s3", Name: "bytes_total",
			Help: "Object bytes read from and written to the S3 backend.",
		}, []string{"direction"}),
	}
	for _, op := range []string{"head", "get", "put", "delete", "list"} {
		for _, o := range []string{"ok", "not_found", "refused", "unavailable", "error"} {
			m.reqs.WithLabelValues(op, o)
		}
	}
	m.bytes.WithLabelValues("read")
	m.bytes.WithLabelValues("written")
	reg.MustRegister(m.reqs, m.dur, m.bytes)
	return m
}

func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, store.ErrNotFound):
		return "not_found"
	case errors.Is(err, store.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, store.ErrPreconditionFailed), errors.Is(err, store.ErrValueTooLarge),
		errors.Is(err, store.ErrBadDigest), errors.Is(err, store.ErrIncomplete),
		errors.Is(err, store.ErrInvalidKey), errors.Is(err, store.ErrKeyTooLarge), errors.Is(err, store.ErrInvalidCursor):
		return "refused"
	}
	return "error"
}

// observe counts one operation; m may be nil (no metrics).
func (m *Metrics) observe(op string, start time.Time, err *error) {
	if m == nil {
		return
	}
	m.reqs.WithLabelValues(op, outcome(*err)).Inc()
	m.dur.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

func (m *Metrics) addBytes(dir string, n int64) {
	if m == nil || n <= 0 {
		return
	}
	m.bytes.WithLabelValues(dir).Add(float64(n))
}

// logStaging says a staging object was left behind: it holds no blob, but
// occupies space until deleted (or until a lifecycle rule on the .staging/
// prefix reaps it).
func (m *Metrics) logStaging(name string, err error) {
	slog.Warn("s3: could not delete a staging object", "object", name, "err", err)
}
