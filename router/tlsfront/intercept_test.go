package tlsfront

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/router"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// handlerDecider gives every connection named api.test to a handler.
type handlerDecider struct{}

func (handlerDecider) DecideTLS(src, dst netip.AddrPort, sni string) router.TLSVerdict {
	if sni == "api.test" || sni == "b.test" {
		return router.TLSVerdict{Decision: policy.Decision{Result: policy.Handler, Reason: policy.ReasonHandler}, Sandbox: "s", RequestID: "r", Name: sni}
	}
	return router.TLSVerdict{Decision: policy.Decision{Result: policy.Deny, Reason: policy.ReasonNotAllowed}, Sandbox: "s", RequestID: "r"}
}

// echoRouter answers what it was given, as the router would serve it.
type echoRouter struct{}

func (echoRouter) ServeConn(w http.ResponseWriter, r *http.Request, c router.Conn) {
	src, dst := c.Addrs()
	n, _ := io.Copy(io.Discard, r.Body)
	fmt.Fprintf(w, "%s %s %s tls=%v src=%v dst=%v", r.Proto, r.Host, r.URL.Path, r.TLS != nil, src.Addr().IsLoopback(), dst.Addr().IsLoopback())
	if n > 0 {
		fmt.Fprintf(w, " body=%d", n)
	}
}

func interceptFront(t *testing.T) (addr string, ca *CA, m *Metrics) {
	t.Helper()
	addr, ca, m, _ = interceptFrontServer(t)
	return addr, ca, m
}

func interceptFrontServer(t *testing.T) (addr string, ca *CA, m *Metrics, s *Server) {
	t.Helper()
	ca = testCA(t)
	s = &Server{Decide: handlerDecider{}, CA: ca, Handler: echoRouter{}}
	addr = startFront(t, s)
	return addr, ca, s.Metrics, s
}

// testCA is a CA made in the test's own directory.
func testCA(t testing.TB) *CA {
	t.Helper()
	ca, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// startFront serves s on a loopback port until the test ends (Close, then
// Serve's return) and gives its address; s gets its own metrics and a
// quiet logger unless it has them.
func startFront(t testing.TB, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if s.Metrics == nil {
		s.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		<-done
	})
	return ln.Addr().String()
}

func clientFor(addr string, roots *x509.CertPool, h2 bool) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		},
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: h2,
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

func TestAnInterceptedNameIsServedByTheHandlerOverHTTP2AndHTTP1(t *testing.T) {
	addr, ca, m := interceptFront(t)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	for _, tt := range []struct {
		h2   bool
		want string
	}{
		{true, "HTTP/2.0 api.test /x tls=true src=true dst=true"},
		{false, "HTTP/1.1 api.test /x tls=true src=true dst=true"},
	} {
		c := clientFor(addr, roots, tt.h2)
		resp, err := c.Get("https://api.test/x")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != tt.want {
			t.Errorf("got %q, want %q", b, tt.want)
		}
		if cert := resp.TLS.PeerCertificates[0]; cert.Subject.CommonName != "api.test" || cert.NotAfter.Sub(time.Now()) > 25*time.Hour {
			t.Errorf("certificate %v until %v", cert.Subject, cert.NotAfter)
		}
		c.CloseIdleConnections()
	}
	if n := testutil.ToFloat64(m.leaves.WithLabelValues("minted")); n != 1 {
		t.Errorf("%v leaves minted, want 1 (then cached)", n)
	}
	if n := testutil.ToFloat64(m.connections.WithLabelValues(OutcomeIntercepted)); n != 2 {
		t.Errorf("%v intercepted", n)
	}
}

func TestARequestForAnotherHostOnAnInterceptedConnectionIsMisdirected(t *testing.T) {
	addr, ca, _ := interceptFront(t)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	for _, h2 := range []bool{true, false} {
		c := clientFor(addr, roots, h2)
		req, _ := http.NewRequest("GET", "https://api.test/x", nil)
		req.Host = "evil.test"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusMisdirectedRequest || !strings.Contains(string(b), "made for api.test") {
			t.Errorf("h2=%v: %d %q", h2, resp.StatusCode, b)
		}
	}
}

func TestAClientThatDoesNotTrustTheCAFailsCleanlyAndIsCounted(t *testing.T) {
	addr, ca, m := interceptFront(t)
	_, err := clientFor(addr, x509.NewCertPool(), true).Get("https://api.test/x")
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("an untrusting client: %v", err)
	}
	waitFor(t, func() bool { return testutil.ToFloat64(m.connections.WithLabelValues(OutcomeUntrusted)) == 1 })
	// And the front goes on serving those that do.
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	resp, err := clientFor(addr, roots, true).Get("https://api.test/after")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func TestASessionResumesOnTheNextConnectionForItsNameOnly(t *testing.T) {
	addr, ca, m := interceptFront(t)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	cache := tls.NewLRUClientSessionCache(8)
	dial := func(name string) (resumed bool, err error) {
		c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: name, RootCAs: roots, ClientSessionCache: cache, NextProtos: []string{"http/1.1"}})
		if err != nil {
			return false, err
		}
		defer c.Close()
		// TLS 1.3 tickets come after the handshake: a request and its
		// answer make sure the client has read them.
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", name)
		io.ReadAll(c)
		return c.ConnectionState().DidResume, nil
	}
	if resumed, err := dial("api.test"); err != nil || resumed {
		t.Fatalf("first connection: resumed %v, %v", resumed, err)
	}
	if resumed, err := dial("api.test"); err != nil || !resumed {
		t.Errorf("second connection: resumed %v, %v; want a resumed session", resumed, err)
	}
	if n := testutil.ToFloat64(m.leaves.WithLabelValues("minted")) + testutil.ToFloat64(m.leaves.WithLabelValues("cached")); n != 1 {
		t.Errorf("%v certificates presented for two connections, want 1 (the second resumed)", n)
	}
}

// oneSession is a client session cache that offers the one session it has
// for whatever name: a client trying a ticket on another name.
type oneSession struct{ cs *tls.ClientSessionState }

func (o *oneSession) Get(string) (*tls.ClientSessionState, bool) { return o.cs, o.cs != nil }
func (o *oneSession) Put(_ string, cs *tls.ClientSessionState) {
	if cs != nil {
		o.cs = cs
	}
}

func TestATicketForOneNameIsNotTakenForAnother(t *testing.T) {
	addr, ca, _ := interceptFront(t)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	cache := &oneSession{}
	dial := func(name string, cfg *tls.Config) tls.ConnectionState {
		cfg.ServerName, cfg.ClientSessionCache, cfg.NextProtos = name, cache, []string{"http/1.1"}
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", name)
		io.ReadAll(c)
		return c.ConnectionState()
	}
	dial("api.test", &tls.Config{RootCAs: roots})
	// A client that offers api.test's ticket on a connection for b.test
	// (a Go client would not: it skips verification here to try).
	st := dial("b.test", &tls.Config{InsecureSkipVerify: true})
	if st.DidResume {
		t.Fatal("api.test's ticket resumed a connection for b.test")
	}
	if got := st.PeerCertificates[0].Subject.CommonName; got != "b.test" {
		t.Errorf("b.test's connection got a certificate for %q", got)
	}
}

func TestAnInterceptedHTTP1UploadInChunksIsServedToo(t *testing.T) {
	// The lean loop hands a chunked upload to net/http: the same checks
	// and the same TLS state there.
	addr, ca, _ := interceptFront(t)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	c := clientFor(addr, roots, false)
	pr, pw := io.Pipe()
	go func() { pw.Write([]byte(strings.Repeat("x", 100000))); pw.Close() }()
	req, _ := http.NewRequest("POST", "https://api.test/up", pr) // no length: chunked
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "HTTP/1.1 api.test /up tls=true src=true dst=true body=100000"; string(b) != want {
		t.Errorf("got %q, want %q", b, want)
	}
	req, _ = http.NewRequest("POST", "https://api.test/up", strings.NewReader("abc"))
	req.Host = "evil.test"
	req.TransferEncoding = []string{"chunked"}
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("a chunked request for another host: %d", resp.StatusCode)
	}
}

// globDecider decides as the router does for a worker's "*.example.test"
// key: a name under it is the handler's, and a hello without a name sent
// to the key's virtual address is terminated for the key's host part.
type globDecider struct{}

func (globDecider) DecideTLS(src, dst netip.AddrPort, sni string) router.TLSVerdict {
	v := router.TLSVerdict{Decision: policy.Decision{Result: policy.Handler, Reason: policy.ReasonHandler}, Sandbox: "s", RequestID: "r", Name: sni}
	switch {
	case sni == "":
		v.Name = "*.example.test"
	case !strings.HasSuffix(sni, ".example.test"):
		return router.TLSVerdict{Decision: policy.Decision{Result: policy.Deny, Reason: policy.ReasonNotAllowed}, Sandbox: "s", RequestID: "r"}
	}
	return v
}

func TestAConnectionWithoutANameToAGlobsAddressGetsNoWildcardCertificate(t *testing.T) {
	ca := testCA(t)
	s := &Server{Decide: globDecider{}, CA: ca, Handler: echoRouter{}}
	addr := startFront(t, s)
	m := s.Metrics
	// No SNI (an IP-literal URL): the glob names no one host to mint for.
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err == nil {
		t.Errorf("a handshake without a name got a certificate for %v", c.ConnectionState().PeerCertificates[0].DNSNames)
		c.Close()
	}
	if n := testutil.ToFloat64(m.leaves.WithLabelValues("minted")); n != 0 {
		t.Errorf("%v leaves minted for a wildcard", n)
	}
	waitFor(t, func() bool { return testutil.ToFloat64(m.connections.WithLabelValues(OutcomeRefused)) == 1 })
	// A host name under it is served.
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	resp, err := clientFor(addr, roots, true).Get("https://a.example.test/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func TestAClientThatAbortsItsHandshakeLeavesNothingOpen(t *testing.T) {
	addr, _, m, s := interceptFrontServer(t)
	for range 20 {
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		// The hello goes out, then the client is gone before the
		// certificate comes back (or as it comes).
		c := tls.Client(raw, &tls.Config{ServerName: "api.test", InsecureSkipVerify: true})
		go c.Handshake()
		time.Sleep(time.Millisecond)
		raw.Close()
	}
	waitFor(t, func() bool { return testutil.ToFloat64(m.openConns) == 0 })
	s.mu.Lock()
	n := len(s.intercepts)
	s.mu.Unlock()
	if n != 0 {
		t.Errorf("%d intercepted connections still known after their clients went", n)
	}
}
