package tlsfront

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/router"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// decider answers from a table by server name and records what it was asked.
type decider struct {
	mu    sync.Mutex
	asked []string
	deny  map[string]bool
}

func (d *decider) DecideTLS(src, dst netip.AddrPort, sni string) router.TLSVerdict {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.asked = append(d.asked, sni)
	if d.deny[sni] {
		return router.TLSVerdict{Decision: policy.Decision{Result: policy.Deny, Reason: policy.ReasonDenied, Detail: sni + " is denied"}, Sandbox: "s", RequestID: "r1"}
	}
	return router.TLSVerdict{Decision: policy.Decision{Result: policy.Forward, Reason: policy.ReasonInternet}, Sandbox: "s", RequestID: "r1"}
}

func (d *decider) names() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.asked...)
}

// front runs a Server on loopback whose every passing connection goes to
// upstream (the test's stand-in for the address a sandbox dialled).
func front(t *testing.T, d Decider, upstream string, hello time.Duration) (addr string, m *Metrics, s *Server) {
	t.Helper()
	return frontCopying(t, d, upstream, hello, 0)
}

// frontCopying is front with copyFirst set.
func frontCopying(t testing.TB, d Decider, upstream string, hello time.Duration, copyFirst int64) (addr string, m *Metrics, s *Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m = NewMetrics(prometheus.NewRegistry())
	s = &Server{Decide: d, Metrics: m, HelloTimeout: hello, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), copyFirst: copyFirst,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, network, upstream)
		}}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), m, s
}

func tlsUpstream(t *testing.T) (*httptest.Server, *x509.CertPool) {
	t.Helper()
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "upstream saw "+r.Host+" "+r.TLS.ServerName)
	}))
	up.StartTLS()
	t.Cleanup(up.Close)
	pool := x509.NewCertPool()
	pool.AddCert(up.Certificate())
	return up, pool
}

func TestAnAllowedNameIsSplicedWithTheUpstreamsOwnCertificate(t *testing.T) {
	up, pool := tlsUpstream(t)
	d := &decider{}
	addr, m, _ := front(t, d, up.Listener.Addr().String(), 0)
	// httptest's certificate names example.com: the client checks it
	// against the upstream's own CA, through the front.
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		},
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "example.com"},
	}}
	for i := 0; i < 2; i++ {
		resp, err := c.Get("https://example.com/x")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "upstream saw example.com example.com" {
			t.Fatalf("body %q", b)
		}
		if got := resp.TLS.PeerCertificates[0]; !got.Equal(up.Certificate()) {
			t.Fatal("the client saw another certificate than the upstream's")
		}
	}
	c.CloseIdleConnections()
	if got := d.names(); len(got) != 1 || got[0] != "example.com" {
		t.Errorf("decided %q, want one connection named example.com (kept alive)", got)
	}
	waitFor(t, func() bool { return testutil.ToFloat64(m.spliced.WithLabelValues("in")) > 0 })
	if n := testutil.ToFloat64(m.connections.WithLabelValues(OutcomePassthrough)); n != 1 {
		t.Errorf("passthrough count %v", n)
	}
}

func TestADeniedNameIsResetAtOnceAndNeverReachesTheUpstream(t *testing.T) {
	reached := make(chan struct{}, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			reached <- struct{}{}
			c.Close()
		}
	}()
	d := &decider{deny: map[string]bool{"bad.test": true}}
	addr, m, _ := front(t, d, ln.Addr().String(), 0)
	start := time.Now()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tc := tls.Client(conn, &tls.Config{ServerName: "bad.test", InsecureSkipVerify: true})
	err = tc.Handshake()
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("handshake error %v, want a reset", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("refused after %v", d)
	}
	select {
	case <-reached:
		t.Error("a denied connection reached the upstream")
	case <-time.After(100 * time.Millisecond):
	}
	if n := testutil.ToFloat64(m.connections.WithLabelValues(OutcomeRefused)); n != 1 {
		t.Errorf("refused count %v", n)
	}
}

func TestWhatIsNotTLSIsDecidedWithoutANameAndPassedOnUnchanged(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		b, _ := io.ReadAll(c)
		c.Write([]byte("pong"))
		c.Close()
		got <- b
	}()
	d := &decider{}
	addr, m, _ := front(t, d, ln.Addr().String(), 0)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	conn.Write(msg)
	conn.(*net.TCPConn).CloseWrite()
	back, _ := io.ReadAll(conn)
	conn.Close()
	if b := <-got; !bytes.Equal(b, msg) || string(back) != "pong" {
		t.Errorf("upstream got %q, client got %q", b, back)
	}
	if n := d.names(); len(n) != 1 || n[0] != "" {
		t.Errorf("decided %q, want one connection without a name", n)
	}
	if n := testutil.ToFloat64(m.hellos.WithLabelValues(HelloNotTLS)); n != 1 {
		t.Errorf("not_tls count %v", n)
	}
}

func TestAClientThatNeverFinishesItsHelloIsCutWithoutAVerdict(t *testing.T) {
	d := &decider{}
	addr, m, _ := front(t, d, "127.0.0.1:1", 200*time.Millisecond)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte{22, 3, 1, 0, 200, 1}) // a record header promising more
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("the connection stayed open")
	}
	if n := d.names(); len(n) != 0 {
		t.Errorf("decided %q", n)
	}
	if n := testutil.ToFloat64(m.connections.WithLabelValues(OutcomeHelloFailed)); n != 1 {
		t.Errorf("hello_failed count %v", n)
	}
}

func TestADestinationThatCannotBeDialledIsAReset(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	addr, m, _ := front(t, &decider{}, dead, 0)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	err = tls.Client(conn, &tls.Config{ServerName: "a.test", InsecureSkipVerify: true}).Handshake()
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("handshake error %v, want a reset", err)
	}
	if n := testutil.ToFloat64(m.connections.WithLabelValues(OutcomeUpstreamFailed)); n != 1 {
		t.Errorf("upstream_failed count %v", n)
	}
}

func TestCloseCutsPassedThroughConnections(t *testing.T) {
	up, pool := tlsUpstream(t)
	addr, _, s := front(t, &decider{}, up.Listener.Addr().String(), 0)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tc := tls.Client(conn, &tls.Config{ServerName: "example.com", RootCAs: pool})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited on an open passthrough")
	}
	tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := tc.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read after Close: %v", err)
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatal("condition not met in 5 s")
}
