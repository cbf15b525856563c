// Package router serves HTTP/1.1 on the transparent listener that TPROXY
// feeds. For each request it knows the sandbox (from the source address), the
// original destination (from the accepted socket) and the Host, asks the
// sandbox's policy, and acts on the decision: the handler configured for the
// Host (or, without one, for the virtual address dialled), the catch-all
// handler, the forwarder — which passes the request unchanged to the
// original destination once that destination is consistent with the Host and
// not protected — or a deny response that names its reason.
package router

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/internal/ratelimit"
)

// Route binds a handler to the label its metrics and logs carry.
type Route struct {
	// Name is the handler's label: its configured host.
	Name    string
	Handler Handler
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
	// Virtual maps each handler's virtual address to its hostname.
	Virtual map[netip.Addr]string
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
	Decisions            *policy.Metrics
	Metrics              *Metrics
	Logger               *slog.Logger
}

// Router dispatches intercepted requests.
type Router struct {
	cfg   Config
	srv   *http.Server // serves what the lean loop hands off (serve.go)
	hand  *handoffListener
	limit *ratelimit.PerKey
	now   func() time.Time // the rate limit's clock (time.Now; tests set their own)

	closing atomic.Bool
	mu      sync.Mutex
	ln      net.Listener
	conns   map[*leanConn]struct{}
	// sweeping: sweepWatches runs (while requests are being served).
	sweeping atomic.Bool
	tunnels  tunnels // open upgraded connections, re-decided on a policy change (tunnel.go)
}

type connKey struct{}

type connInfo struct {
	src, dst netip.AddrPort
	sniff    *sniffConn // nil when the listener was not wrapped
	lean     *leanConn  // nil under net/http
}

// New returns a Router for cfg.
func New(cfg Config) *Router {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	rt := &Router{cfg: cfg, limit: ratelimit.New(cfg.MaxRequestsPerSecond), now: time.Now, hand: newHandoffListener(cfg.Metrics)}
	rt.srv = &http.Server{
		Handler: rt,
		// A sandbox that trickles its headers gets 10 s; its connections are
		// capped per sandbox (LimitPerSource) so it cannot starve others.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			sc, _ := c.(*sniffConn)
			return context.WithValue(ctx, connKey{}, connInfo{src: addrPort(c.RemoteAddr()), dst: addrPort(c.LocalAddr()), sniff: sc})
		},
		ConnState: func(c net.Conn, s http.ConnState) {
			// Counted as opened when the lean loop accepted it.
			if s == http.StateClosed || s == http.StateHijacked {
				cfg.Metrics.connClosed()
			}
		},
	}
	return rt
}

// requestIDHeader carries the request id on every response.
const requestIDHeader = "X-Interceptd-Request-Id"

// Forget drops what the router keeps about a deleted sandbox and cuts its
// open tunnels.
func (rt *Router) Forget(sandbox string) {
	rt.limit.Forget(sandbox)
	rt.cutTunnels(sandbox, CutSandboxDeleted, "the sandbox was deleted")
}

// ServeHTTP decides one request, acts on the decision and writes its
// decision record.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ci, _ := r.Context().Value(connKey{}).(connInfo)
	env := Env{Source: ci.src, Dest: ci.dst, Host: policy.NormalizeHost(r.Host), conn: ci.lean}
	if ci.lean != nil {
		env.RequestID = ci.lean.nextRequestID()
	} else {
		env.RequestID = newRequestID()
	}
	// What every request needs, in one allocation rather than one each.
	st := &requestState{rw: recorder{ResponseWriter: w}, body: countingBody{ReadCloser: r.Body}, id: [1]string{env.RequestID}}
	rw, body := &st.rw, &st.body
	if lw, ok := w.(*leanResponse); ok {
		lw.setRequestID(st.id[:]) // no header map made for it
	} else {
		w.Header()[requestIDHeader] = st.id[:]
	}
	rt.cfg.Metrics.flight(1)
	r.Body = body
	var d policy.Decision
	defer func() {
		// Also when a handler aborts the response (a forward whose
		// upstream cut it short): the request is still counted and logged.
		p := recover()
		rt.cfg.Metrics.flight(-1)
		dur := time.Since(start)
		// A lean connection keeps the series it counted into last.
		var rs *requestSeries
		var ds *policy.Series
		if env.conn != nil {
			rs, ds = &env.conn.series, &env.conn.decisions
		}
		rt.cfg.Metrics.request(rs, env.Handler, env.Sandbox, rw.status, body.n.Load(), rw.bytes, dur)
		if d.Result != "" { // refused before any decision: no decision to count
			rt.cfg.Decisions.ObserveInto(ds, "http", env.Sandbox, d)
		}
		// Guarded: building the record's attributes costs allocations even
		// when the level drops it.
		if rt.cfg.Logger.Enabled(r.Context(), slog.LevelInfo) {
			attrs := []any{
				"request_id", env.RequestID, "sandbox", env.Sandbox, "host", env.Host, "dest", env.Dest.String(),
				"method", r.Method, "handler", env.Handler, "decision", string(d.Result), "reason", d.Reason,
				"status", rw.status, "bytes_in", body.n.Load(), "bytes_out", rw.bytes, "duration_ms", float64(dur.Microseconds()) / 1000,
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
	if ci.sniff != nil && ci.sniff.conflicting() {
		env.Handler, env.Sandbox = LabelBadRequest, caller.Sandbox
		rw.Header().Set("Connection", "close")
		err = &Error{Status: http.StatusBadRequest, Reason: "both Content-Length and Transfer-Encoding: refused as request smuggling"}
	} else if known && !rt.limit.Allow(caller.Sandbox, rt.now()) {
		// Before deciding, which may cost a DNS lookup.
		env.Handler, env.Sandbox = LabelLimited, caller.Sandbox
		rw.Header().Set("Retry-After", "1")
		err = &Error{Status: http.StatusTooManyRequests, Reason: "rate_limited"}
	} else {
		var route Route
		var detail string
		route, d, detail = rt.decide(r, &env, caller, known)
		env.Handler = route.Name
		if d.Result == policy.Deny {
			rt.deny(rw, r, env, d, detail)
		} else {
			hr := r
			if upgrading(r) {
				// Decided once for the life of the tunnel it may become:
				// registered to be decided again on a policy change.
				var ended func()
				hr, ended = rt.upgradeTunnel(r, env, route, caller, ci)
				defer ended()
			}
			err = route.Handler.ServeHTTP(rw, hr, env)
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
		if !errors.As(err, &he) || (he.Status >= 500 && !he.logged) {
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
func (rt *Router) decide(r *http.Request, env *Env, caller policy.Caller, known bool) (Route, policy.Decision, string) {
	if !known {
		caller = policy.Caller{} // no policy: not a sandbox
	}
	route, hasHandler := rt.cfg.Hosts[env.Host]
	vname := rt.cfg.Virtual[env.Dest.Addr()]
	if !hasHandler && vname != "" {
		// The sandbox dialled a handler's virtual address: that handler
		// serves it whatever the Host says (an IP literal, or none).
		route = rt.cfg.Hosts[vname]
	}
	d := rt.cfg.Verdicts.HTTP(caller, policy.HTTPRequest{
		Host: env.Host, Dest: env.Dest, Virtual: vname,
		HasHandler: hasHandler, HasCatchAll: rt.cfg.CatchAll != nil,
	})
	if d.Reason == policy.ReasonUnknown {
		return Route{Name: LabelUnknownSource}, d, d.Detail
	}
	env.Sandbox = caller.Sandbox
	switch d.Result {
	case policy.Handler:
		return route, d, ""
	case policy.CatchAll:
		return *rt.cfg.CatchAll, d, ""
	case policy.Forward:
		return Route{Name: LabelForward, Handler: rt.cfg.Fallback}, d, ""
	}
	return Route{Name: LabelDeny}, d, d.Detail
}

// deny writes the deny response for a policy decision.
func (rt *Router) deny(w http.ResponseWriter, r *http.Request, env Env, d policy.Decision, detail string) {
	status := rt.cfg.DenyStatus
	if d.Reason == policy.ReasonUnknown {
		status = http.StatusForbidden
	}
	writeDeny(w, r, status, rt.cfg.DenyBody, env.RequestID, d.Reason, detail)
}

// writeDeny writes a deny response: status (default 403), a JSON body for
// clients that accept JSON, else text (body, when set, replaces the text);
// both name the reason and the request id.
func writeDeny(w http.ResponseWriter, r *http.Request, status int, body, requestID, reason, detail string) {
	if status == 0 {
		status = http.StatusForbidden
	}
	h := w.Header()
	h.Set("X-Interceptd-Error", reason)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	if acceptsJSON(r) {
		writeJSON(w, r, status, map[string]string{"error": "denied", "reason": reason, "detail": detail, "request_id": requestID})
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

func newRequestID() string { return requestIDOf(requestIDSeq.Add(1)) }

// idBlock is how many request ids a lean connection draws at a time: the
// shared counter is then touched once per block, not once per request (an
// atomic add on a line every CPU writes).
const idBlock = 1024

// nextRequestID returns the next id of lc's block, drawing a new block
// when it is used up.
func (lc *leanConn) nextRequestID() string {
	if lc.idNext == lc.idEnd {
		lc.idEnd = requestIDSeq.Add(idBlock) + 1
		lc.idNext = lc.idEnd - idBlock
	}
	n := lc.idNext
	lc.idNext++
	return requestIDOf(n)
}

func requestIDOf(seq uint64) string {
	z := requestIDKey + seq*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], z)
	return hex.EncodeToString(b[:])
}

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
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

func (r *recorder) rawHeads() bool {
	rw, ok := r.ResponseWriter.(rawHeadWriter)
	return ok && rw.rawHeads()
}

func (r *recorder) writeRawHead(code int, h *rawHead) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.(rawHeadWriter).writeRawHead(code, h)
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
