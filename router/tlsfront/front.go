package tlsfront

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/interceptd/interceptd/internal/connlimit"
	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/httpserve"
	"github.com/interceptd/interceptd/router/tlspeek"
)

// Decider decides a connection by its server name ("" for none).
type Decider interface {
	DecideTLS(src, dst netip.AddrPort, sni string) router.TLSVerdict
}

// Outcomes of a connection (the outcome label of the connections metric,
// the record's outcome).
const (
	OutcomePassthrough     = "passthrough"      // spliced to the destination
	OutcomeRefused         = "refused"          // the verdict denied it: reset
	OutcomeHelloFailed     = "hello_failed"     // no ClientHello in time, or the client went away first
	OutcomeUpstreamFailed  = "upstream_failed"  // the destination could not be dialled: reset
	OutcomeLimited         = "limited"          // over the sandbox's connection cap, reset at accept
	OutcomeIntercepted     = "intercepted"      // TLS terminated, the requests served by handlers
	OutcomeUntrusted       = "untrusted"        // the client refused the minted certificate (tls_untrusted)
	OutcomeHandshakeFailed = "handshake_failed" // an intercepted handshake failed otherwise
)

// Kinds of ClientHello (the kind label of the hellos metric).
const (
	HelloSNI       = "sni"       // a server name
	HelloNoSNI     = "no_sni"    // TLS without a server name
	HelloECH       = "ech"       // Encrypted Client Hello: the outer name is what is decided
	HelloNotTLS    = "not_tls"   // not a TLS handshake: decided by the address
	HelloMalformed = "malformed" // a hello that does not parse: decided by the address
	HelloTooLarge  = "too_large" // over tlspeek.MaxHelloSize: decided by the address
	HelloTimeout   = "timeout"   // not all of it within HelloTimeout
	HelloGone      = "gone"      // the client closed or reset before it was whole
)

// Server is the port-443 front.
type Server struct {
	// Decide gives each connection its verdict.
	Decide Decider
	// Dial dials the destination of a connection that passes; nil: a
	// net.Dialer with DialTimeout and TCP keepalives (upstreamDialer).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// HelloTimeout bounds the wait for the whole ClientHello (default
	// 10 s); DialTimeout the dial (default 10 s).
	HelloTimeout time.Duration
	DialTimeout  time.Duration
	Metrics      *Metrics
	Logger       *slog.Logger
	// CA and Handler intercept what the verdict gives a handler (a name
	// marked for HTTPS): TLS is terminated with a leaf from CA and the
	// requests inside are served by Handler. Without them such a
	// connection is refused.
	CA      *CA
	Handler Handler
	// MaxStreams caps the HTTP/2 requests a source (a sandbox) has in
	// flight at once on its intercepted connections; nil, or a cap <= 0
	// for a source, means no cap. The daemon gives it the sandbox's
	// connection cap: HTTP/2 carries many requests on one connection, and
	// the connection cap alone would let a sandbox hold a few hundred
	// times more requests (each a handler's goroutines and buffers, and a
	// proxy's upstream connection) than over HTTP/1.1.
	MaxStreams func(src netip.Addr) int

	httpOnce sync.Once
	https    *http.Server // HTTP/2 intercepted connections
	httpLn   *queueListener
	leanOnce sync.Once
	lean     *httpserve.Server // HTTP/1.1 intercepted connections
	// intercepts are the connections TLS was terminated on, by their
	// two ends: how each request (lean's or net/http's) finds its
	// connection's name and TLS state, and what Close cuts.
	intercepts map[connKey]*intercepted
	// tickets are the session-ticket keys of intercepted connections
	// (ticketKeys), made at ticketsMade.
	tickets     [][32]byte
	ticketsMade time.Time
	// streams are the HTTP/2 requests each source has in flight
	// (MaxStreams), under mu.
	streams map[netip.Addr]int

	// copyFirst replaces passFirst and toSandboxFirst when not zero
	// (negative: none, both directions spliced from the first byte), for
	// tests and the benchmark.
	copyFirst int64

	mu      sync.Mutex
	ln      net.Listener
	conns   map[net.Conn]struct{}
	closing atomic.Bool
	wg      sync.WaitGroup
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.Default()
	}
	return s.Logger
}

// Serve accepts connections from ln (a transparent listener: a
// connection's local address is the destination the sandbox dialled) until
// Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return nil
	}
	s.ln = ln
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.mu.Unlock()
	for {
		c, err := connlimit.Accept(ln, s.closing.Load, s.logger(), "intercepted tls")
		if c == nil {
			return err
		}
		if !s.track(c) {
			c.Close()
			return nil
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			s.serve(c)
		}()
	}
}

// Close stops accepting and cuts every connection, passed-through ones
// included (their clients see a reset or an EOF and may reconnect to the
// next daemon), and waits for their goroutines.
func (s *Server) Close() error {
	s.closing.Store(true)
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	for _, ic := range s.intercepts {
		ic.tc.Close()
	}
	httpLn, https, lean := s.httpLn, s.https, s.lean
	s.mu.Unlock()
	if httpLn != nil {
		httpLn.Close()
		https.Close()
	}
	if lean != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		lean.Shutdown(ctx) // the connections themselves were closed above
		cancel()
	}
	s.wg.Wait()
	return nil
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// addrs are a transparent connection's source and original destination.
func addrs(c net.Conn) (src, dst netip.AddrPort) {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		src = a.AddrPort()
	}
	if a, ok := c.LocalAddr().(*net.TCPAddr); ok {
		dst = a.AddrPort()
	}
	return netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
}

// serve decides and then refuses or splices one connection.
func (s *Server) serve(c net.Conn) {
	start := time.Now()
	s.Metrics.open(1)
	defer s.Metrics.open(-1)
	// The socket itself, under what wraps it for accounting (a per-source
	// cap): io.Copy splices only between the TCP sockets it sees. c stays
	// what is closed.
	raw := c
	if u, ok := c.(interface{ NetConn() net.Conn }); ok {
		raw = u.NetConn()
	}
	defer c.Close()
	src, dst := addrs(raw)
	timeout := s.HelloTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	hello, rc, err := tlspeek.Peek(raw, timeout)
	kind := helloKind(hello, err)
	s.Metrics.hello(kind, time.Since(start))
	if kind == HelloTimeout || kind == HelloGone {
		// Nothing to decide on, and no one to tell. Counted before the
		// reset: whoever sees the reset sees it counted.
		s.Metrics.connection(OutcomeHelloFailed)
		s.logger().Debug("tls connection without a whole ClientHello", "sandbox_addr", src.Addr().String(), "dest", dst.String(), "error", err)
		reset(raw)
		return
	}
	v := s.Decide.DecideTLS(src, dst, hello.ServerName)
	rec := []any{"request_id", v.RequestID, "sandbox", v.Sandbox, "sni", policy.Sanitize(hello.ServerName), "dest", dst.String(),
		"hello", kind, "decision", string(v.Result), "reason", v.Reason}
	if v.Result == policy.Handler {
		s.intercept(rc, raw, v, rec, start)
		return
	}
	if !v.Allowed() {
		// A reset, not an alert: the front speaks no TLS of its own, and a
		// reset fails every client at once (curl: "Connection reset by
		// peer"); the record says why.
		s.Metrics.connection(OutcomeRefused)
		reset(raw)
		s.logger().Info("tls", append(rec, "outcome", OutcomeRefused, "detail", v.Detail,
			"duration_ms", float64(time.Since(start).Microseconds())/1000)...)
		return
	}
	up, err := s.dial(dst)
	if err != nil {
		s.Metrics.connection(OutcomeUpstreamFailed)
		reset(raw)
		s.logger().Info("tls", append(rec, "outcome", OutcomeUpstreamFailed, "error", err.Error(),
			"duration_ms", float64(time.Since(start).Microseconds())/1000)...)
		return
	}
	s.mu.Lock()
	s.conns[up] = struct{}{}
	s.mu.Unlock()
	defer s.untrack(up)
	if v.Track != nil {
		// A policy change decides it again, and may cut it.
		defer v.Track(func() { raw.Close(); up.Close() })()
	}
	s.Metrics.connection(OutcomePassthrough)
	firstIn, firstOut := s.firstBytes()
	in, out := splice(rc, raw, up, s.Metrics, firstIn, firstOut)
	s.logger().Info("tls", append(rec, "outcome", OutcomePassthrough, "bytes_in", in, "bytes_out", out,
		"duration_ms", float64(time.Since(start).Microseconds())/1000)...)
}

// firstBytes is how much of each direction, to the upstream and to the
// sandbox, is copied by reads and writes before splice(2) takes over.
func (s *Server) firstBytes() (in, out int64) {
	switch {
	case s.copyFirst < 0:
		return 0, 0
	case s.copyFirst > 0:
		return s.copyFirst, s.copyFirst
	}
	return passFirst, toSandboxFirst
}

func (s *Server) dial(dst netip.AddrPort) (net.Conn, error) {
	timeout := s.DialTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if s.Dial != nil {
		return s.Dial(ctx, "tcp", dst.String())
	}
	return upstreamDialer.DialContext(ctx, "tcp", dst.String())
}

// upstreamDialer dials passed-through connections. Keepalive probes find
// an upstream that went away while the connection idles (the client's own
// probes are answered by this host, not the upstream): after 30 s idle,
// then at the system's interval and count, which are left as they are so
// that a connection costs two system calls for them, not four.
var upstreamDialer = net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: -1, Count: -1}}

// helloKind names what Peek found.
func helloKind(h tlspeek.Hello, err error) string {
	switch {
	case err == nil && h.ECH:
		return HelloECH
	case err == nil && h.ServerName != "":
		return HelloSNI
	case err == nil:
		return HelloNoSNI
	case errors.Is(err, tlspeek.ErrNotTLS):
		return HelloNotTLS
	case errors.Is(err, tlspeek.ErrMalformed):
		return HelloMalformed
	case errors.Is(err, tlspeek.ErrTooLarge):
		return HelloTooLarge
	case errors.Is(err, tlspeek.ErrTimeout):
		return HelloTimeout
	}
	return HelloGone
}

// reset closes c with a TCP reset (no lingering FIN handshake): the client
// fails at once instead of reading an orderly end.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}
