package router

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
)

// limitListener caps the connections one source address (one sandbox) may
// hold open, so a sandbox holding idle or trickling connections (slowloris)
// cannot use up what the others need. A connection over the cap is reset at
// once, before any byte is read.
type limitListener struct {
	net.Listener
	max     int
	metrics *Metrics

	mu   sync.Mutex
	open map[netip.Addr]int
}

// LimitPerSource wraps ln so that each source address holds at most max
// connections; max <= 0 means no limit.
func LimitPerSource(ln net.Listener, max int, m *Metrics) net.Listener {
	if max <= 0 {
		return ln
	}
	return &limitListener{Listener: ln, max: max, metrics: m, open: map[netip.Addr]int{}}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := addrPort(c.RemoteAddr()).Addr()
		l.mu.Lock()
		if l.open[src] >= l.max {
			l.mu.Unlock()
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0) // a reset, not a slow close
			}
			c.Close()
			l.metrics.rejectedConn()
			continue
		}
		l.open[src]++
		l.mu.Unlock()
		return &limitConn{Conn: c, release: func() { l.release(src) }}, nil
	}
}

func (l *limitListener) release(src netip.Addr) {
	l.mu.Lock()
	if l.open[src]--; l.open[src] <= 0 {
		delete(l.open, src)
	}
	l.mu.Unlock()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

// CloseWrite half-closes, for a graceful close (see leanConn.lingerClose).
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// SyscallConn lets the router wait for a request without a buffer.
func (c *limitConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

func (c *limitConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
