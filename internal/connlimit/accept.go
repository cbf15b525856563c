package connlimit

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"syscall"
	"time"
)

// Accept takes the next connection from ln for a server's accept loop. On a
// temporary failure (a timeout, or out of file descriptors: the limit this
// package guards) it backs off as net/http does, 5 ms doubling to 1 s,
// logging each retry, and tries again. Once closing reports true after a
// failed accept it returns nil, nil: the server was closed. Any other
// failure is returned, naming what was being served.
func Accept(ln net.Listener, closing func() bool, log *slog.Logger, what string) (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err == nil {
			return c, nil
		}
		if closing() {
			return nil, nil
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			log.Warn("accepting "+what+" connection", "error", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		return nil, fmt.Errorf("serving %s: %w", what, err)
	}
}
