package httpserve

import (
	"context"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// ListenTransparent listens on addr with IP_TRANSPARENT, so that connections
// TPROXY hands over are accepted whatever their destination; the accepted
// socket's local address is the destination the sandbox dialled.
//
// Accepted connections have TCP keepalives as Go gives them by default
// (15 s idle, 15 s between probes, 9 probes), set once on the listening
// socket, whose accepted sockets inherit them, instead of with four system
// calls on every accepted one.
func ListenTransparent(ctx context.Context, addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1, Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1); serr != nil {
				serr = fmt.Errorf("setting IP_TRANSPARENT (needs CAP_NET_ADMIN): %w", serr)
				return
			}
			for _, o := range []struct {
				level, opt, v int
				name          string
			}{
				{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1, "SO_KEEPALIVE"},
				{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15, "TCP_KEEPIDLE"},
				{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 15, "TCP_KEEPINTVL"},
				{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 9, "TCP_KEEPCNT"},
			} {
				if err := unix.SetsockoptInt(int(fd), o.level, o.opt, o.v); err != nil {
					serr = fmt.Errorf("setting %s: %w", o.name, err)
					return
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(ctx, "tcp4", addr)
	if err != nil {
		return nil, fmt.Errorf("listening transparently on %s: %w", addr, err)
	}
	return ln, nil
}
