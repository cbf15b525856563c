// Package router serves HTTP/1.1 on the transparent listener that TPROXY
// feeds. For each request it knows the sandbox (from the source address), the
// original destination (from the accepted socket) and the Host, and picks the
// handler: the handler configured for the Host; without a Host, the handler
// whose virtual address was dialled; otherwise the forwarder, which passes the
// request unchanged to the original destination.
package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"
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
	LabelUnknownSource = "_unknown_source"
)

// Config configures a Router.
type Config struct {
	// Hosts maps normalised hostnames to their routes.
	Hosts map[string]Route
	// Virtual maps each handler's virtual address to its hostname.
	Virtual map[netip.Addr]string
	// Identify maps a source address to a sandbox name.
	Identify func(netip.Addr) (string, bool)
	// Fallback serves hosts with no handler; usually a *Forward.
	Fallback Handler
	Metrics  *Metrics
	Logger   *slog.Logger
}

// Router dispatches intercepted requests.
type Router struct {
	cfg Config
	srv *http.Server
}

type connKey struct{}

type connInfo struct {
	src, dst netip.AddrPort
}

// New returns a Router for cfg.
func New(cfg Config) *Router {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	rt := &Router{cfg: cfg}
	rt.srv = &http.Server{
		Handler:           rt,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, connInfo{src: addrPort(c.RemoteAddr()), dst: addrPort(c.LocalAddr())})
		},
		ConnState: func(c net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				cfg.Metrics.connOpened()
			case http.StateClosed, http.StateHijacked:
				cfg.Metrics.connClosed()
			}
		},
	}
	return rt
}

// Serve serves intercepted connections from ln until Shutdown.
func (rt *Router) Serve(ln net.Listener) error {
	if err := rt.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving intercepted http: %w", err)
	}
	return nil
}

// Shutdown stops accepting, lets in-flight requests finish until ctx ends,
// and closes idle connections.
func (rt *Router) Shutdown(ctx context.Context) error { return rt.srv.Shutdown(ctx) }

// ServeHTTP dispatches one request and writes its decision record.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ci, _ := r.Context().Value(connKey{}).(connInfo)
	env := Env{Source: ci.src, Dest: ci.dst, Host: NormalizeHost(r.Host)}
	rw := &recorder{ResponseWriter: w}

	route, err := rt.route(&env)
	env.Handler = route.Name
	if err == nil {
		err = route.Handler.ServeHTTP(rw, r, env)
	}
	if err != nil {
		var he *Error
		if !errors.As(err, &he) || he.Status >= 500 {
			rt.cfg.Logger.Warn("handler error", "sandbox", env.Sandbox, "handler", env.Handler, "error", err)
		}
		if !rw.wrote {
			WriteError(rw, err)
		}
	}
	if !rw.wrote {
		rw.WriteHeader(http.StatusOK)
	}
	d := time.Since(start)
	rt.cfg.Metrics.request(env.Handler, rw.status, rw.bytes, d)
	rt.cfg.Logger.Info("request",
		"sandbox", env.Sandbox, "host", env.Host, "dest", env.Dest.String(),
		"method", r.Method, "handler", env.Handler, "status", rw.status,
		"bytes", rw.bytes, "duration_ms", float64(d.Microseconds())/1000)
}

// route picks the handler for a request and fills env.Sandbox.
func (rt *Router) route(env *Env) (Route, error) {
	sb, ok := rt.cfg.Identify(env.Source.Addr())
	if !ok {
		return Route{Name: LabelUnknownSource}, Errorf(http.StatusForbidden, "source is not a sandbox")
	}
	env.Sandbox = sb
	if r, ok := rt.cfg.Hosts[env.Host]; ok {
		return r, nil
	}
	if h, ok := rt.cfg.Virtual[env.Dest.Addr()]; ok {
		// The sandbox dialled a handler's virtual address: that handler
		// serves it whatever the Host says (an IP literal, or none).
		return rt.cfg.Hosts[h], nil
	}
	return Route{Name: LabelForward, Handler: rt.cfg.Fallback}, nil
}

// NormalizeHost lowercases a Host header value and strips its port and a
// trailing dot. IPv6 literals keep their brackets off.
func NormalizeHost(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	h = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSuffix(h, "]"), "["), ".")
	return strings.ToLower(h)
}

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// recorder captures the status and body size a handler writes.
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

// Flush lets streaming handlers (and the forwarder) flush through.
func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
