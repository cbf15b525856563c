package httpserve

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/interceptd/interceptd/router"
	"github.com/prometheus/client_golang/prometheus"
)

// Handler serves one request that came on c; *router.Router is one.
type Handler interface {
	ServeConn(w http.ResponseWriter, r *http.Request, c router.Conn)
}

// Server serves intercepted connections: plain requests in its own lean
// loop (serve.go), the rest through net/http (see the handoff).
type Server struct {
	h       Handler
	metrics *Metrics
	log     *slog.Logger
	srv     *http.Server // serves what the lean loop hands off
	hand    *handoffListener

	closing     atomic.Bool
	handoffOnce sync.Once
	mu          sync.Mutex
	ln          net.Listener
	conns       map[*leanConn]struct{}
	// sweeping: sweepWatches runs (while requests are being served).
	sweeping atomic.Bool
}

// New returns a Server that passes requests to h. m may be nil.
func New(h Handler, m *Metrics, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{h: h, metrics: m, log: log, hand: newHandoffListener(m)}
	s.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c := r.Context().Value(stdConnKey{}).(*stdConn)
			h.ServeConn(w, r, &stdRequest{stdConn: c, ctx: r.Context()})
		}),
		// A sandbox that trickles its headers gets 10 s; its connections are
		// capped per sandbox (LimitPerSource) so it cannot starve others.
		ReadHeaderTimeout: headerTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			sc, _ := c.(*sniffConn)
			return context.WithValue(ctx, stdConnKey{}, &stdConn{c: c, sniff: sc, src: addrPort(c.RemoteAddr()), dst: addrPort(c.LocalAddr())})
		},
		ConnState: func(c net.Conn, st http.ConnState) {
			// Counted as opened when the lean loop accepted it.
			if st == http.StateClosed || st == http.StateHijacked {
				m.connClosed()
			}
		},
	}
	return s
}

// stdConn is a connection net/http serves, as its requests see it.
type stdConn struct {
	c        net.Conn
	sniff    *sniffConn // nil when the listener was not wrapped
	src, dst netip.AddrPort
	cache    router.ConnCache
}

type stdConnKey struct{}

// stdRequest is the router.Conn of one request net/http serves: the client
// going away is what cancels the request's context (net/http watches).
type stdRequest struct {
	*stdConn
	ctx  context.Context
	stop func() bool
}

func (c *stdConn) Addrs() (source, dest netip.AddrPort) { return c.src, c.dst }
func (c *stdConn) Cache() *router.ConnCache             { return &c.cache }
func (c *stdConn) Close() error                         { return c.c.Close() }

// Ambiguous takes the sniffer's entry for the request: called once for
// every request, so that the sniffer's queue stays in step.
func (c *stdConn) Ambiguous() bool { return c.sniff != nil && c.sniff.conflicting() }

func (r *stdRequest) WhenGone(f func()) { r.stop = context.AfterFunc(r.ctx, f) }

func (r *stdRequest) StopWhenGone() bool {
	stop := r.stop
	r.stop = nil
	return stop == nil || stop()
}

// Lean connections are router.Conns too.

func (lc *leanConn) Addrs() (source, dest netip.AddrPort) { return lc.src, lc.dst }
func (lc *leanConn) Cache() *router.ConnCache             { return &lc.cache }
func (lc *leanConn) Ambiguous() bool                      { return false } // such a head goes to net/http
func (lc *leanConn) Close() error                         { return lc.c.Close() }

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// Metrics are the server's metrics.
//
//	interceptd_router_connections_total            intercepted TCP connections accepted
//	interceptd_router_connections_active
//	interceptd_router_connections_rejected_total    over the per-sandbox cap
//	interceptd_router_connections_handed_off_total  passed from the lean loop to net/http (chunked or Expect uploads, upgrades, unusual heads)
//
// The names keep the router's subsystem: to an operator, the server is the
// router's front door.
type Metrics struct {
	conns, handedOff, rejected prometheus.Counter
	active                     prometheus.Gauge
}

// NewMetrics registers the server's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "router", Name: "connections_rejected_total",
			Help: "Intercepted connections reset because their sandbox already held its maximum.",
		}),
		conns: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "router", Name: "connections_total",
			Help: "Intercepted TCP connections accepted by the transparent listener.",
		}),
		handedOff: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "router", Name: "connections_handed_off_total",
			Help: "Intercepted connections passed from the lean HTTP/1.1 loop to net/http: chunked or Expect uploads, upgrades, heads outside the strict subset.",
		}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "interceptd", Subsystem: "router", Name: "connections_active",
			Help: "Intercepted TCP connections open now.",
		}),
	}
	reg.MustRegister(m.rejected, m.conns, m.handedOff, m.active)
	return m
}

func (m *Metrics) connOpened() {
	if m != nil {
		m.conns.Inc()
		m.active.Inc()
	}
}

func (m *Metrics) connClosed() {
	if m != nil {
		m.active.Dec()
	}
}

func (m *Metrics) handoff() {
	if m != nil {
		m.handedOff.Inc()
	}
}

func (m *Metrics) rejectedConn() {
	if m != nil {
		m.rejected.Inc()
	}
}
