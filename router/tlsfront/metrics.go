package tlsfront

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics count the port-443 front's connections.
//
//	interceptd_tls_connections_total{outcome}     passthrough, refused, hello_failed, upstream_failed, limited,
//	                                              intercepted, untrusted, handshake_failed
//	interceptd_tls_certificates_total{source}     minted, cached
//	interceptd_tls_handshake_seconds              the handshakes the front terminates
//	interceptd_tls_hellos_total{kind}             sni, no_sni, ech, not_tls, malformed, too_large, timeout, gone
//	interceptd_tls_hello_seconds                  from accept to the whole ClientHello (or the failure)
//	interceptd_tls_spliced_bytes_total{direction} in (from sandboxes), out (to them)
//	interceptd_tls_open_connections
//	interceptd_tls_streams_refused_total          HTTP/2 requests over their sandbox's cap in flight (429)
//
// Why a connection was refused is the policy's metric
// (interceptd_policy_decisions_total{protocol="tls"}).
type Metrics struct {
	connections *prometheus.CounterVec
	hellos      *prometheus.CounterVec
	helloTime   prometheus.Histogram
	spliced     *prometheus.CounterVec
	openConns   prometheus.Gauge
	leaves      *prometheus.CounterVec
	handshakes  prometheus.Histogram
	// streamsRefused counts HTTP/2 requests answered 429 for their
	// sandbox's cap on requests in flight (Server.MaxStreams).
	streamsRefused prometheus.Counter
}

// NewMetrics registers the front's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "interceptd", Subsystem: "tls", Name: "connections_total",
			Help: "Intercepted TLS connections (port 443) by outcome: passthrough, refused, hello_failed, upstream_failed, limited."}, []string{"outcome"}),
		hellos: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "interceptd", Subsystem: "tls", Name: "hellos_total",
			Help: "ClientHellos read by what they held: sni, no_sni, ech, not_tls, malformed, too_large, timeout, gone."}, []string{"kind"}),
		helloTime: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "interceptd", Subsystem: "tls", Name: "hello_seconds",
			Help:    "Time from accepting a connection to having its whole ClientHello (or giving up).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .5, 1, 5, 10}}),
		spliced: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "interceptd", Subsystem: "tls", Name: "spliced_bytes_total",
			Help: "Bytes passed through, in (from sandboxes) and out (to them), counted when a connection ends."}, []string{"direction"}),
		openConns: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "interceptd", Subsystem: "tls", Name: "open_connections",
			Help: "Intercepted TLS connections open now."}),
	}
	m.leaves = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "interceptd", Subsystem: "tls", Name: "certificates_total",
		Help: "Leaf certificates presented for intercepted names, by source: minted (signed now by interceptd's CA) or cached."}, []string{"source"})
	m.handshakes = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "interceptd", Subsystem: "tls", Name: "handshake_seconds",
		Help:    "Time of the TLS handshakes the front terminates for intercepted names (a minted certificate included).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 10}})
	m.streamsRefused = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "interceptd", Subsystem: "tls", Name: "streams_refused_total",
		Help: "HTTP/2 requests on intercepted connections answered 429: their sandbox had as many in flight as its connection cap."})
	reg.MustRegister(m.connections, m.hellos, m.helloTime, m.spliced, m.openConns, m.leaves, m.handshakes, m.streamsRefused)
	m.leaves.WithLabelValues("minted")
	m.leaves.WithLabelValues("cached")
	for _, o := range []string{OutcomePassthrough, OutcomeRefused, OutcomeHelloFailed, OutcomeUpstreamFailed, OutcomeLimited, OutcomeIntercepted, OutcomeUntrusted, OutcomeHandshakeFailed} {
		m.connections.WithLabelValues(o)
	}
	for _, k := range []string{HelloSNI, HelloNoSNI, HelloECH, HelloNotTLS, HelloMalformed, HelloTooLarge, HelloTimeout, HelloGone} {
		m.hellos.WithLabelValues(k)
	}
	m.spliced.WithLabelValues("in")
	m.spliced.WithLabelValues("out")
	return m
}

// Limited counts a connection refused at accept for its sandbox's
// connection cap (outcome limited); for connlimit.PerSource.
func (m *Metrics) Limited() { m.connection(OutcomeLimited) }

func (m *Metrics) connection(outcome string) {
	if m != nil {
		m.connections.WithLabelValues(outcome).Inc()
	}
}

func (m *Metrics) hello(kind string, d time.Duration) {
	if m != nil {
		m.hellos.WithLabelValues(kind).Inc()
		m.helloTime.Observe(d.Seconds())
	}
}

func (m *Metrics) bytes(direction string, n int64) {
	if m != nil {
		m.spliced.WithLabelValues(direction).Add(float64(n))
	}
}

func (m *Metrics) leaf(minted bool) {
	if m != nil {
		source := "cached"
		if minted {
			source = "minted"
		}
		m.leaves.WithLabelValues(source).Inc()
	}
}

func (m *Metrics) handshake(d time.Duration) {
	if m != nil {
		m.handshakes.Observe(d.Seconds())
	}
}

func (m *Metrics) streamRefused() {
	if m != nil {
		m.streamsRefused.Inc()
	}
}

func (m *Metrics) open(delta float64) {
	if m != nil {
		m.openConns.Add(delta)
	}
}
