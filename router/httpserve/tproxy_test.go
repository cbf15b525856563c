package httpserve

import (
	"context"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// keepalive reads a connection's keepalive options.
func keepalive(t *testing.T, c net.Conn) [4]int {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v [4]int
	var gerr error
	rc.Control(func(fd uintptr) {
		for i, o := range [][2]int{{unix.SOL_SOCKET, unix.SO_KEEPALIVE}, {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE},
			{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL}, {unix.IPPROTO_TCP, unix.TCP_KEEPCNT}} {
			if v[i], gerr = unix.GetsockoptInt(int(fd), o[0], o[1]); gerr != nil {
				return
			}
		}
	})
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

func accepted(t *testing.T, ln net.Listener) net.Conn {
	t.Helper()
	t.Cleanup(func() { ln.Close() })
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestAcceptedConnectionsKeepGoDefaultKeepalives(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("IP_TRANSPARENT needs CAP_NET_ADMIN: run as root")
	}
	ln, err := ListenTransparent(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := keepalive(t, accepted(t, ln))
	// What Go sets on each accepted connection of a default listener: the
	// inherited options must be the same.
	plain, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	want := keepalive(t, accepted(t, plain))
	if got != want || got[0] == 0 {
		t.Errorf("accepted connection's keepalive (on, idle, interval, count) = %v, want Go's default %v", got, want)
	}
}
