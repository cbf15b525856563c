package handlers

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/forward"
)

// Forward is the handler of the _forward route: it sends a request for a
// host without a handler to the address the sandbox connected to, through
// the forwarder (router/forward). The router has already decided that the
// destination may be reached: see Protected, and the router's consistency
// check.
type Forward struct {
	// Destinations are never forwarded to unless an IP/CIDR allowed_hosts
	// entry names them (see Protected).
	Destinations policy.Destinations
	// DialTimeout bounds connecting upstream. Default 10s.
	DialTimeout time.Duration
	Metrics     *forward.Metrics
	Logger      *slog.Logger

	once   sync.Once
	fw     *forward.Forwarder
	locals localAddrs
}

var _ router.UpgradeCarrier = (*Forward)(nil)

// CarriesUpgrades implements router.UpgradeCarrier: an Upgrade request goes
// to the original destination like any other, and after its 101 the
// stream passes through unchanged.
func (f *Forward) CarriesUpgrades() bool { return true }

// ServeHTTP implements router.Handler.
func (f *Forward) ServeHTTP(w http.ResponseWriter, r *http.Request, env router.Env) error {
	f.once.Do(func() { f.fw = &forward.Forwarder{DialTimeout: f.DialTimeout, Metrics: f.Metrics, Logger: f.Logger} })
	t := forward.Target{Sandbox: env.Sandbox, Dest: env.Dest}
	if env.Conn != nil {
		t.Client = env.Conn
	}
	return upstreamError(f.fw.Forward(w, r, t))
}

// upstreamError turns the forwarder's errors into the router's: a failure
// before the response into the 502 the router answers with (already
// counted and logged by the forwarder), a response cut short into one the
// router cuts the connection for.
func upstreamError(err error) error {
	if err == nil {
		// Before fail is declared: errors.As takes its address, which would
		// put it on the heap for every request, successful ones included.
		return nil
	}
	var fail *forward.Failure
	switch {
	case errors.Is(err, forward.ErrAborted):
		return fmt.Errorf("%w: %w", router.ErrAborted, err)
	case errors.As(err, &fail):
		return &router.Error{Status: http.StatusBadGateway, Reason: "upstream " + fail.Kind, Err: fail.Err, Logged: true}
	}
	return err
}

// Protected says why a destination must not be forwarded to, or "": the
// protected destinations (policy.Destinations: loopback, link-local
// including metadata services, multicast, broadcast, 0.0.0.0/8, the pool,
// the virtual range) and the daemon host's own addresses, which only this
// layer sees, so that a sandbox cannot use the daemon to reach the host's
// services or other sandboxes.
func (f *Forward) Protected(a netip.Addr) string {
	a = a.Unmap()
	if why := f.Destinations.Protected(a); why != "" {
		return why
	}
	if f.locals.has(a) {
		return "an address of the daemon host"
	}
	return ""
}

// localAddrs caches the daemon host's own addresses for a second: cheap on
// the hot path, and a new host address is protected within a second.
type localAddrs struct {
	mu    sync.Mutex
	at    time.Time
	addrs map[netip.Addr]bool
}

func (l *localAddrs) has(a netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if time.Since(l.at) > time.Second || l.addrs == nil {
		m := map[netip.Addr]bool{}
		if as, err := net.InterfaceAddrs(); err == nil {
			for _, x := range as {
				if n, ok := x.(*net.IPNet); ok {
					if ip, ok := netip.AddrFromSlice(n.IP); ok {
						m[ip.Unmap()] = true
					}
				}
			}
		}
		l.addrs, l.at = m, time.Now()
	}
	return l.addrs[a]
}
