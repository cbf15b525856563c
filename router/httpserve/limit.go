package httpserve

import (
	"net"

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
