// Package connlimit caps the connections one source address (one sandbox)
// may hold open on a listener, so that a sandbox holding idle or trickling
// connections (slowloris) cannot use up the file descriptors and goroutines
// the others need. The router's intercepted HTTP and the DNS shim's TCP
// listener each wrap their listener with one.
package connlimit

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
)

// listener resets a connection over its source's cap at once, before any
// byte is read.
type listener struct {
	net.Listener
	max      func(netip.Addr) int
	rejected func()

	mu   sync.Mutex
	open map[netip.Addr]int
}

// PerSource wraps ln so that each source address holds at most max
// connections; max <= 0 means no limit (ln itself). A connection over the cap
// is reset (not closed gracefully, so that it costs the daemon nothing
// further) and Accept goes on to the next one; rejected, if not nil, is
// called for each. A connection frees its place when it is closed.
func PerSource(ln net.Listener, max int, rejected func()) net.Listener {
	if max <= 0 {
		return ln
	}
	return PerSourceFunc(ln, func(netip.Addr) int { return max }, rejected)
}

// PerSourceFunc is PerSource with each source's cap asked of max when one
// of its connections comes (a sandbox's own limit, or a default a reload
// may change); a cap <= 0 means no limit for that connection. Connections
// are counted whatever the cap, so that a cap set later counts those
// already open.
func PerSourceFunc(ln net.Listener, max func(netip.Addr) int, rejected func()) net.Listener {
	return &listener{Listener: ln, max: max, rejected: rejected, open: map[netip.Addr]int{}}
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := source(c.RemoteAddr())
		max := l.max(src)
		l.mu.Lock()
		if max > 0 && l.open[src] >= max {
			l.mu.Unlock()
			// Counted before the reset: whoever sees the reset sees it
			// counted.
			if l.rejected != nil {
				l.rejected()
			}
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0) // a reset, not a slow close
			}
			c.Close()
			continue
		}
		l.open[src]++
		l.mu.Unlock()
		return &conn{Conn: c, release: func() { l.release(src) }}, nil
	}
}

func (l *listener) release(src netip.Addr) {
	l.mu.Lock()
	if l.open[src]--; l.open[src] <= 0 {
		delete(l.open, src)
	}
	l.mu.Unlock()
}

// source is the address a connection is counted under: its remote IP,
// IPv4-mapped addresses unmapped. Connections whose address is not TCP or
// UDP share the zero address.
func source(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// conn frees its place in the count on its first Close.
type conn struct {
	net.Conn
	once    sync.Once
	release func()
}

// NetConn returns the connection counted, as tls.Conn's NetConn does: for
// io.Copy between two TCP sockets, which splices only when it sees them
// (the TLS front's passthrough). Close this conn, not that one, to free the
// place.
func (c *conn) NetConn() net.Conn { return c.Conn }

// CloseWrite half-closes, for a graceful close (the router's lingerClose).
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// SyscallConn lets the router wait for a request without a buffer.
func (c *conn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

func (c *conn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
