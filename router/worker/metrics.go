package worker

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the workers' metrics. Labels are bounded: worker names come
// from the config, function is "outbound" or an outboundByHost key of the
// operator's script.
//
//	interceptd_worker_invocations_total{worker,function,outcome}  outcome: ok|exception|cpu_limit|memory_limit|wall_limit|busy|bad_request|passed_through|error
//	interceptd_worker_duration_seconds{worker}                     wall time of an invocation
//	interceptd_worker_cpu_seconds{worker}                          JavaScript running time of an invocation
//	interceptd_worker_subrequests_total{worker,outcome}            fetch() calls: ok|refused|limit|error
//	interceptd_worker_runtimes{worker}                             runtimes in the pool now
//	interceptd_worker_pool_waits_total{worker}                     requests that waited for a runtime
//	interceptd_worker_reloads_total{worker,result}                 result: ok|failed
//	interceptd_worker_do_calls_total{worker,class,outcome}         Durable-Object calls: ok|waited (another call to the object ran first)|failed
//
// The Durable Objects' storage operations are the store's
// (interceptd_store_operations_total{kind="do"}).
type Metrics struct {
	invocations *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	cpu         *prometheus.HistogramVec
	subrequests *prometheus.CounterVec
	pool        *prometheus.GaugeVec
	waits       *prometheus.CounterVec
	reloads     *prometheus.CounterVec
	doCalls     *prometheus.CounterVec
}

// NewMetrics registers the workers' metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	buckets := []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	m := &Metrics{
		invocations: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "interceptd", Subsystem: "worker", Name: "invocations_total",
			Help: "Worker function invocations by worker, function and outcome."}, []string{"worker", "function", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "interceptd", Subsystem: "worker", Name: "duration_seconds",
			Help: "Wall time of worker invocations.", Buckets: buckets}, []string{"worker"}),
		cpu: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "interceptd", Subsystem: "worker", Name: "cpu_seconds",
			Help: "JavaScript running time of worker invocations (the CPU limit's measure).", Buckets: buckets}, []string{"worker"}),
		subrequests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "interceptd", Subsystem: "worker", Name: "subrequests_total",
			Help: "fetch() calls made by workers, by outcome."}, []string{"worker", "outcome"}),
		pool: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "interceptd", Subsystem: "worker", Name: "runtimes",
			Help: "JavaScript runtimes in each worker's pool."}, []string{"worker"}),
		waits: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "interceptd", Subsystem: "worker", Name: "pool_waits_total",
			Help: "Requests that waited for a runtime of a worker's pool."}, []string{"worker"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "interceptd", Subsystem: "worker", Name: "reloads_total",
			Help: "Worker reloads by result."}, []string{"worker", "result"}),
	}
	m.doCalls = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "interceptd", Subsystem: "worker", Name: "do_calls_total",
		Help: "Durable-Object calls by worker, class and outcome (waited: another call to the same object ran first)."}, []string{"worker", "class", "outcome"})
	reg.MustRegister(m.invocations, m.duration, m.cpu, m.subrequests, m.pool, m.waits, m.reloads, m.doCalls)
	return m
}

func (m *Metrics) invocation(worker, function, outcome string, d, cpu time.Duration) {
	if m == nil {
		return
	}
	m.invocations.WithLabelValues(worker, function, outcome).Inc()
	m.duration.WithLabelValues(worker).Observe(d.Seconds())
	m.cpu.WithLabelValues(worker).Observe(cpu.Seconds())
}

func (m *Metrics) subrequest(worker, outcome string) {
	if m != nil {
		m.subrequests.WithLabelValues(worker, outcome).Inc()
	}
}

func (m *Metrics) runtimes(worker string, delta float64) {
	if m != nil {
		m.pool.WithLabelValues(worker).Add(delta)
	}
}

func (m *Metrics) poolWait(worker string) {
	if m != nil {
		m.waits.WithLabelValues(worker).Inc()
	}
}

func (m *Metrics) reload(worker string, ok bool) {
	if m == nil {
		return
	}
	r := "ok"
	if !ok {
		r = "failed"
	}
	m.reloads.WithLabelValues(worker, r).Inc()
}

func (m *Metrics) doCall(worker, class string, waited bool, err error) {
	if m == nil {
		return
	}
	outcome := "ok"
	switch {
	case err != nil:
		outcome = "failed"
	case waited:
		outcome = "waited"
	}
	m.doCalls.WithLabelValues(worker, class, outcome).Inc()
}
