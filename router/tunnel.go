package router

// Tunnels: connections whose bytes the router passes on without reading
// requests from them any more (an upgraded connection after its 101; a
// spliced TLS connection). A kept-alive HTTP connection is decided again at
// each request, so a policy change reaches it by itself; a tunnel was decided
// once, when it opened, and would otherwise carry on under a policy that
// now refuses it. So the router keeps each sandbox's open tunnels with what
// their decision was made on, and after a policy change (Redecide) makes
// each decision again, through the same decision function a request goes
// through, and cuts the tunnels now denied. A deleted sandbox's tunnels are
// all cut (Forget).

import (
	"context"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/interceptd/interceptd/policy"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http/httpguts"
)

// Why a tunnel was cut, besides the policy's own deny reasons
// (policy.ReasonDenied, ReasonNotAllowed, …), which say why it is now denied.
const (
	// CutRerouted: the decision now picks another handler than the one the
	// tunnel goes to.
	CutRerouted = "rerouted"
	// CutSandboxDeleted: the sandbox is gone, or its address is another's.
	CutSandboxDeleted = "sandbox_deleted"
)

// tunnel is one open tunnel and what its decision was made on.
type tunnel struct {
	sandbox, host string
	dest          netip.AddrPort
	handler       string // the route it was decided to
	requestID     string
	opened        time.Time
	// redecide makes the tunnel's decision again with the sandbox's policy
	// as it is now, through the router's decision function: the route it
	// would take and the decision (with its Detail when denied).
	redecide func() (handler string, d policy.Decision)
	// cut closes both sides; it may be called more than once and after
	// the tunnel has ended.
	cut func()
}

// tunnels are the open tunnels by sandbox. The zero value is ready.
type tunnels struct {
	mu        sync.Mutex
	bySandbox map[string]map[*tunnel]struct{}
}

func (ts *tunnels) add(t *tunnel) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.bySandbox == nil {
		ts.bySandbox = map[string]map[*tunnel]struct{}{}
	}
	m := ts.bySandbox[t.sandbox]
	if m == nil {
		m = map[*tunnel]struct{}{}
		ts.bySandbox[t.sandbox] = m
	}
	m[t] = struct{}{}
}

// remove reports whether t was there: whoever removes it counts its end.
func (ts *tunnels) remove(t *tunnel) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	m := ts.bySandbox[t.sandbox]
	if _, ok := m[t]; !ok {
		return false
	}
	delete(m, t)
	if len(m) == 0 {
		delete(ts.bySandbox, t.sandbox)
	}
	return true
}

// of returns a sandbox's open tunnels.
func (ts *tunnels) of(sandbox string) []*tunnel {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	out := make([]*tunnel, 0, len(ts.bySandbox[sandbox]))
	for t := range ts.bySandbox[sandbox] {
		out = append(out, t)
	}
	return out
}

// into returns the open tunnels, of any sandbox, to addr.
func (ts *tunnels) into(addr netip.Addr) []*tunnel {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var out []*tunnel
	for _, m := range ts.bySandbox {
		for t := range m {
			if t.dest.Addr() == addr {
				out = append(out, t)
			}
		}
	}
	return out
}

// openTunnel registers t; the tunnel's owner calls the function returned
// when it ends. Upgrades register through upgradeTunnel; any other kind (a
// TLS passthrough splice) registers the same way, with a redecide that calls
// the decision function its connection went through and a cut that closes
// both of its sides.
func (rt *Router) openTunnel(t *tunnel) (ended func()) {
	rt.tunnels.add(t)
	rt.cfg.Metrics.tunnelOpened()
	return func() {
		if rt.tunnels.remove(t) {
			rt.cfg.Metrics.tunnelEnded()
		}
	}
}

// Redecide makes the decision of each of the sandbox's open tunnels again,
// with its policy as it is now, and cuts those the policy now denies or
// would send elsewhere. Call it after the sandbox's policy changed; it
// returns how many it cut.
func (rt *Router) Redecide(sandbox string) int {
	n := 0
	for _, t := range rt.tunnels.of(sandbox) {
		if rt.redecideTunnel(t) {
			n++
		}
	}
	return n
}

// RedecideInto makes the decision of every sandbox's open tunnels to addr
// again, and cuts those now denied; it returns how many it cut. Call it
// after the policy of the sandbox at addr changed: a tunnel from another
// sandbox to it (a spliced TLS connection, an upgrade) was decided under
// its inbound entries too (policy.Verdicts.Sandbox), and the kernel, which
// cuts the connections into it that its entries no longer admit, sees
// only the daemon's own connection, which it never cuts.
func (rt *Router) RedecideInto(addr netip.Addr) int {
	n := 0
	for _, t := range rt.tunnels.into(addr) {
		if rt.redecideTunnel(t) {
			n++
		}
	}
	return n
}

// redecideTunnel makes t's decision again and cuts t if it no longer
// stands; it reports whether it cut.
func (rt *Router) redecideTunnel(t *tunnel) bool {
	handler, d := t.redecide()
	var reason, detail string
	switch {
	case d.Result == policy.Deny:
		reason, detail = d.Reason, d.Detail
	case handler != t.handler:
		reason, detail = CutRerouted, "now served by "+handler+", not "+t.handler
	default:
		return false
	}
	return rt.cutTunnel(t, reason, detail)
}

// cutTunnels cuts all of a sandbox's open tunnels.
func (rt *Router) cutTunnels(sandbox, reason, detail string) int {
	n := 0
	for _, t := range rt.tunnels.of(sandbox) {
		if rt.cutTunnel(t, reason, detail) {
			n++
		}
	}
	return n
}

// cutTunnel cuts t, counts and logs the cut; false when t had already
// ended (or been cut).
func (rt *Router) cutTunnel(t *tunnel, reason, detail string) bool {
	if !rt.tunnels.remove(t) {
		return false
	}
	// Counted and logged before the cut: whoever sees the connection end
	// sees the cut counted.
	rt.cfg.Metrics.tunnelEnded()
	rt.cfg.Metrics.tunnelCut(reason)
	rt.cfg.Logger.Info("tunnel cut", "request_id", t.requestID, "sandbox", t.sandbox, "host", t.host,
		"dest", t.dest.String(), "handler", t.handler, "reason", reason, "detail", detail,
		"open_s", time.Since(t.opened).Seconds())
	t.cut()
	return true
}

// upgrading reports whether r asks to switch protocols, as
// httputil.ReverseProxy tells it.
func upgrading(r *http.Request) bool {
	return r.Header["Upgrade"] != nil && httpguts.HeaderValuesContainsToken(r.Header["Connection"], "Upgrade")
}

// upgradeTunnel registers an allowed upgrade request as a tunnel, from its
// decision on: until the handler returns, the request may become one at any
// moment. It returns the request for the handler, whose context a cut
// cancels (the proxies then close the upstream side), the tunnel (which
// the idle timeout cuts), and the function to call when the handler
// returns. A cut also closes the sandbox's side
// (either would end the proxies' copying; the close also holds for a
// handler that does not watch its context). caller is what the request was
// decided for.
func (rt *Router) upgradeTunnel(r *http.Request, env Env, route Route, caller policy.Caller) (*http.Request, *tunnel, func()) {
	ctx, cancel := context.WithCancel(r.Context())
	t := &tunnel{
		sandbox: env.Sandbox, host: env.Host, dest: env.Dest, handler: route.Name,
		requestID: env.RequestID, opened: time.Now(),
		redecide: func() (string, policy.Decision) {
			caller, known := rt.cfg.Identify(env.Source.Addr())
			if known && caller.Sandbox != env.Sandbox {
				return "", policy.Decision{Result: policy.Deny, Reason: CutSandboxDeleted, Detail: "the address is another sandbox's now"}
			}
			e := env
			route, d := rt.decide(&e, caller, known, true)
			return route.Name, d
		},
		cut: func() {
			cancel()
			env.Conn.Close()
		},
	}
	ended := rt.openTunnel(t)
	// A policy change between the decision and the registration found no
	// tunnel to re-decide: the policy (and worker) it decided on must
	// still be the sandbox's, or the decision is made again now.
	if now, _ := rt.cfg.Identify(env.Source.Addr()); now.Policy != caller.Policy || now.Worker != caller.Worker {
		rt.redecideTunnel(t)
	}
	return r.WithContext(ctx), t, func() {
		ended()
		cancel()
	}
}

// tunnelMetrics are the router's tunnel metrics.
type tunnelMetrics struct {
	open prometheus.Gauge
	cut  *prometheus.CounterVec
}

func newTunnelMetrics(reg prometheus.Registerer) tunnelMetrics {
	tm := tunnelMetrics{
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "interceptd", Subsystem: "router", Name: "tunnels_open",
			Help: "Upgraded (or spliced) connections open now, from their allowed request on.",
		}),
		cut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "interceptd", Subsystem: "router", Name: "tunnels_cut_total",
			Help: "Open tunnels the router cut, by reason: the policy's deny reason after a policy change, rerouted, sandbox_deleted, or idle_timeout.",
		}, []string{"reason"}),
	}
	reg.MustRegister(tm.open, tm.cut)
	return tm
}

func (m *Metrics) tunnelOpened() {
	if m != nil {
		m.tunnels.open.Inc()
	}
}

func (m *Metrics) tunnelEnded() {
	if m != nil {
		m.tunnels.open.Dec()
	}
}

func (m *Metrics) tunnelCut(reason string) {
	if m != nil {
		m.tunnels.cut.WithLabelValues(reason).Inc()
	}
}
