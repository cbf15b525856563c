package router

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/interceptd/interceptd/policy"
)

// Forward sends a request for a host without a handler to the address the
// sandbox connected to, keeping the sandbox's headers (hop-by-hop headers
// excepted, as any HTTP/1.1 proxy must). The router has already checked the
// destination: see Protected and the router's consistency check.
type Forward struct {
	// Destinations are never forwarded to unless an IP/CIDR allowed_hosts
	// entry names them (see Protected).
	Destinations policy.Destinations
	// DialTimeout bounds connecting upstream. Default 10s.
	DialTimeout time.Duration
	Metrics     *Metrics
	Logger      *slog.Logger

	once   sync.Once
	pool   *upstreamPool
	proxy  *httputil.ReverseProxy // for what the lean client does not carry
	locals localAddrs
}

var _ Handler = (*Forward)(nil)

type envKey struct{}

func (f *Forward) init() {
	if f.DialTimeout == 0 {
		f.DialTimeout = 10 * time.Second
	}
	if f.Logger == nil {
		f.Logger = slog.Default()
	}
	d := &net.Dialer{Timeout: f.DialTimeout, KeepAlive: 30 * time.Second}
	f.pool = &upstreamPool{dial: d.DialContext, maxPerDest: 64, maxIdle: 1024, idleTimeout: 90 * time.Second}
	tr := &http.Transport{
		DialContext:           d.DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		// The sandbox's Accept-Encoding goes through as it is; never let
		// the transport add or undo compression.
		DisableCompression: true,
		// A transparent proxy speaks to the address the client chose, not
		// to a proxy from the daemon's environment.
		Proxy: nil,
	}
	f.proxy = &httputil.ReverseProxy{
		Transport:  tr,
		BufferPool: copyBuffers,
		Rewrite: func(pr *httputil.ProxyRequest) {
			env := pr.In.Context().Value(envKey{}).(Env)
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = env.Dest.String()
			pr.Out.Host = pr.In.Host
			// ReverseProxy strips these before Rewrite; they are the
			// sandbox's own headers, which a transparent hop keeps.
			for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
				if v, ok := pr.In.Header[h]; ok {
					pr.Out.Header[h] = v
				}
			}
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			kind := dialErrorKind(err)
			f.Metrics.forwardError(kind)
			f.Logger.Debug("forwarding failed", "error", err)
			reportFailure(w, r, &Error{Status: http.StatusBadGateway, Reason: "upstream " + kind, Err: err, logged: true})
		},
		ErrorLog: slog.NewLogLogger(slog.Default().Handler(), slog.LevelDebug),
	}
}

// ServeHTTP implements Handler.
func (f *Forward) ServeHTTP(w http.ResponseWriter, r *http.Request, env Env) error {
	f.once.Do(f.init)
	if leanable(r) {
		return f.forwardLean(w, r, env)
	}
	return serveReverse(f.proxy, w, r.WithContext(contextWithEnv(r, env)))
}

// errSlot carries a ReverseProxy's failure from its ErrorHandler back to
// the handler serving the request, which returns it for the router to write.
type errSlot struct{ err error }

type errSlotKey struct{}

// serveReverse runs rp for r and returns what failed: the error its
// ErrorHandler reported (before any response), or one wrapping ErrAborted
// when it cut a response short (ReverseProxy panics with
// http.ErrAbortHandler then; the router cuts the connection instead).
func serveReverse(rp *httputil.ReverseProxy, w http.ResponseWriter, r *http.Request) (err error) {
	slot := &errSlot{}
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				panic(p)
			}
			err = fmt.Errorf("%w: copying the upstream's response failed", ErrAborted)
		}
	}()
	rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), errSlotKey{}, slot)))
	return slot.err
}

// reportFailure is how a ReverseProxy's ErrorHandler hands err to
// serveReverse. Without one (a ReverseProxy served directly, in tests) it
// writes err itself.
func reportFailure(w http.ResponseWriter, r *http.Request, err *Error) {
	if slot, ok := r.Context().Value(errSlotKey{}).(*errSlot); ok {
		slot.err = err
		return
	}
	WriteError(w, err)
}

func contextWithEnv(r *http.Request, env Env) context.Context {
	return context.WithValue(r.Context(), envKey{}, env)
}

// Protected says why a destination must not be forwarded to, or "": the
// protected destinations (policy.Destinations: loopback, link-local
// including metadata services, multicast, broadcast, 0.0.0.0/8, the pool,
// the virtual range) and the daemon host's own addresses, which only this
// layer sees, so that a sandbox cannot use the daemon to reach the host's
// services or other sandboxes.
func (f *Forward) Protected(a netip.Addr) string {
	a = a.Unmap()
	if why := f.Destinations.Protected(a); why != "" {
		return why
	}
	if f.locals.has(a) {
		return "an address of the daemon host"
	}
	return ""
}

// localAddrs caches the daemon host's own addresses for a second: cheap on
// the hot path, and a new host address is protected within a second.
type localAddrs struct {
	mu    sync.Mutex
	at    time.Time
	addrs map[netip.Addr]bool
}

func (l *localAddrs) has(a netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if time.Since(l.at) > time.Second || l.addrs == nil {
		m := map[netip.Addr]bool{}
		if as, err := net.InterfaceAddrs(); err == nil {
			for _, x := range as {
				if n, ok := x.(*net.IPNet); ok {
					if ip, ok := netip.AddrFromSlice(n.IP); ok {
						m[ip.Unmap()] = true
					}
				}
			}
		}
		l.addrs, l.at = m, time.Now()
	}
	return l.addrs[a]
}

// dialErrorKind maps a forwarding error to a closed set of reasons.
func dialErrorKind(err error) string {
	var ne net.Error
	var cv *tls.CertificateVerificationError
	switch {
	case errors.As(err, &cv):
		// An https upstream (a proxy's) whose certificate does not verify:
		// nothing was sent to it.
		return "certificate"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "error"
}

// copyBuffers recycles the 32 KiB buffers ReverseProxy copies bodies with;
// without a pool every forwarded request allocates one, larger than all
// its other allocations together, for the GC to collect.
var copyBuffers = &bufferPool{}

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }
