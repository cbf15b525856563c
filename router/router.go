// Package router is the dispatch of intercepted HTTP: for each request a
// transport (router/httpserve) reads, it knows the sandbox (from the source
// address), the original destination (from the accepted socket) and the
// Host, asks the sandbox's policy, and acts on the decision: the handler
// configured for the Host (or, without one, for the virtual address
// dialled), the catch-all handler, the fallback — which forwards the request
// unchanged to the original destination once that destination is
// consistent with the Host and not protected — or a deny response that
// names its reason. It counts and logs every request.
//
// It also holds the contracts both sides of it implement: Handler (with
// Env and Error) for what runs behind it, Conn for the transport in front.
// It imports policy, metrics and router/wire; never a transport, a handler
// or the forwarder (router/handlers and router/forward import it, and the
// daemon wires them together).
package router

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/interceptd/interceptd/internal/ratelimit"
	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/router/wire"
)

// Route binds a handler to the label its metrics and logs carry.
type Route struct {
	// Name is the handler's label: its configured host.
	Name    string
	Handler Handler
	// Function, for a worker's route, names the function that serves it
	// (an outboundByHost key, or "outbound"): the decision record says
	// it; it is no metric label.
	Function string
	// HTTPS: the handler answers https:// too. The TLS front terminates
	// TLS for its name with interceptd's CA and serves the requests inside
	// through the router, as port 80's (DecideTLS).
	HTTPS bool
}

// Labels for requests that no configured handler serves.
const (
	LabelForward       = "_forward"
	LabelDeny          = "_deny"
	LabelUnknownSource = "_unknown_source"
	LabelLimited       = "_limited"
	LabelBadRequest    = "_bad_request"
)

// Config configures a Router.
type Config struct {
	// Hosts maps normalised hostnames to their routes.
	Hosts map[string]Route
	// Virtual maps each handler's virtual address to its hostname, and
	// each worker key's (see Programs) to the key's host part
	// (HostPatterns.Names). An address is a handler's only for a caller
	// that has that handler: a worker's for the sandboxes using the worker.
	Virtual map[netip.Addr]string
	// Programs returns the worker a sandbox names (policy.Caller.Worker).
	// nil, or a nil Program for a name it does not know: as if the sandbox
	// had no worker. A worker's per-host functions are asked before the
	// built-in handlers, and its outbound function is that sandbox's
	// catch-all, in place of CatchAll.
	Programs func(name string) Program
	// Identify maps a source address to a sandbox and its policy.
	Identify func(netip.Addr) (policy.Caller, bool)
	// CatchAll, when set, serves what no per-host handler does and the
	// policy lets by.
	CatchAll *Route
	// Fallback forwards to the original destination; usually a *Forward.
	Fallback Handler
	// Verdicts decides every request (policy.Verdicts.HTTP): the router
	// only acts on its decision. The zero value closes only the private
	// networks and checks a Host against nothing.
	Verdicts policy.Verdicts
	// DenyStatus (default 403) and DenyBody (default: generated) shape
	// deny responses.
	DenyStatus int
	DenyBody   string
	// MaxRequestsPerSecond is each sandbox's request rate (bursts of twice
	// that); beyond it, 429 Too Many Requests. 0 means no limit.
	MaxRequestsPerSecond int
	// UpgradeIdleTimeout cuts a switched connection (after its 101) when
	// no byte has passed either way for this long. 0 means
	// DefaultUpgradeIdleTimeout; negative, no idle timeout.
	UpgradeIdleTimeout time.Duration
	Decisions          *policy.Metrics
	Metrics            *Metrics
	Logger             *slog.Logger
}

// Router dispatches intercepted requests. A transport (router/httpserve)
// reads them and calls ServeConn; the Router decides each, runs the
// handler the decision picks, and counts and logs it.
type Router struct {
	cfg     Config
	routes  atomic.Pointer[Routes] // cfg's, until SetRoutes replaces them
	limit   *ratelimit.PerKey
	now     func() time.Time // the rate limit's clock (time.Now; tests set their own)
	tunnels tunnels          // open upgraded connections, re-decided on a policy change (tunnel.go)
}

// New returns a Router for cfg.
func New(cfg Config) *Router {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.UpgradeIdleTimeout == 0 {
		cfg.UpgradeIdleTimeout = DefaultUpgradeIdleTimeout
	}
	rt := &Router{cfg: cfg, limit: ratelimit.New(cfg.MaxRequestsPerSecond), now: time.Now}
	rt.routes.Store(&Routes{Hosts: cfg.Hosts, Virtual: cfg.Virtual, CatchAll: cfg.CatchAll, DenyStatus: cfg.DenyStatus, DenyBody: cfg.DenyBody})
	return rt
}

// Routes are the parts of a Router's Config that a config reload replaces
// (SetRoutes): the handlers and the deny response.
type Routes struct {
	Hosts      map[string]Route
	Virtual    map[netip.Addr]string
	CatchAll   *Route
	DenyStatus int
	DenyBody   string
}

// Routes are the routes in force.
func (rt *Router) Routes() Routes { return *rt.routes.Load() }

// SetRoutes swaps in new routes and request rate (a config reload). A
// request already deciding or running finishes with the handler it got;
// the next one is decided with these. Open tunnels are not decided again
// here: the daemon asks for that (Redecide) once the policies are in.
func (rt *Router) SetRoutes(r Routes, maxRequestsPerSecond int) {
	rt.routes.Store(&r)
	rt.limit.SetRate(maxRequestsPerSecond)
}

// Forget drops what the router keeps about a deleted sandbox and cuts its
// open tunnels.
func (rt *Router) Forget(sandbox string) {
	rt.limit.Forget(sandbox)
	rt.cutTunnels(sandbox, CutSandboxDeleted, "the sandbox was deleted")
}

// requestIDSetter is a ResponseWriter that takes the request id's header
// value without a header map being made for it (the lean loop's).
type requestIDSetter interface{ SetRequestID(id []string) }

// ServeConn decides one request that came on c, acts on the decision and
// writes its decision record.
func (rt *Router) ServeConn(w http.ResponseWriter, r *http.Request, c Conn) {
	start := time.Now()
	src, dst := c.Addrs()
	cache := c.Cache()
	env := Env{Source: src, Dest: dst, Host: policy.NormalizeHost(r.Host), Conn: c, RequestID: cache.nextRequestID()}
	// What every request needs, in one allocation rather than one each.
	st := &requestState{rw: recorder{ResponseWriter: w}, body: countingBody{ReadCloser: r.Body}, id: [1]string{env.RequestID}}
	rw, body := &st.rw, &st.body
	if lw, ok := w.(requestIDSetter); ok {
		lw.SetRequestID(st.id[:]) // no header map made for it
	} else {
		w.Header()[wire.RequestIDHeader] = st.id[:]
	}
	rt.cfg.Metrics.flight(1)
	r.Body = body
	var d policy.Decision
	var function string          // the worker function that served, for the record
	var upKind, upOutcome string // an Upgrade request's kind and how it ended
	defer func() {
		// Also when a handler aborts the response (a forward whose
		// upstream cut it short): the request is still counted and logged.
		p := recover()
		rt.cfg.Metrics.flight(-1)
		dur := time.Since(start)
		if up := rw.up; up != nil {
			up.ended()
			upOutcome = up.outcome(rw.status)
			if up.switched.Load() {
				// The request's time is its handshake's: the stream's life
				// is no request latency.
				dur = up.switchAt.Sub(start)
			}
		}
		if upKind != "" {
			rt.cfg.Metrics.upgradeRequest(upKind, upOutcome)
		}
		// The connection keeps the series it counted into last.
		rt.cfg.Metrics.request(&cache.requests, env.Handler, env.Sandbox, rw.status, body.n.Load(), rw.bytes, dur)
		if d.Result != "" { // refused before any decision: no decision to count
			rt.cfg.Decisions.ObserveInto(&cache.decisions, "http", env.Sandbox, d)
		}
		// Guarded: building the record's attributes costs allocations even
		// when the level drops it.
		if rt.cfg.Logger.Enabled(r.Context(), slog.LevelInfo) {
			attrs := []any{
				"request_id", env.RequestID, "sandbox", env.Sandbox, "host", env.Host, "dest", env.Dest.String(),
				"method", r.Method, "handler", env.Handler, "decision", string(d.Result), "reason", d.Reason,
				"status", rw.status, "bytes_in", body.n.Load(), "bytes_out", rw.bytes, "duration_ms", float64(dur.Microseconds()) / 1000,
			}
			if function != "" {
				attrs = append(attrs, "function", function)
			}
			if upKind != "" {
				attrs = append(attrs, "upgrade", upKind, "upgrade_outcome", upOutcome)
				if up := rw.up; up != nil && up.switched.Load() {
					attrs = append(attrs, "upgraded_bytes_in", up.in.Load(), "upgraded_bytes_out", up.out.Load(),
						"upgraded_s", time.Since(up.switchAt).Seconds())
				}
			}
			if p != nil {
				attrs = append(attrs, "aborted", true)
			}
			rt.cfg.Logger.Info("request", attrs...)
		}
		if p != nil {
			panic(p)
		}
	}()

	var err error
	caller, known := rt.cfg.Identify(env.Source.Addr())
	// The sniffer's entry is taken for every request, first: one per
	// request keeps its queue in step.
	if c.Ambiguous() {
		env.Handler, env.Sandbox = LabelBadRequest, caller.Sandbox
		rw.Header().Set("Connection", "close")
		err = &Error{Status: http.StatusBadRequest, Reason: "both Content-Length and Transfer-Encoding: refused as request smuggling"}
	} else if known && !rt.limit.AllowAt(caller.Sandbox, policy.Or(caller.Limits.RPS, rt.limit.Rate()), rt.now()) {
		// Before deciding, which may cost a DNS lookup.
		env.Handler, env.Sandbox = LabelLimited, caller.Sandbox
		rw.Header().Set("Retry-After", "1")
		err = &Error{Status: http.StatusTooManyRequests, Reason: "rate_limited"}
	} else {
		var route Route
		route, d = rt.decide(&env, caller, known, false)
		env.Handler, function = route.Name, route.Function
		isUp := upgrading(r)
		if isUp {
			upKind, upOutcome = upgradeKind(r), UpgradeNotSwitched
		}
		switch {
		case d.Result == policy.Deny:
			upOutcome = UpgradeDenied
			rt.deny(rw, r, env, d)
		case isUp && !carriesUpgrades(route.Handler):
			upOutcome = UpgradeUnsupported
			upgradeUnsupported(rw, r, route)
		case isUp:
			// Decided once for the life of the tunnel it may become:
			// registered to be decided again on a policy change.
			hr, t, ended := rt.upgradeTunnel(r, env, route, caller)
			defer ended()
			idle := rt.cfg.UpgradeIdleTimeout
			if idle < 0 {
				idle = 0
			}
			rw.up = &upgrade{rt: rt, t: t, idle: idle}
			err = route.Handler.ServeHTTP(rw, hr, env)
		default:
			err = route.Handler.ServeHTTP(rw, r, env)
		}
	}
	if err != nil {
		if errors.Is(err, ErrAborted) {
			// The status line is out: the only honest signal left is to
			// cut the connection. The deferred record above still counts
			// and logs the request, as aborted.
			panic(http.ErrAbortHandler)
		}
		var he *Error
		if !errors.As(err, &he) || (he.Status >= 500 && !he.Logged) {
			rt.cfg.Logger.Warn("handler error", "request_id", env.RequestID, "sandbox", env.Sandbox, "handler", env.Handler, "error", err)
		}
		if !rw.wrote {
			WriteError(rw, err)
		}
	}
	if !rw.wrote {
		rw.WriteHeader(http.StatusOK)
	}
}

// decide asks the policy's verdict (policy.Verdicts.HTTP, which holds the
// whole order) and maps it to a route: a handler's, the catch-all's, the
// forwarder's, or a deny's with the decision's detail.
//
// The caller's worker (Config.Programs) comes first: a function of its
// outboundByHost that matches the Host (or, without one, the virtual
// address dialled) is a handler for the policy, so denied_hosts stops it
// and an allowlist does not; else a built-in handler as before; else the
// worker's outbound is the caller's catch-all, which an allowlist does
// block as it blocks any catch-all.
func (rt *Router) decide(env *Env, caller policy.Caller, known, again bool) (Route, policy.Decision) {
	if !known {
		caller = policy.Caller{} // no policy: not a sandbox
	}
	tb := rt.routes.Load()
	prog, route, hasHandler, vname := rt.handlerFor(tb, caller, env.Host, env.Dest)
	catchAll := tb.CatchAll
	if prog != nil {
		if out, ok := prog.Outbound(); ok {
			catchAll = &out
		}
	}
	d := rt.verdicts(again).HTTP(caller, policy.HTTPRequest{
		Host: env.Host, Dest: env.Dest, Virtual: vname,
		HasHandler: hasHandler, HasCatchAll: catchAll != nil,
	})
	if d.Reason == policy.ReasonUnknown {
		return Route{Name: LabelUnknownSource}, d
	}
	env.Sandbox = caller.Sandbox
	switch d.Result {
	case policy.Handler:
		return route, d
	case policy.CatchAll:
		return *catchAll, d
	case policy.Forward:
		return Route{Name: LabelForward, Handler: rt.cfg.Fallback}, d
	}
	return Route{Name: LabelDeny}, d
}

// handlerFor finds what would serve host at dest for caller: the caller's
// worker (prog, nil without one), the per-host route (a function of that
// worker, else a built-in handler) and whether there is one, and the name
// of the handler whose virtual address dest is ("" when it is none of this
// caller's handlers).
func (rt *Router) handlerFor(tb *Routes, caller policy.Caller, host string, dest netip.AddrPort) (prog Program, route Route, hasHandler bool, vname string) {
	if caller.Worker != "" && rt.cfg.Programs != nil {
		prog = rt.cfg.Programs(caller.Worker)
	}
	if prog != nil {
		route, hasHandler = prog.Match(host, dest)
	}
	if !hasHandler {
		route, hasHandler = tb.Hosts[host]
	}
	vname = tb.Virtual[dest.Addr()]
	if vname != "" {
		// The sandbox dialled a handler's virtual address: that handler
		// serves it whatever the Host says (an IP literal, or none). The
		// address names a handler only if this caller has one for it: a
		// worker's key is no handler for a sandbox without that worker.
		vroute, ok := Route{}, false
		if prog != nil {
			vroute, ok = prog.Match(vname, dest)
		}
		if !ok {
			vroute, ok = tb.Hosts[vname]
		}
		switch {
		case !ok:
			vname = ""
		case !hasHandler:
			route = vroute
		}
	}
	return prog, route, hasHandler, vname
}

// TLSVerdict is the decision on one TLS connection, with what its record
// names.
type TLSVerdict struct {
	policy.Decision
	// Sandbox is the caller's name, "" when the source is no sandbox's.
	Sandbox string
	// RequestID names the connection in the decision record, as a request
	// id names a request.
	RequestID string
	// Name, for a Handler decision, is the name TLS is terminated for:
	// the SNI, or without one the handler whose virtual address was
	// dialled. Every request inside must name it as its Host.
	Name string
	// Track, set for a sandbox's connection that passes through, registers
	// it as one of the sandbox's tunnels once spliced: cut closes both of
	// its sides, and the front calls ended when the splice is over. A
	// policy change (the sandbox's own, or that of a sandbox it splices
	// to) then decides it again, as for an upgrade, and cuts it if now
	// denied: a spliced connection is otherwise decided once, at its
	// ClientHello.
	Track func(cut func()) (ended func())
}

// DecideTLS decides a TLS connection from src to dst by its ClientHello's
// server name (policy.Verdicts.TLS, with the handlers the caller has) and
// counts the decision (protocol tls). The TLS front acts on it and writes
// the record.
func (rt *Router) DecideTLS(src, dst netip.AddrPort, sni string) TLSVerdict {
	caller, known := rt.cfg.Identify(src.Addr())
	if !known {
		caller = policy.Caller{}
	}
	sni = policy.NormalizeHost(sni)
	d, name := rt.decideTLS(caller, dst, sni, false)
	rt.cfg.Decisions.Observe("tls", caller.Sandbox, d)
	v := TLSVerdict{Decision: d, Sandbox: caller.Sandbox, RequestID: requestIDOf(requestIDSeq.Add(1))}
	switch {
	case d.Result == policy.Handler:
		v.Name = name
	case d.Allowed() && known:
		id := v.RequestID
		v.Track = func(cut func()) func() { return rt.passTunnel(src, dst, sni, caller, id, cut) }
	}
	return v
}

// decideTLS is DecideTLS's decision (again: a tunnel's, made again on a
// policy change), and the name TLS would be terminated for if it gives a
// handler; it counts nothing.
func (rt *Router) decideTLS(caller policy.Caller, dst netip.AddrPort, sni string, again bool) (policy.Decision, string) {
	_, route, hasHandler, vname := rt.handlerFor(rt.routes.Load(), caller, sni, dst)
	name := sni
	if !hasHandler {
		name = vname
	}
	intercept := (hasHandler || vname != "") && route.HTTPS
	return rt.verdicts(again).TLS(caller, policy.TLSHello{SNI: sni, Dest: dst, Virtual: vname, HasHandler: hasHandler, Intercept: intercept}), name
}

// verdicts is what decides: the configured Verdicts, or, for a tunnel's
// decision made again on a policy change (again), the same without Charge.
// The change is the operator's, not a query of the sandbox's, and a
// connection open for longer than its name's DNS answer lives must not be
// cut for want of a budget the sandbox did not spend.
func (rt *Router) verdicts(again bool) *policy.Verdicts {
	if !again || rt.cfg.Verdicts.Charge == nil {
		return &rt.cfg.Verdicts
	}
	v := rt.cfg.Verdicts
	v.Charge = nil
	return &v
}

// passTunnel registers a spliced TLS connection as a tunnel of caller's
// (TLSVerdict.Track), and decides it again at once: a policy change
// between the ClientHello and the splice found no tunnel to decide.
func (rt *Router) passTunnel(src, dst netip.AddrPort, sni string, caller policy.Caller, requestID string, cut func()) (ended func()) {
	t := &tunnel{
		sandbox: caller.Sandbox, host: sni, dest: dst, handler: LabelForward,
		requestID: requestID, opened: time.Now(), cut: cut,
		redecide: func() (string, policy.Decision) {
			now, known := rt.cfg.Identify(src.Addr())
			if !known || now.Sandbox != caller.Sandbox {
				return "", policy.Decision{Result: policy.Deny, Reason: CutSandboxDeleted, Detail: "the address is no longer the sandbox's"}
			}
			d, name := rt.decideTLS(now, dst, sni, true)
			if d.Result == policy.Handler {
				return name, d
			}
			return LabelForward, d
		},
	}
	ended = rt.openTunnel(t)
	rt.redecideTunnel(t)
	return ended
}

// deny writes the deny response for a policy decision.
func (rt *Router) deny(w http.ResponseWriter, r *http.Request, env Env, d policy.Decision) {
	tb := rt.routes.Load()
	status := tb.DenyStatus
	if d.Reason == policy.ReasonUnknown {
		status = http.StatusForbidden
	}
	WriteDeny(w, r, status, tb.DenyBody, env.RequestID, d.Reason, d.Detail)
}

// WriteDeny writes a deny response: status (default 403), a JSON body for
// clients that accept JSON, else text (body, when set, replaces the text);
// both name the reason and the request id.
func WriteDeny(w http.ResponseWriter, r *http.Request, status int, body, requestID, reason, detail string) {
	if status == 0 {
		status = http.StatusForbidden
	}
	h := w.Header()
	h.Set("X-Interceptd-Error", reason)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	if acceptsJSON(r) {
		WriteJSON(w, r, status, map[string]string{"error": "denied", "reason": reason, "detail": detail, "request_id": requestID})
		return
	}
	if body == "" {
		body = fmt.Sprintf("interceptd: denied (%s): %s\nrequest id: %s\n", reason, detail, requestID)
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		io.WriteString(w, body)
	}
}

func acceptsJSON(r *http.Request) bool {
	for _, a := range r.Header.Values("Accept") {
		if strings.Contains(a, "application/json") || strings.Contains(a, "+json") {
			return true
		}
	}
	return false
}

// Request ids are unique per daemon run and unpredictable enough to
// correlate by, not secrets: a random key mixed with a counter (splitmix64,
// a bijection, so no two requests share one) costs no system call, where
// reading crypto/rand per request did.
var (
	requestIDKey = func() uint64 {
		var b [8]byte
		rand.Read(b[:])
		return binary.LittleEndian.Uint64(b[:])
	}()
	requestIDSeq atomic.Uint64
)

// idBlock is how many request ids a connection draws at a time: the
// shared counter is then touched once per block, not once per request (an
// atomic add on a line every CPU writes).
const idBlock = 1024

func requestIDOf(seq uint64) string {
	z := requestIDKey + seq*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], z)
	return hex.EncodeToString(b[:])
}

// recorder captures the status and body size a handler writes.
// requestState is what ServeHTTP keeps for one request.
type requestState struct {
	rw   recorder
	body countingBody
	id   [1]string // the request id header's value
}

type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	wrote  bool
	up     *upgrade // an allowed Upgrade request's, else nil (upgrade.go)
}

func (r *recorder) WriteHeader(code int) {
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// Informational responses (100 Continue, 103 Early Hints) are not
		// the final status.
		r.ResponseWriter.WriteHeader(code)
		return
	}
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if !r.wrote {
		r.WriteHeader(http.StatusOK)
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) RawHeads() bool {
	rw, ok := r.ResponseWriter.(wire.RawHeadWriter)
	return ok && rw.RawHeads()
}

func (r *recorder) WriteRawHead(code int, h *wire.RawHead) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.(wire.RawHeadWriter).WriteRawHead(code, h)
}

// Flush lets streaming handlers (and the forwarder) flush through.
func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// countingBody counts the request body bytes a handler reads. Atomic: a
// transport may still be reading it upstream when the request is counted.
type countingBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}
