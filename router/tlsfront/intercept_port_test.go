package tlsfront

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// mergedListener accepts from several listeners as one, as the front's
// one transparent listener takes connections to every destination.
type mergedListener struct {
	lns    []net.Listener
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func mergeListeners(lns ...net.Listener) *mergedListener {
	m := &mergedListener{lns: lns, ch: make(chan net.Conn), closed: make(chan struct{})}
	for _, ln := range lns {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				select {
				case m.ch <- c:
				case <-m.closed:
					c.Close()
					return
				}
			}
		}()
	}
	return m
}

func (m *mergedListener) Accept() (net.Conn, error) {
	select {
	case c := <-m.ch:
		return c, nil
	case <-m.closed:
		return nil, net.ErrClosed
	}
}

func (m *mergedListener) Close() error {
	m.once.Do(func() {
		close(m.closed)
		for _, ln := range m.lns {
			ln.Close()
		}
	})
	return nil
}

func (m *mergedListener) Addr() net.Addr { return m.lns[0].Addr() }

// samePortDialer dials from one fixed source address and port, as a
// sandbox can for connections to different destinations (SO_REUSEADDR: each
// connection is its own four-tuple).
func samePortDialer(src *net.TCPAddr) *net.Dialer {
	return &net.Dialer{LocalAddr: src, Timeout: 5 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			if serr == nil {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
}

// freePort finds a port nothing on 127.0.0.1 uses now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestTwoInterceptedConnectionsFromOneSourcePortKeepTheirOwnNames: a
// sandbox may open connections to two destinations from the same source
// port (two four-tuples). Each intercepted connection must keep the name
// TLS was terminated for: a request on the one made for api.test that
// names b.test is misdirected, and the end of one does not take the other's
// name away. Keyed by the source alone, the second connection's name
// served the first's requests, the first's end left the second's
// requests without a connection (500), and an HTTP/2 connection's end
// released the other's, so that Close waited for ever.
func TestTwoInterceptedConnectionsFromOneSourcePortKeepTheirOwnNames(t *testing.T) {
	ca, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	lnA, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lnB, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := mergeListeners(lnA, lnB)
	s := &Server{Decide: handlerDecider{}, CA: ca, Handler: echoRouter{}, Metrics: NewMetrics(prometheus.NewRegistry()), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		closed := make(chan struct{})
		go func() { s.Close(); <-done; close(closed) }()
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Error("Close did not return: an intercepted connection's end was never seen")
		}
	})
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())

	for _, proto := range []string{"http/1.1", "h2"} {
		t.Run(proto, func(t *testing.T) {
			d := samePortDialer(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: freePort(t)})
			dial := func(addr, name string) *tls.Conn {
				raw, err := d.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				c := tls.Client(raw, &tls.Config{ServerName: name, RootCAs: roots, NextProtos: []string{proto}})
				if err := c.Handshake(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				return c
			}
			a := dial(lnA.Addr().String(), "api.test")
			b := dial(lnB.Addr().String(), "b.test")
			if a.LocalAddr().String() != b.LocalAddr().String() {
				t.Fatalf("two source addresses: %v, %v", a.LocalAddr(), b.LocalAddr())
			}
			// Both are registered once a request has been served on each.
			ra, rb := requester(t, a, proto), requester(t, b, proto)
			if code, body := rb("b.test"); code != http.StatusOK {
				t.Fatalf("b.test on its own connection: %d %q", code, body)
			}
			if code, body := ra("api.test"); code != http.StatusOK {
				t.Fatalf("api.test on its own connection: %d %q", code, body)
			}
			if code, body := ra("b.test"); code != http.StatusMisdirectedRequest {
				t.Errorf("b.test on the connection made for api.test: %d %q, want 421", code, body)
			}
			if code, body := rb("api.test"); code != http.StatusMisdirectedRequest {
				t.Errorf("api.test on the connection made for b.test: %d %q, want 421", code, body)
			}
			a.Close()
			time.Sleep(100 * time.Millisecond) // the front sees the end
			if code, body := rb("b.test"); code != http.StatusOK {
				t.Errorf("b.test after the other connection ended: %d %q", code, body)
			}
		})
	}
}

// requester sends requests naming a host on c, over the protocol ALPN
// chose, and returns each answer's status and body.
func requester(t *testing.T, c *tls.Conn, proto string) func(host string) (int, string) {
	name := c.ConnectionState().ServerName
	if proto == "h2" {
		used := false
		tr := &http.Transport{
			ForceAttemptHTTP2: true,
			DialTLSContext: func(context.Context, string, string) (net.Conn, error) {
				if used {
					return nil, fmt.Errorf("a second connection")
				}
				used = true
				return c, nil
			},
		}
		t.Cleanup(tr.CloseIdleConnections)
		return func(host string) (int, string) {
			req, _ := http.NewRequest("GET", "https://"+name+"/x", nil) // the transport's pool key
			req.Host = host
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatalf("%s: %v", host, err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
	}
	br := bufio.NewReader(c)
	return func(host string) (int, string) {
		fmt.Fprintf(c, "GET /x HTTP/1.1\r\nHost: %s\r\n\r\n", host)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
}
