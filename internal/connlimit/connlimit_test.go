package connlimit

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// dialFrom connects to ln from the loopback address src; nil if the
// connection was reset before the dial returned.
func dialFrom(t *testing.T, ln net.Listener, src string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: time.Second}
	c, err := d.Dial("tcp4", ln.Addr().String())
	if errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	if err != nil {
		t.Fatalf("dialling from %s: %v", src, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// wasReset tells whether the server reset c (rather than holding it open).
func wasReset(t *testing.T, c net.Conn) bool {
	t.Helper()
	if c == nil {
		return true // at the dial
	}
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return false
	case errors.Is(err, syscall.ECONNRESET):
		return true
	}
	t.Fatalf("reading: %v, want a reset or nothing", err)
	return false
}

func TestEachSourceHoldsAtMostItsCap(t *testing.T) {
	tests := []struct {
		name      string
		max       int
		dials     []string // source addresses, in order
		closeNth  int      // the server closes its side of this accepted connection (-1: none)
		wantReset []bool
		caps      map[string]int // each source's own cap (PerSourceFunc), in place of max
	}{
		{"a source within its cap is served", 2, []string{"127.0.0.1", "127.0.0.1"}, -1, []bool{false, false}, nil},
		{"a source over its cap is reset at once", 2, []string{"127.0.0.1", "127.0.0.1", "127.0.0.1"}, -1, []bool{false, false, true}, nil},
		{"another source at the same time is served", 1, []string{"127.0.0.1", "127.0.0.2", "127.0.0.1", "127.0.0.2"}, -1, []bool{false, false, true, true}, nil},
		{"a closed connection frees its place", 1, []string{"127.0.0.1", "127.0.0.1"}, 0, []bool{false, false}, nil},
		{"no cap when max is 0", 0, []string{"127.0.0.1", "127.0.0.1", "127.0.0.1"}, -1, []bool{false, false, false}, nil},
		{"each source is held to its own cap", 0, []string{"127.0.0.1", "127.0.0.2", "127.0.0.2", "127.0.0.1", "127.0.0.3", "127.0.0.3"}, -1,
			[]bool{false, false, false, true, false, false}, map[string]int{"127.0.0.1": 1, "127.0.0.2": 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inner, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var rejected atomic.Int64
			ln := PerSource(inner, tt.max, func() { rejected.Add(1) })
			if tt.caps != nil {
				ln = PerSourceFunc(inner, func(a netip.Addr) int { return tt.caps[a.String()] }, func() { rejected.Add(1) })
			}
			t.Cleanup(func() { ln.Close() })
			accepted := make(chan net.Conn, len(tt.dials))
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					accepted <- c
				}
			}()
			t.Cleanup(func() {
				for len(accepted) > 0 {
					(<-accepted).Close()
				}
			})
			n := 0
			for i, src := range tt.dials {
				c := dialFrom(t, ln, src)
				if got := wasReset(t, c); got != tt.wantReset[i] {
					t.Errorf("connection %d from %s: reset %v, want %v", i, src, got, tt.wantReset[i])
				}
				if !tt.wantReset[i] {
					var sc net.Conn
					select {
					case sc = <-accepted:
					case <-time.After(time.Second):
						t.Fatalf("connection %d from %s was not accepted", i, src)
					}
					if n == tt.closeNth {
						sc.Close()
						sc.Close() // twice: frees one place, not two
					} else {
						accepted <- sc // keep it open, for the cleanup
					}
					n++
				}
			}
			want := 0
			for _, r := range tt.wantReset {
				if r {
					want++
				}
			}
			if got := rejected.Load(); got != int64(want) {
				t.Errorf("%d rejections counted, want %d", got, want)
			}
		})
	}
}

func TestAConnectionKeepsWhatTheRouterNeedsOfIt(t *testing.T) {
	inner, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := PerSource(inner, 1, nil)
	defer ln.Close()
	dialFrom(t, ln, "127.0.0.1") // completes in the kernel's backlog
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(interface{ CloseWrite() error }); !ok {
		t.Error("no CloseWrite: the router cannot close gracefully")
	}
	if sc, ok := c.(syscall.Conn); !ok {
		t.Error("not a syscall.Conn: the router cannot wait for a request without a buffer")
	} else if _, err := sc.SyscallConn(); err != nil {
		t.Errorf("SyscallConn: %v", err)
	}
}

func TestASourceIsCountedByItsIPv4AddressHoweverItIsSpelled(t *testing.T) {
	tests := []struct {
		name string
		addr net.Addr
		want string
	}{
		{"a TCP peer", &net.TCPAddr{IP: net.ParseIP("10.213.0.6"), Port: 40000}, "10.213.0.6"},
		{"an IPv4-mapped TCP peer on a dual-stack listener", &net.TCPAddr{IP: net.ParseIP("::ffff:10.213.0.6"), Port: 40001}, "10.213.0.6"},
		{"a UDP peer", &net.UDPAddr{IP: net.ParseIP("::ffff:10.213.0.6"), Port: 53}, "10.213.0.6"},
		{"an IPv6 peer stays itself", &net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 1}, "2001:db8::1"},
		{"a peer of no IP shares the zero address", &net.UnixAddr{Name: "@x", Net: "unix"}, "invalid IP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := source(tt.addr).String(); got != tt.want {
				t.Errorf("source(%v) = %s, want %s", tt.addr, got, tt.want)
			}
		})
	}
}
