package router

// Upgrades: a request that asks to switch protocols (WebSocket, or any
// other Upgrade) is decided as every request is; then only a handler that
// can carry the switch gets it (the forwarder and the proxy, which pass the
// handshake on and the stream after the 101 through unchanged). Any other
// handler would answer as if the header were not there, and the client
// would wait for a 101 that never comes: the router answers it 400 with
// reason upgrade_unsupported instead.
//
// A switched connection is counted while it is open and its bytes each
// way as they pass, and it is cut when no byte has passed either way for
// the idle timeout (Config.UpgradeIdleTimeout): a stream the daemon no
// longer reads requests from must still end when both sides forgot it.

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// UpgradeCarrier is implemented by the handlers that answer an Upgrade
// request themselves: those that carry it on to an upstream (the forwarder,
// the proxy) and those that refuse every request anyway (deny). The router
// answers an Upgrade request for any other handler with 400
// upgrade_unsupported, before the handler runs.
type UpgradeCarrier interface {
	Handler
	// CarriesUpgrades reports whether the handler answers Upgrade
	// requests itself.
	CarriesUpgrades() bool
}

// ReasonUpgradeUnsupported is the reason of the 400 the router answers an
// Upgrade request with when its handler cannot switch protocols.
const ReasonUpgradeUnsupported = "upgrade_unsupported"

// CutIdle is the reason a switched connection is cut when nothing passed
// either way for the idle timeout (tunnels_cut_total's reason label).
const CutIdle = "idle_timeout"

// DefaultUpgradeIdleTimeout is Config.UpgradeIdleTimeout's default.
const DefaultUpgradeIdleTimeout = 10 * time.Minute

// Upgrade outcomes, the upgrades_total metric's outcome label and the
// decision record's upgrade_outcome.
const (
	// UpgradeSwitched: the upstream answered 101; the stream passed.
	UpgradeSwitched = "switched"
	// UpgradeDenied: the policy denied the request.
	UpgradeDenied = "denied"
	// UpgradeUnsupported: the handler cannot switch protocols (400).
	UpgradeUnsupported = "unsupported"
	// UpgradeFailed: the upstream could not be reached or failed (a 5xx
	// from the daemon).
	UpgradeFailed = "failed"
	// UpgradeNotSwitched: answered without switching (the upstream's own
	// answer, other than a 101).
	UpgradeNotSwitched = "not_switched"
)

// upgradeKind names the protocol r asks for, from a closed set fit for a
// metric label: websocket, h2c or other.
func upgradeKind(r *http.Request) string {
	for _, v := range r.Header["Upgrade"] {
		for p := range strings.SplitSeq(v, ",") {
			p = strings.TrimSpace(p)
			if name, _, _ := strings.Cut(p, "/"); strings.EqualFold(name, "websocket") {
				return "websocket"
			} else if strings.EqualFold(name, "h2c") {
				return "h2c"
			}
		}
	}
	return "other"
}

// carriesUpgrades reports whether h answers Upgrade requests itself.
func carriesUpgrades(h Handler) bool {
	u, ok := h.(UpgradeCarrier)
	return ok && u.CarriesUpgrades()
}

// upgradeUnsupported is the router's answer to an Upgrade request whose
// handler cannot switch protocols. The connection is closed after it: a
// client that sent its first frames right behind the handshake must not
// have them read as a request.
func upgradeUnsupported(w http.ResponseWriter, r *http.Request, route Route) {
	h := w.Header()
	h.Set("Connection", "close")
	// The header names the reason alone, for scripts to match on; the body
	// says which handler and what was asked.
	h.Set("X-Interceptd-Error", ReasonUpgradeUnsupported)
	h.Set("X-Content-Type-Options", "nosniff")
	detail := "the handler for " + route.Name + " answers plain HTTP only and does not switch protocols (Upgrade: " + upgradeKind(r) + ")"
	if acceptsJSON(r) {
		WriteJSON(w, r, http.StatusBadRequest, map[string]string{"error": "bad_request", "reason": ReasonUpgradeUnsupported, "detail": detail})
		return
	}
	body := "interceptd: " + ReasonUpgradeUnsupported + ": " + detail + "\n"
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusBadRequest)
	if r.Method != http.MethodHead {
		io.WriteString(w, body)
	}
}

// upgrade is one allowed Upgrade request's state, from its decision to the
// end of the stream it may become.
type upgrade struct {
	rt *Router
	t  *tunnel

	switched  atomic.Bool
	switchAt  time.Time     // when the handler took the connection over for its 101
	in, out   atomic.Int64  // stream bytes from the sandbox and to it
	last      atomic.Int64  // the last byte's time, in Unix nanoseconds
	idle      time.Duration // 0: no idle timeout
	timerMu   sync.Mutex
	timer     *time.Timer
	timerDone bool
}

// hijacked is called when the handler takes the connection over, which
// the handlers that carry upgrades do only to write the upstream's 101:
// from then on the connection is a stream, counted and timed out.
func (u *upgrade) hijacked(c net.Conn, br *bufio.Reader) net.Conn {
	u.switched.Store(true)
	u.switchAt = time.Now()
	u.last.Store(u.switchAt.UnixNano())
	u.rt.cfg.Metrics.upgradedOpened()
	if u.idle > 0 {
		u.timerMu.Lock()
		u.timer = time.AfterFunc(u.idle, u.checkIdle)
		u.timerMu.Unlock()
	}
	return &upgradedConn{Conn: c, u: u, br: br}
}

// checkIdle cuts the tunnel when nothing passed for the idle timeout, or
// looks again when the timeout would next run out.
func (u *upgrade) checkIdle() {
	since := time.Since(time.Unix(0, u.last.Load()))
	if since < u.idle {
		u.timerMu.Lock()
		if !u.timerDone {
			u.timer.Reset(u.idle - since)
		}
		u.timerMu.Unlock()
		return
	}
	u.rt.cutTunnel(u.t, CutIdle, "nothing passed either way for "+u.idle.String())
}

// ended stops the idle timer and counts the stream's end.
func (u *upgrade) ended() {
	if !u.switched.Load() {
		return
	}
	u.timerMu.Lock()
	u.timerDone = true
	if u.timer != nil {
		u.timer.Stop()
	}
	u.timerMu.Unlock()
	u.rt.cfg.Metrics.upgradedClosed()
}

// outcome is how the upgrade request ended, given the status answered.
func (u *upgrade) outcome(status int) string {
	switch {
	case u.switched.Load():
		return UpgradeSwitched
	case status >= 500:
		return UpgradeFailed
	}
	return UpgradeNotSwitched
}

// upgradedConn is the sandbox's side of a switched connection: it counts
// the bytes each way and when the last one passed.
type upgradedConn struct {
	net.Conn
	u *upgrade
	// br is the server's reader at the hijack: what the sandbox sent right
	// behind its handshake may wait there. httputil.ReverseProxy copies
	// from the connection alone, which would drop those bytes; they are
	// read first. Only what is buffered: past the hijack, reading through
	// br would read the server's connection, which is no longer its.
	br *bufio.Reader
}

func (c *upgradedConn) Read(p []byte) (int, error) {
	var n int
	var err error
	if c.br != nil && c.br.Buffered() > 0 {
		n, err = c.br.Read(p[:min(len(p), c.br.Buffered())])
	} else {
		n, err = c.Conn.Read(p)
	}
	if n > 0 {
		c.u.in.Add(int64(n))
		c.u.last.Store(time.Now().UnixNano())
		c.u.rt.cfg.Metrics.upgradedBytes(dirFromSandbox, n)
	}
	return n, err
}

func (c *upgradedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.u.out.Add(int64(n))
		c.u.last.Store(time.Now().UnixNano())
		c.u.rt.cfg.Metrics.upgradedBytes(dirToSandbox, n)
	}
	return n, err
}

// Hijack lets a handler that carries upgrades take the connection over
// (httputil.ReverseProxy does, to write the upstream's 101 and copy the
// stream). For an allowed Upgrade request the connection it gets counts
// its bytes and is timed out when idle; the status recorded is the 101
// the handler writes next.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err != nil || r.up == nil {
		return c, brw, err
	}
	if !r.wrote {
		r.status, r.wrote = http.StatusSwitchingProtocols, true
	}
	var br *bufio.Reader
	if brw != nil {
		br = brw.Reader
	}
	return r.up.hijacked(c, br), brw, nil
}

// Directions of interceptd_router_upgraded_bytes_total.
const (
	dirFromSandbox = iota
	dirToSandbox
)

// upgradeMetrics are the router's metrics of upgrade requests and the
// streams they become.
type upgradeMetrics struct {
	requests *prometheus.CounterVec
	open     prometheus.Gauge
	bytes    [2]prometheus.Counter
}

func newUpgradeMetrics(reg prometheus.Registerer) upgradeMetrics {
	um := upgradeMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "router", Name: "upgrades_total",
			Help: "Requests that asked to switch protocols, by kind (websocket, h2c, other) and outcome (switched, denied, unsupported, failed, not_switched).",
		}, []string{"kind", "outcome"}),
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "interceptd", Subsystem: "router", Name: "upgraded_connections_open",
			Help: "Switched connections (after their 101) open now.",
		}),
	}
	bytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "interceptd", Subsystem: "router", Name: "upgraded_bytes_total",
		Help: "Bytes of switched connections' streams after the 101, by direction (from_sandbox, to_sandbox).",
	}, []string{"direction"})
	um.bytes[dirFromSandbox] = bytes.WithLabelValues("from_sandbox")
	um.bytes[dirToSandbox] = bytes.WithLabelValues("to_sandbox")
	reg.MustRegister(um.requests, um.open, bytes)
	return um
}

func (m *Metrics) upgradeRequest(kind, outcome string) {
	if m != nil {
		m.upgrades.requests.WithLabelValues(kind, outcome).Inc()
	}
}

func (m *Metrics) upgradedOpened() {
	if m != nil {
		m.upgrades.open.Inc()
	}
}

func (m *Metrics) upgradedClosed() {
	if m != nil {
		m.upgrades.open.Dec()
	}
}

func (m *Metrics) upgradedBytes(dir, n int) {
	if m != nil {
		m.upgrades.bytes[dir].Add(float64(n))
	}
}
