package tlsfront

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"io"
	"math"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// rawHello is a crypto/tls ClientHello for name, as records.
func rawHello(t testing.TB, name string) []byte {
	t.Helper()
	a, b := net.Pipe()
	got := make(chan []byte, 1)
	go func() {
		buf := make([]byte, 16<<10)
		n, _ := b.Read(buf)
		got <- buf[:n]
		b.Close()
	}()
	tls.Client(a, &tls.Config{ServerName: name}).Handshake()
	a.Close()
	return <-got
}

// exchange is what an upstream does with one passed-through connection in
// these tests: it reads the hello and want bytes more, then sends answer
// and, if half, half-closes and keeps reading what the client sends after
// its own end.
type exchange struct {
	ln     net.Listener
	hello  int
	result chan []byte // everything the upstream read
}

func upstreamSending(t testing.TB, answer []byte, half bool) *exchange {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	e := &exchange{ln: ln, result: make(chan []byte, 1)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var got []byte
				if half {
					c.Write(answer)
					c.(*net.TCPConn).CloseWrite()
					got, _ = io.ReadAll(c)
				} else {
					done := make(chan struct{})
					go func() { got, _ = io.ReadAll(c); close(done) }()
					c.Write(answer)
					<-done
				}
				e.result <- got
			}()
		}
	}()
	return e
}

func TestPassedThroughBytesArriveWholeBothWaysAndAreCounted(t *testing.T) {
	for _, tc := range []struct {
		name    string
		first   int64
		in, out int
	}{
		{"a handshake-sized exchange, by reads and writes", 0, 700, 5000},
		{"a bulk exchange, as served: the sandbox's bytes spliced after the first ones, the upstream's copied", 0, 3 << 20, 5 << 20},
		{"a bulk exchange copied both ways after the same first bytes", 64 << 10, 3 << 20, 5 << 20},
		{"an exchange spliced from the first byte", -1, 300 << 10, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hello := rawHello(t, "bulk.test")
			fromClient := append(append([]byte(nil), hello...), random(t, tc.in)...)
			answer := random(t, tc.out)
			up := upstreamSending(t, answer, false)
			addr, m, _ := frontCopying(t, &decider{}, up.ln.Addr().String(), 0, tc.first)
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			go func() {
				conn.Write(fromClient)
				conn.(*net.TCPConn).CloseWrite()
			}()
			conn.SetReadDeadline(time.Now().Add(20 * time.Second))
			back, err := io.ReadAll(conn)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(back, answer) {
				t.Errorf("the client got %d bytes, not the upstream's %d", len(back), len(answer))
			}
			if got := <-up.result; !bytes.Equal(got, fromClient) {
				t.Errorf("the upstream got %d bytes, not the client's %d (the hello first)", len(got), len(fromClient))
			}
			waitFor(t, func() bool { return testutil.ToFloat64(m.spliced.WithLabelValues("out")) > 0 })
			if in, out := testutil.ToFloat64(m.spliced.WithLabelValues("in")), testutil.ToFloat64(m.spliced.WithLabelValues("out")); in != float64(len(fromClient)) || out != float64(len(answer)) {
				t.Errorf("spliced bytes in %v, out %v; want %d, %d", in, out, len(fromClient), len(answer))
			}
		})
	}
}

func TestTheUpstreamsEndPassesThroughWhileTheClientGoesOnSending(t *testing.T) {
	for _, first := range []int64{0, -1} {
		answer := random(t, 2000)
		up := upstreamSending(t, answer, true)
		addr, _, _ := frontCopying(t, &decider{}, up.ln.Addr().String(), 0, first)
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		hello := rawHello(t, "half.test")
		conn.Write(hello)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		// The upstream's end reaches the client while the client's side
		// is still open: the client reads to its end, then sends more.
		back, err := io.ReadAll(conn)
		if err != nil || !bytes.Equal(back, answer) {
			t.Fatalf("copyFirst %d: the client read %d bytes (%v), want the upstream's %d and its end", first, len(back), err, len(answer))
		}
		after := random(t, 100<<10)
		if _, err := conn.Write(after); err != nil {
			t.Fatalf("copyFirst %d: writing after the upstream's end: %v", first, err)
		}
		conn.(*net.TCPConn).CloseWrite()
		if got := <-up.result; !bytes.Equal(got, append(hello, after...)) {
			t.Errorf("copyFirst %d: the upstream got %d bytes, want %d", first, len(got), len(hello)+len(after))
		}
	}
}

func TestAResetByTheUpstreamCutsTheClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Read(make([]byte, 1024))
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}()
	addr, _, _ := front(t, &decider{}, ln.Addr().String(), 0)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write(rawHello(t, "reset.test"))
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadAll(conn)
	// The front closes both when a copy fails; the client sees an end or
	// a reset, but never waits.
	if err != nil && !isReset(err) {
		t.Errorf("client read: %v, want an end or a reset", err)
	}
}

func isReset(err error) bool {
	var errno syscall.Errno
	for e := err; e != nil; {
		if en, ok := e.(syscall.Errno); ok {
			errno = en
			break
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			break
		}
		e = u.Unwrap()
	}
	return errno == syscall.ECONNRESET
}

func random(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTheUpstreamsDirectionIsCopiedAndTheSandboxsSplicedAfterItsFirstBytes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		copyFirst int64
		in, out   int64
	}{
		{"as served", 0, passFirst, toSandboxFirst},
		{"a test's first bytes apply to both directions", 1000, 1000, 1000},
		{"a test's splice from the first byte applies to both", -1, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &Server{copyFirst: tc.copyFirst}
			if in, out := s.firstBytes(); in != tc.in || out != tc.out {
				t.Errorf("copied first: to the upstream %d, to the sandbox %d; want %d, %d", in, out, tc.in, tc.out)
			}
		})
	}
	// The sandbox's receiver is on this host: spliced pages cost it more
	// than copied ones (toSandboxFirst's comment), so nothing of the
	// upstream's direction is ever spliced.
	if toSandboxFirst != math.MaxInt64 {
		t.Errorf("toSandboxFirst is %d: the upstream's direction would be spliced after it", int64(toSandboxFirst))
	}
}
