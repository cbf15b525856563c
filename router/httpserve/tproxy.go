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
func ListenTransparent(ctx context.Context, addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
		})
		if err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("setting IP_TRANSPARENT (needs CAP_NET_ADMIN): %w", serr)
		}
		return nil
	}}
	ln, err := lc.Listen(ctx, "tcp4", addr)
	if err != nil {
		return nil, fmt.Errorf("listening transparently on %s: %w", addr, err)
	}
	return ln, nil
}
