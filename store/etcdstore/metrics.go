package etcdstore

import (
	"errors"
	"time"

	"github.com/interceptd/interceptd/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the etcd backend's Prometheus metrics:
//
//	interceptd_store_etcd_requests_total{op,outcome}
//	interceptd_store_etcd_request_duration_seconds{op}
//	interceptd_store_etcd_conflicts_total{op}          commits read again after another writer
//	interceptd_store_etcd_cache_reads_total{result}    hit|miss|bypass
//	interceptd_store_etcd_cache_invalidations_total{reason}  event|watch_broken|watch_silent
//	interceptd_store_etcd_watch_up                     1 while the cache's watch is current
//
// op is one of a fixed set (get, list, put, delete, txn, their _read
// steps, sweep, purge, check, …); outcome ok, unavailable, too_large,
// no_space, closed, misconfigured (a server limit refused it: --max-txn-ops)
// or error. No label holds a key, an address or a path.
type Metrics struct {
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	conflicts     *prometheus.CounterVec
	cacheReads    *prometheus.CounterVec
	invalidations *prometheus.CounterVec
	refusals      *prometheus.CounterVec
	watchUp       prometheus.Gauge
}

// NewMetrics registers the etcd backend's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "store_etcd", Name: "requests_total",
			Help: "Requests to etcd by operation and outcome.",
		}, []string{"op", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "interceptd", Subsystem: "store_etcd", Name: "request_duration_seconds",
			Help:    "Duration of requests to etcd.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"op"}),
		conflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "store_etcd", Name: "conflicts_total",
			Help: "Commits read again because another writer changed a key they read.",
		}, []string{"op"}),
		cacheReads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "store_etcd", Name: "cache_reads_total",
			Help: "Reads by how the cache answered: hit, miss, or bypass (its watch is not current).",
		}, []string{"result"}),
		invalidations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "store_etcd", Name: "cache_invalidations_total",
			Help: "Keys dropped from the cache for a watch event, and whole drops for a broken or silent watch.",
		}, []string{"reason"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "store_etcd", Name: "quota_refusals_total",
			Help: "Writes refused for a sandbox's quota, by kind.",
		}, []string{"kind"}),
		watchUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "interceptd", Subsystem: "store_etcd", Name: "watch_up",
			Help: "1 while the cache's watch on etcd is current and the cache serves reads.",
		}),
	}
	for _, r := range []string{"hit", "miss", "bypass"} {
		m.cacheReads.WithLabelValues(r)
	}
	for _, r := range []string{"event", "watch_broken", "watch_silent"} {
		m.invalidations.WithLabelValues(r)
	}
	reg.MustRegister(m.requests, m.duration, m.conflicts, m.cacheReads, m.invalidations, m.refusals, m.watchUp)
	return m
}

func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, store.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, store.ErrValueTooLarge):
		return "too_large"
	case errors.Is(err, store.ErrDiskFull):
		return "no_space"
	case errors.Is(err, store.ErrClosed):
		return "closed"
	case errors.Is(err, store.ErrMisconfigured):
		return "misconfigured"
	}
	return "error"
}

func (m *Metrics) request(op string, start time.Time, err error) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(op, outcome(err)).Inc()
	m.duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

func (m *Metrics) conflict(op string) {
	if m != nil {
		m.conflicts.WithLabelValues(op).Inc()
	}
}

func (m *Metrics) cacheRead(result string) {
	if m != nil {
		m.cacheReads.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) invalidation(reason string) {
	if m != nil {
		m.invalidations.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) refusal(kind string) {
	if m != nil {
		m.refusals.WithLabelValues(kind).Inc()
	}
}

func (m *Metrics) setWatchUp(up bool) {
	if m == nil {
		return
	}
	if up {
		m.watchUp.Set(1)
	} else {
		m.watchUp.Set(0)
	}
}
