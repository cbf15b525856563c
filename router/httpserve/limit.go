package httpserve

import (
	"net"
	"net/netip"

	"github.com/interceptd/interceptd/internal/connlimit"
)

// LimitPerSource wraps ln so that each source address (one sandbox) holds at
// most max intercepted connections, so a sandbox holding idle or trickling
// connections (slowloris) cannot use up what the others need; max <= 0 means
// no limit. A connection over the cap is reset at once, before any byte is
// read, and counted in interceptd_router_connections_rejected_total.
func LimitPerSource(ln net.Listener, max int, m *Metrics) net.Listener {
	return connlimit.PerSource(ln, max, m.rejectedConn)
}

// LimitPerSourceFunc is LimitPerSource with each source's cap asked of max
// (a sandbox's own limit, or the configured default): connlimit.PerSourceFunc.
func LimitPerSourceFunc(ln net.Listener, max func(netip.Addr) int, m *Metrics) net.Listener {
	return connlimit.PerSourceFunc(ln, max, m.rejectedConn)
}
