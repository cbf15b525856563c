// Package forward is interceptd's forwarding client: it carries a request a
// sandbox made on to the address the sandbox dialled and relays the answer.
// Plain requests go over its own HTTP/1.1 client on pooled keep-alive
// connections (upstream.go, head.go), the rest (upgrades, Expect, request
// trailers) through httputil.ReverseProxy.
//
// It decides nothing: the router has decided that the destination may be
// reached before a handler asks the forwarder to go there. It imports
// router/wire, never the router or its handlers; it reports failures as
// errors (Failure, ErrAborted) and through its own Metrics.
package forward

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

	"github.com/interceptd/interceptd/router/wire"
)

// Forwarder passes a request on to the address the sandbox dialled,
// keeping the sandbox's headers (hop-by-hop headers excepted, as any
// HTTP/1.1 proxy must). Whoever calls it has decided that the destination
// may be reached: the forwarder only carries. Its zero value is ready; it is
// set up at the first request.
type Forwarder struct {
	// DialTimeout bounds connecting upstream. Default 10s.
	DialTimeout time.Duration
	// Metrics, when set, counts failures.
	Metrics *Metrics
	Logger  *slog.Logger

	once  sync.Once
	pool  *upstreamPool
	proxy *httputil.ReverseProxy // for what the lean client does not carry
}

// Target is where a request goes and for whom.
type Target struct {
	// Sandbox owns the upstream connection: a pooled connection is never
	// handed from one sandbox to another.
	Sandbox string
	// Dest is the original destination.
	Dest netip.AddrPort
	// Client, when set, tells when the sandbox goes away mid-request, so
	// that its upstream is not waited on; without it the request's
	// context does.
	Client Client
}

// Client is the sandbox's connection as far as the forwarder needs it;
// the router's per-connection scope (router.Conn) is one.
type Client interface {
	// WhenGone arranges for f to run if the client goes away before
	// StopWhenGone.
	WhenGone(f func())
	// StopWhenGone undoes WhenGone and reports whether f had not run.
	StopWhenGone() bool
}

// Failure is a forward that failed before anything went to the sandbox:
// the caller answers it (a 502 naming Kind).
type Failure struct {
	// Kind is one of a closed set, fit for a metric label: see ErrorKind.
	Kind string
	Err  error
}

func (f *Failure) Error() string { return "upstream " + f.Kind + ": " + f.Err.Error() }
func (f *Failure) Unwrap() error { return f.Err }

// ErrAborted marks a forward whose response to the sandbox had begun and
// was cut short: the caller can only cut the connection.
var ErrAborted = errors.New("upstream response cut short")

type targetKey struct{}

func (f *Forwarder) init() {
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
		BufferPool: wire.CopyBuffers,
		Rewrite: func(pr *httputil.ProxyRequest) {
			t := pr.In.Context().Value(targetKey{}).(Target)
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = t.Dest.String()
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
			fail := f.failed(err)
			if !Report(r, fail) {
				http.Error(w, "interceptd: "+fail.Error(), http.StatusBadGateway)
			}
		},
		ErrorLog: slog.NewLogLogger(slog.Default().Handler(), slog.LevelDebug),
	}
}

// Forward sends r to t.Dest and relays the response to w. Its error is
// the caller's to answer: a *Failure before anything was written, or one
// wrapping ErrAborted after the response had begun.
func (f *Forwarder) Forward(w http.ResponseWriter, r *http.Request, t Target) error {
	f.once.Do(f.init)
	if leanable(r) {
		return f.forwardLean(w, r, t)
	}
	return ServeReverse(f.proxy, w, r.WithContext(context.WithValue(r.Context(), targetKey{}, t)))
}

// failed counts and logs a failure before the response began.
func (f *Forwarder) failed(err error) *Failure {
	kind := ErrorKind(err)
	f.Metrics.Failed(kind)
	f.Logger.Debug("forwarding failed", "error", err)
	return &Failure{Kind: kind, Err: err}
}

// errSlot carries a ReverseProxy's failure from its ErrorHandler back to
// the handler serving the request, which returns it for the router to write.
type errSlot struct{ err error }

type errSlotKey struct{}

// ServeReverse runs rp for r and returns what failed: the error its
// ErrorHandler passed to Report (before any response), or one wrapping
// ErrAborted when it cut a response short (ReverseProxy panics with
// http.ErrAbortHandler then; the caller cuts the connection instead). So a
// ReverseProxy, as the forwarder's own client does, leaves the answer to a
// failure to the caller.
func ServeReverse(rp *httputil.ReverseProxy, w http.ResponseWriter, r *http.Request) (err error) {
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

// Report is how a ReverseProxy's ErrorHandler hands err to ServeReverse.
// It reports false when rp runs without ServeReverse around it (served
// directly, in tests): the ErrorHandler then writes err itself.
func Report(r *http.Request, err error) bool {
	if slot, ok := r.Context().Value(errSlotKey{}).(*errSlot); ok {
		slot.err = err
		return true
	}
	return false
}

// ErrorKind maps a forwarding error to a closed set of kinds, fit for a
// metric label: refused, reset, unreachable, timeout, canceled, certificate
// or error.
func ErrorKind(err error) string {
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
