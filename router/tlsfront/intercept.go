package tlsfront

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/httpserve"
)

// Handler serves one request of an intercepted connection; *router.Router
// is one.
type Handler interface {
	ServeConn(w http.ResponseWriter, r *http.Request, c router.Conn)
}

// ReasonUntrusted is the record's reason for a client that refused the
// minted certificate: it does not trust interceptd's CA, or pins another.
const ReasonUntrusted = "tls_untrusted"

// handshakeTimeout bounds an intercepted connection's TLS handshake.
const handshakeTimeout = 10 * time.Second

// intercepted is what an intercepted connection's requests need: the name
// TLS was terminated for, the socket's addresses, and the end of its life.
type intercepted struct {
	name     string
	src, dst netip.AddrPort
	tc       *tls.Conn
	state    *tls.ConnectionState // what r.TLS says for its requests
	done     chan struct{}
}

// leanServer returns the router's lean HTTP/1.1 server for intercepted
// connections, made on first use. Its requests reach Handler through
// leanHandler, which finds their connection by its source address.
func (s *Server) leanServer() *httpserve.Server {
	s.leanOnce.Do(func() {
		lean := httpserve.New(leanHandler{s}, nil, s.logger())
		s.mu.Lock() // Close reads it under mu
		s.lean = lean
		s.mu.Unlock()
	})
	return s.lean
}

// leanHandler serves the requests the lean server reads from intercepted
// connections, as serveIntercepted serves net/http's.
type leanHandler struct{ s *Server }

func (h leanHandler) ServeConn(w http.ResponseWriter, r *http.Request, c router.Conn) {
	ic := h.s.lookup(c.Addrs())
	if ic == nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	if misdirected(w, r, ic) {
		return
	}
	r.TLS = ic.state
	h.s.Handler.ServeConn(w, r, c)
}

// misdirected answers 421 to a request whose Host is not the name TLS was
// terminated for, and says whether it did.
func misdirected(w http.ResponseWriter, r *http.Request, ic *intercepted) bool {
	if policy.NormalizeHost(r.Host) == ic.name {
		return false
	}
	w.Header().Set("X-Interceptd-Error", "misdirected_request")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusMisdirectedRequest)
	w.Write([]byte("interceptd: this connection was made for " + ic.name + "; the request names another host\n"))
	return true
}

type interceptedKey struct{}

// httpServer returns the net/http server that serves intercepted
// connections (HTTP/1.1 and HTTP/2, as ALPN chose), made on first use.
func (s *Server) httpServer() *http.Server {
	s.httpOnce.Do(func() {
		ln := newQueueListener()
		protos := new(http.Protocols)
		protos.SetHTTP1(true)
		protos.SetHTTP2(true)
		srv := &http.Server{
			Protocols:         protos,
			Handler:           http.HandlerFunc(s.serveIntercepted),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       90 * time.Second,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(s.logger().Handler(), slog.LevelDebug),
			ConnContext: func(ctx context.Context, c net.Conn) context.Context {
				return context.WithValue(ctx, interceptedKey{}, s.lookup(addrs(c)))
			},
			ConnState: func(c net.Conn, st http.ConnState) {
				if st == http.StateClosed || st == http.StateHijacked {
					// This connection's entry only: c is the *tls.Conn
					// intercept pushed.
					if ic := s.lookup(addrs(c)); ic != nil && ic.tc == c && s.forget(ic) {
						close(ic.done)
					}
				}
			},
		}
		// Set under mu, which Close reads them under: a Close while the
		// first HTTP/2 connection comes sees both or neither, and one
		// that came first leaves the listener closed (push refuses).
		s.mu.Lock()
		s.httpLn, s.https = ln, srv
		if s.closing.Load() {
			ln.Close()
		}
		s.mu.Unlock()
		go srv.Serve(ln)
	})
	return s.https
}

// connKey names an open TCP connection by both of its ends. The source
// alone does not: a sandbox can open two connections from one port to two
// destinations (SO_REUSEADDR), and one connection's requests must never be
// taken for the other's (its name, the end of its life).
type connKey struct{ src, dst netip.AddrPort }

// lookup finds the intercepted connection from src to dst.
func (s *Server) lookup(src, dst netip.AddrPort) *intercepted {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.intercepts[connKey{src, dst}]
}

// forget drops ic's entry, if it is still ic's, and says whether it did.
func (s *Server) forget(ic *intercepted) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := connKey{ic.src, ic.dst}
	if s.intercepts[k] != ic {
		return false
	}
	delete(s.intercepts, k)
	return true
}

// intercept terminates TLS on rc for v.Name with a leaf from the CA and
// serves the requests inside through Handler, until the client is done.
func (s *Server) intercept(rc, raw net.Conn, v router.TLSVerdict, rec []any, start time.Time) {
	if s.CA == nil || s.Handler == nil {
		s.Metrics.connection(OutcomeRefused)
		reset(raw)
		s.logger().Warn("tls", append(rec, "outcome", OutcomeRefused, "detail", "a handler marked for HTTPS, but the front has no CA")...)
		return
	}
	if !HostName(v.Name) {
		// A glob's host part ("*.example.com", for a connection without
		// an SNI to a glob key's virtual address): no one name to mint a
		// leaf for, and no wildcard is ever minted.
		s.Metrics.connection(OutcomeRefused)
		reset(raw)
		s.logger().Info("tls", append(rec, "outcome", OutcomeRefused, "detail", "no host name to terminate TLS for: "+policy.Sanitize(v.Name),
			"duration_ms", float64(time.Since(start).Microseconds())/1000)...)
		return
	}
	certSent := false
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c, minted, err := s.CA.Leaf(v.Name)
			s.Metrics.leaf(minted)
			certSent = err == nil
			return c, err
		},
	}
	s.resumption(cfg, v.Name)
	tc := tls.Server(rc, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	hs := time.Now()
	err := tc.HandshakeContext(ctx)
	cancel()
	s.Metrics.handshake(time.Since(hs))
	if err != nil {
		outcome, reason := OutcomeHandshakeFailed, ""
		if untrusted(err, certSent) {
			outcome, reason = OutcomeUntrusted, ReasonUntrusted
		}
		s.Metrics.connection(outcome)
		reset(raw)
		attrs := append(rec, "outcome", outcome, "error", err.Error(), "duration_ms", float64(time.Since(start).Microseconds())/1000)
		if reason != "" {
			// The decision stays the handler's; why it went nowhere is this.
			attrs = append(attrs, "tls_reason", reason)
		}
		s.logger().Info("tls", attrs...)
		return
	}
	s.Metrics.connection(OutcomeIntercepted)
	src, dst := addrs(raw)
	state := tc.ConnectionState()
	ic := &intercepted{name: v.Name, src: src, dst: dst, tc: tc, state: &state, done: make(chan struct{})}
	s.mu.Lock()
	if s.intercepts == nil {
		s.intercepts = map[connKey]*intercepted{}
	}
	s.intercepts[connKey{src, dst}] = ic
	s.mu.Unlock()
	if state.NegotiatedProtocol != "h2" {
		// HTTP/1.1: the router's own lean loop, as port 80's, over the TLS
		// connection (net/http's server costs a kept-alive request about a
		// fifth more).
		s.logger().Info("tls", append(rec, "outcome", OutcomeIntercepted, "alpn", state.NegotiatedProtocol,
			"duration_ms", float64(time.Since(start).Microseconds())/1000)...)
		s.leanServer().ServeConn(tc)
		s.forget(ic)
		return
	}
	s.httpServer()
	if !s.httpLn.push(tc) {
		s.forget(ic)
		tc.Close()
		return
	}
	s.logger().Info("tls", append(rec, "outcome", OutcomeIntercepted, "alpn", tc.ConnectionState().NegotiatedProtocol,
		"duration_ms", float64(time.Since(start).Microseconds())/1000)...)
	<-ic.done
}

// resumption lets cfg, one connection's config, issue and take session
// tickets that the front's other connections take too (Go keeps ticket keys
// per config otherwise, so no ticket would ever be redeemed and every
// connection would pay a full handshake). A ticket carries the name TLS was
// terminated for and is taken only on a connection for that same name: a
// resumed session skips the certificate, so a ticket must not carry a
// client from one intercepted name to another.
func (s *Server) resumption(cfg *tls.Config, name string) {
	cfg.SetSessionTicketKeys(s.ticketKeys())
	tag := []byte("interceptd-name:" + name)
	cfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		ss.Extra = append(ss.Extra, tag)
		return cfg.EncryptTicket(cs, ss)
	}
	cfg.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		ss, err := cfg.DecryptTicket(identity, cs)
		if err != nil || ss == nil {
			return nil, nil // not ours, or from a rotated key: a full handshake
		}
		for _, e := range ss.Extra {
			if bytes.Equal(e, tag) {
				return ss, nil
			}
		}
		return nil, nil
	}
}

// ticketKeys are the front's session-ticket keys: the newest first (it
// encrypts), a day's life each, the one before still taken.
func (s *Server) ticketKeys() [][32]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.tickets) == 0 || time.Since(s.ticketsMade) > 24*time.Hour {
		var k [32]byte
		if _, err := rand.Read(k[:]); err != nil {
			panic(err) // crypto/rand does not fail on Linux
		}
		s.tickets = append([][32]byte{k}, s.tickets...)
		if len(s.tickets) > 2 {
			s.tickets = s.tickets[:2]
		}
		s.ticketsMade = time.Now()
	}
	return s.tickets
}

// untrusted reports whether a handshake failed because the client refused
// the certificate: the alerts a client sends for a CA it does not trust, a
// name it did not expect, or a pin; or, once the certificate was sent, a
// record the front cannot decrypt, which is how OpenSSL's TLS 1.3 clients
// (curl, Python) abort on a certificate they do not trust: their alert comes
// unencrypted where the front expects their Finished.
func untrusted(err error, certSent bool) bool {
	s := err.Error()
	for _, a := range []string{"unknown certificate authority", "bad certificate", "certificate unknown", "unsupported certificate", "access denied"} {
		if strings.Contains(s, "remote error: tls: "+a) {
			return true
		}
	}
	return certSent && strings.Contains(s, "bad record MAC")
}

// serveIntercepted serves one request of an intercepted connection: its
// Host must be the name TLS was terminated for (a client cannot take a
// connection made for one handler to another name, or out to the
// internet), and then the router decides it as any other.
func (s *Server) serveIntercepted(w http.ResponseWriter, r *http.Request) {
	ic, _ := r.Context().Value(interceptedKey{}).(*intercepted)
	if ic == nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	if misdirected(w, r, ic) {
		return
	}
	if !s.takeStream(ic.src.Addr()) {
		s.Metrics.streamRefused()
		w.Header().Set("X-Interceptd-Error", ReasonTooManyStreams)
		w.Header().Set("Retry-After", "1")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, "interceptd: "+ReasonTooManyStreams+": this sandbox has as many requests in flight as its connection cap allows\n")
		return
	}
	defer s.giveStream(ic.src.Addr())
	s.Handler.ServeConn(w, r, &interceptedConn{ic: ic, ctx: r.Context()})
}

// ReasonTooManyStreams is the X-Interceptd-Error of the 429 an HTTP/2
// request gets when its sandbox has MaxStreams requests in flight.
const ReasonTooManyStreams = "too_many_streams"

// takeStream counts one more HTTP/2 request in flight for src, unless src
// is at its cap.
func (s *Server) takeStream(src netip.Addr) bool {
	limit := 0
	if s.MaxStreams != nil {
		limit = s.MaxStreams(src)
	}
	if limit <= 0 {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streams[src] >= limit {
		return false
	}
	if s.streams == nil {
		s.streams = map[netip.Addr]int{}
	}
	s.streams[src]++
	return true
}

// giveStream ends a request takeStream counted.
func (s *Server) giveStream(src netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n, ok := s.streams[src]; ok {
		if n <= 1 {
			delete(s.streams, src)
		} else {
			s.streams[src] = n - 1
		}
	}
}

// interceptedConn is the router.Conn of one request on an intercepted
// connection. Each request has its own cache: HTTP/2 serves a connection's
// requests at once.
type interceptedConn struct {
	ic    *intercepted
	ctx   context.Context
	cache router.ConnCache
	stop  func() bool
}

func (c *interceptedConn) Addrs() (source, dest netip.AddrPort) { return c.ic.src, c.ic.dst }
func (c *interceptedConn) Cache() *router.ConnCache             { return &c.cache }
func (c *interceptedConn) Ambiguous() bool                      { return false } // net/http refuses such framing itself
func (c *interceptedConn) Close() error                         { return c.ic.tc.Close() }
func (c *interceptedConn) WhenGone(f func())                    { c.stop = context.AfterFunc(c.ctx, f) }
func (c *interceptedConn) StopWhenGone() bool {
	stop := c.stop
	c.stop = nil
	return stop == nil || stop()
}

// queueListener hands connections the front has terminated to net/http.
type queueListener struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newQueueListener() *queueListener {
	return &queueListener{ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *queueListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *queueListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *queueListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *queueListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
