package tlsfront

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// twoAddressFront runs one front on two loopback addresses (a sandbox's
// two destinations), on the same port.
func twoAddressFront(t *testing.T) (a, b string, ca *CA, m *Metrics, s *Server) {
	t.Helper()
	ca = testCA(t)
	ln1, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln1.Addr().(*net.TCPAddr).Port
	ln2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.2:%d", port))
	if err != nil {
		ln1.Close()
		t.Skipf("127.0.0.2: %v", err)
	}
	m = NewMetrics(prometheus.NewRegistry())
	s = &Server{Decide: handlerDecider{}, CA: ca, Handler: echoRouter{}, Metrics: m, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	done := make(chan error, 2)
	go func() { done <- s.Serve(ln1) }()
	go func() { done <- s.Serve(ln2) }()
	t.Cleanup(func() {
		ln1.Close()
		ln2.Close()
		closed := make(chan struct{})
		go func() { s.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Error("the front's Close did not return: a connection's goroutine never ended")
		}
	})
	return ln1.Addr().String(), ln2.Addr().String(), ca, m, s
}

// sharedPortDialer dials from one local port, as a sandbox may for two
// connections to two destinations (SO_REUSEADDR: the four-tuples differ).
func sharedPortDialer(port int) *net.Dialer {
	return &net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port},
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1) })
			return serr
		},
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestTwoInterceptedConnectionsFromOneSourcePortKeepTheirOwnNames(t *testing.T) {
	addrA, addrB, ca, m, _ := twoAddressFront(t)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	port := freePort(t)
	d := sharedPortDialer(port)
	open := func(addr, name, proto string) *tls.Conn {
		raw, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c := tls.Client(raw, &tls.Config{ServerName: name, RootCAs: roots, NextProtos: []string{proto}})
		if err := c.Handshake(); err != nil {
			t.Fatal(err)
		}
		return c
	}
	// HTTP/1.1: connection A, made for api.test, then B, for b.test, from
	// the same source port. A request on A for b.test is misdirected.
	a := open(addrA, "api.test", "http/1.1")
	b := open(addrB, "b.test", "http/1.1")
	// One answer on B: its connection is in place on the front.
	fmt.Fprintf(b, "GET /x HTTP/1.1\r\nHost: b.test\r\n\r\n")
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	if resp, err := http.ReadResponse(bufio.NewReader(b), nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("b.test on its own connection: %v %v", resp, err)
	}
	fmt.Fprintf(a, "GET /x HTTP/1.1\r\nHost: b.test\r\n\r\n")
	a.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(a), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("a request for b.test on a connection made for api.test: %d %q, want 421", resp.StatusCode, body)
	}
	a.Close()
	b.Close()
	waitFor(t, func() bool { return testutil.ToFloat64(m.openConns) == 0 })

	// HTTP/2: two connections from one port, closed in turn, both end.
	a = open(addrA, "api.test", "h2")
	b = open(addrB, "b.test", "h2")
	a.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"))
	b.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"))
	time.Sleep(100 * time.Millisecond)
	a.Close()
	time.Sleep(100 * time.Millisecond)
	b.Close()
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(m.openConns) != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := testutil.ToFloat64(m.openConns); n != 0 {
		t.Errorf("%v connections still open after both closed", n)
	}
}
