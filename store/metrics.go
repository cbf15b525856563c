package store

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
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
//	interceptd_store_refusals_total{kind,reason}     reason: quota_exceeded|disk_full
//	interceptd_store_usage_bytes{kind,sandbox}       what writes charged to a sandbox occupy
//	interceptd_store_usage_keys{kind,sandbox}
//	interceptd_store_usage_engine{kind,engine}       1: the kind's usage series come from engine; 0: it could not be read
//
// kind is kv, state, blob or do (Durable-Object storage); op get, head, put,
// delete, list, txn, delete_all or sql; result ok, not_found, invalid,
// conflict, precondition_failed, quota_exceeded, disk_full, database_full
// (an object's SQL database at its size cap) or error. The usage series
// are read from the store at each scrape; their sandbox label is the one
// the sandbox holds in the SandboxLabels given to LabelSandboxes (its name,
// or _other: a sandbox that is gone, or one beyond the cap). UsageFrom
// takes some kinds' usage from another engine (etcd's fleet-wide counters
// for KV and state, the S3 ledger for blobs); the usage_engine series says which engine each kind's
// figures come from, and is 0 while that engine cannot be read (the kind's
// usage series are absent then, rather than zero).
type Metrics struct {
	refusals *prometheus.CounterVec
	usage    *usageCollector
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
	m.refusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "interceptd", Subsystem: "store", Name: "refusals_total",
		Help: "Writes refused for a sandbox's quota (quota_exceeded) or the data directory's free-space floor (disk_full).",
	}, []string{"kind", "reason"})
	m.usage = &usageCollector{
		bytes: prometheus.NewDesc("interceptd_store_usage_bytes",
			"Bytes that the writes charged to a sandbox occupy (keys, values, metadata, objects, uploads in progress).", []string{"kind", "sandbox"}, nil),
		keys: prometheus.NewDesc("interceptd_store_usage_keys",
			"Keys (objects, for blobs) that the writes charged to a sandbox occupy.", []string{"kind", "sandbox"}, nil),
		engine: prometheus.NewDesc("interceptd_store_usage_engine",
			"1 for the engine each kind's usage series are read from (bbolt: this host's file; etcd: the fleet's counters; s3: the S3 blobs' ledger), 0 while it cannot be read.", []string{"kind", "engine"}, nil),
	}
	for _, k := range usageKinds {
		for _, d := range []string{"read", "written"} {
			m.bytes.WithLabelValues(k, d)
		}
		for _, r := range []string{"quota_exceeded", "disk_full"} {
			m.refusals.WithLabelValues(k, r)
		}
	}
	reg.MustRegister(m.ops, m.duration, m.bytes, m.commits, m.refusals, m.usage)
	return m
}

// LabelSandboxes names the usage series' sandboxes through labels; without
// it they are all _other.
func (m *Metrics) LabelSandboxes(labels *metrics.SandboxLabels) { m.usage.labels.Store(labels) }

// UsageFrom makes the usage series of kinds come from all instead of the
// bbolt file, which holds none of theirs when another engine keeps them.
// all is called at every scrape: it must be cheap (a cache, not a scan).
// engine names it in interceptd_store_usage_engine. Each call adds a
// source (etcd's for KV and state, S3's ledger for blobs); a kind named
// by several calls comes from the last of them.
func (m *Metrics) UsageFrom(engine string, kinds []string, all func() (map[string]Amounts, error)) {
	m.usage.mu.Lock()
	defer m.usage.mu.Unlock()
	srcs := []*remoteUsage{}
	if p := m.usage.remote.Load(); p != nil {
		srcs = append(srcs, *p...)
	}
	srcs = append(srcs, &remoteUsage{engine: engine, kinds: kinds, all: all})
	m.usage.remote.Store(&srcs)
}

// remoteUsage is where one UsageFrom call sends some kinds' usage series.
type remoteUsage struct {
	engine string
	kinds  []string
	all    func() (map[string]Amounts, error)
}

// usageCollector reads every sandbox's usage at scrape time: the store
// keeps it, so there is nothing to keep in step.
type usageCollector struct {
	bytes, keys, engine *prometheus.Desc
	db                  atomic.Pointer[DB]
	labels              atomic.Pointer[metrics.SandboxLabels]
	mu                  sync.Mutex                     // serialises UsageFrom
	remote              atomic.Pointer[[]*remoteUsage] // in UsageFrom's order
}

// sourceOf returns the source of kind's usage: the last UsageFrom that
// named it, or nil for the bbolt file.
func sourceOf(srcs []*remoteUsage, kind string) *remoteUsage {
	for i := len(srcs) - 1; i >= 0; i-- {
		if slices.Contains(srcs[i].kinds, kind) {
			return srcs[i]
		}
	}
	return nil
}

func (c *usageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.bytes
	ch <- c.keys
	ch <- c.engine
}

func (c *usageCollector) Collect(ch chan<- prometheus.Metric) {
	db := c.db.Load()
	if db == nil {
		return
	}
	labels := c.labels.Load()
	local, lerr := db.AllUsage()
	var srcs []*remoteUsage
	if p := c.remote.Load(); p != nil {
		srcs = *p
	}
	// Each source is read once per scrape, and only for the kinds it
	// still owns: one overridden for all its kinds is not read at all.
	type reading struct {
		all map[string]Amounts
		err error
	}
	read := map[*remoteUsage]*reading{}
	for _, k := range usageKinds {
		all, err, engine := local, lerr, "bbolt"
		if r := sourceOf(srcs, k); r != nil {
			if read[r] == nil {
				a, e := r.all()
				read[r] = &reading{a, e}
			}
			all, err, engine = read[r].all, read[r].err, r.engine
		}
		if err != nil {
			// Absent rather than zero: a dashboard must not read an
			// outage as an empty store.
			ch <- prometheus.MustNewConstMetric(c.engine, prometheus.GaugeValue, 0, k, engine)
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.engine, prometheus.GaugeValue, 1, k, engine)
		sums := map[string]*Amount{}
		for sb, a := range all {
			l := labels.Peek(sb)
			if sums[l] == nil {
				sums[l] = &Amount{}
			}
			sums[l].Bytes += a.Of(k).Bytes
			sums[l].Keys += a.Of(k).Keys
		}
		for l, a := range sums {
			ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(a.Bytes), k, l)
			ch <- prometheus.MustNewConstMetric(c.keys, prometheus.GaugeValue, float64(a.Keys), k, l)
		}
	}
}

// watchFile exports the database file size and the usage it holds.
func (m *Metrics) watchFile(db *DB) {
	m.usage.db.Store(db)
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "interceptd", Subsystem: "store", Name: "file_size_bytes",
		Help: "Size of the bbolt database file.",
	}, func() float64 {
		n, _ := db.FileSize()
		return float64(n)
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
	case errors.Is(err, ErrQuotaExceeded):
		result = "quota_exceeded"
		m.refusals.WithLabelValues(kind, result).Inc()
	case errors.Is(err, ErrDiskFull):
		result = "disk_full"
		m.refusals.WithLabelValues(kind, result).Inc()
	case errors.Is(err, ErrDatabaseFull):
		result = "database_full"
	case errors.Is(err, ErrInvalidKey), errors.Is(err, ErrKeyTooLarge), errors.Is(err, ErrValueTooLarge),
		errors.Is(err, ErrMetadataTooLarge), errors.Is(err, ErrInvalidMetadata), errors.Is(err, ErrInvalidCursor),
		errors.Is(err, ErrBadDigest), errors.Is(err, ErrIncomplete), errors.Is(err, ErrTooManyKeys),
		errors.Is(err, ErrInvalidClass), errors.Is(err, ErrInvalidObjectID), errors.Is(err, ErrInvalidListOptions):
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
