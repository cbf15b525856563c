package worker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/worker/jsrt"
)

// Fetcher serves the scripts' fetch(). A worker is trusted: it reaches the
// network directly, but never a destination the daemon closes (protected or
// private) unless the config opens it. fetch() of the incoming request's own
// URL goes to the address the sandbox dialled, after the same checks as a
// forward (Origin).
type Fetcher struct {
	// Closed says why an address may not be fetched ("" when it may).
	Closed func(netip.Addr) string
	// Resolve resolves a name through the daemon's resolvers; nil uses the
	// system's.
	Resolve func(name string) ([]netip.Addr, time.Duration, error)
	// Origin decides whether the sandbox's request may go on to the
	// address it dialled (policy.Verdicts as for a forward) and returns
	// why not, or "".
	Origin func(env router.Env, host string) (reason string)
	// Virtual reports a handler's virtual address: a fetch of the incoming
	// request that dialled one goes to the network by its URL, as there is
	// no original destination behind it.
	Virtual func(netip.Addr) bool
	// Forward carries a request to the address the sandbox dialled (the
	// daemon's _forward handler), for passThroughOnException.
	Forward router.Handler
	// TLS verifies https upstreams; nil means the system roots.
	TLS *tls.Config

	once   sync.Once
	client *http.Client // the network
	origin *http.Client // to env.Dest
}

type destKey struct{}

func (f *Fetcher) init() {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	f.client = &http.Client{
		Transport: &http.Transport{
			DialContext:         f.dial(d),
			TLSClientConfig:     f.TLS,
			ForceAttemptHTTP2:   true,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
			Proxy:               nil,
		},
		// Redirects are followed, as Workers' default redirect: "follow"
		// does (up to 10 hops): every hop dials through dial, so none
		// reaches a closed destination. "manual" gives the script the 3xx;
		// "error" fails the fetch on one.
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			switch jsrt.RedirectMode(req.Context()) {
			case "manual":
				return http.ErrUseLastResponse
			case "error":
				return errors.New(`a redirect, and the request's redirect mode is "error"`)
			}
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			return nil
		},
	}
	f.origin = &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, ctx.Value(destKey{}).(netip.AddrPort).String())
			},
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
			Proxy:               nil,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// errClosed is a fetch to a destination the daemon closes.
var errClosed = errors.New("destination closed to workers")

// dial resolves through the daemon and refuses closed addresses, whatever
// name led to them.
func (f *Fetcher) dial(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		var addrs []netip.Addr
		if a, err := netip.ParseAddr(host); err == nil {
			addrs = []netip.Addr{a.Unmap()}
		} else if f.Resolve != nil {
			if addrs, _, err = f.Resolve(host); err != nil {
				return nil, fmt.Errorf("resolving %s: %w", host, err)
			}
		} else {
			ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
			if err != nil {
				return nil, err
			}
			for _, a := range ips {
				addrs = append(addrs, a.Unmap())
			}
		}
		var errs []error
		for _, a := range addrs {
			if why := f.Closed(a); why != "" {
				errs = append(errs, fmt.Errorf("%w: %s is %s", errClosed, a, why))
				continue
			}
			c, err := d.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
		}
		if len(errs) == 0 {
			return nil, fmt.Errorf("%s has no address", host)
		}
		return nil, errors.Join(errs...)
	}
}

// fetch is the runtime's fetch(): counted against the request's
// subrequest limit; the incoming request's own URL goes to its origin.
func (inst *Instance) fetch(ctx context.Context, req *http.Request) (*http.Response, error) {
	inv := inst.req.Load()
	w := inst.w
	f := w.cfg.Fetch
	if f == nil {
		return nil, errors.New("fetch is not available to this worker")
	}
	f.once.Do(f.init)
	if inv != nil {
		inv.subrequests++
		if inv.subrequests > w.cfg.Limits.Subrequests {
			w.cfg.Metrics.subrequest(w.cfg.Name, "limit")
			return nil, fmt.Errorf("this request has made its %d subrequests: the limit", w.cfg.Limits.Subrequests)
		}
	}
	virtual := inv != nil && f.Virtual != nil && f.Virtual(inv.env.Dest.Addr())
	if inv != nil && !virtual && req.URL.Scheme == "http" && strings.EqualFold(req.URL.Host, hostOf(inv.r, inv.env)) {
		// The request the sandbox made, sent on: to the address it dialled,
		// as a forward would be, and only if a forward would be allowed.
		if f.Origin != nil {
			if why := f.Origin(inv.env, req.URL.Hostname()); why != "" {
				w.cfg.Metrics.subrequest(w.cfg.Name, "refused")
				return nil, fmt.Errorf("fetch to the original destination refused: %s", why)
			}
		}
		resp, err := f.origin.Do(req.WithContext(context.WithValue(req.Context(), destKey{}, inv.env.Dest)))
		w.cfg.Metrics.subrequest(w.cfg.Name, outcomeOf(err))
		return resp, err
	}
	resp, err := f.client.Do(req)
	w.cfg.Metrics.subrequest(w.cfg.Name, outcomeOf(err))
	return resp, err
}

func outcomeOf(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, errClosed):
		return "refused"
	}
	return "error"
}

// passThrough forwards the sandbox's request as if no handler had matched
// (ctx.passThroughOnException), after the forward checks.
func (f *Fetcher) passThrough(w http.ResponseWriter, r *http.Request, env router.Env) error {
	if f.Origin != nil {
		if why := f.Origin(env, hostOf(r, env)); why != "" {
			return router.Errorf(http.StatusForbidden, "passThroughOnException: the forward is refused: %s", why)
		}
	}
	if f.Forward == nil {
		return router.Errorf(http.StatusBadGateway, "passThroughOnException: no forward here")
	}
	return f.Forward.ServeHTTP(w, r, env)
}
