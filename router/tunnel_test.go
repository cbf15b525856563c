package router_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/interceptd/interceptd/metrics"
	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/handlers"
	"github.com/interceptd/interceptd/router/routertest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// caller is who a source address is and under which policy, as the
// sandbox manager would say it now.
type caller struct {
	sandbox string
	pol     *policy.Compiled // one pointer per policy, as the manager keeps it
	known   bool
}

func compiled(p policy.Policy) *policy.Compiled { return policy.MustCompile(p) }

// tunnelRouter serves a router whose host "p" is a Proxy to an upstream
// that upgrades to "echo" and echoes; who is the sandbox manager's word on
// each loopback source, changeable while tunnels are open. It returns the
// router's address, the router, its metrics and the channel on which the
// upstream reports each upgraded connection's end.
func tunnelRouter(t *testing.T, who func(netip.Addr) caller) (string, *router.Router, *router.Metrics, <-chan struct{}) {
	t.Helper()
	ended := make(chan struct{}, 8)
	up := routertest.RawUpstream(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		if r, err := http.ReadRequest(br); err != nil || r.Header.Get("Upgrade") != "echo" {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		io.Copy(c, br)
		ended <- struct{}{}
	})
	p := &handlers.Proxy{Name: "p", Upstream: &url.URL{Scheme: "http", Host: up.String()}, Logger: slog.New(slog.DiscardHandler)}
	m := router.NewMetrics(prometheus.NewRegistry(), metrics.NewSandboxLabels(10))
	addr, rt := routertest.Serve(t, router.Config{
		Hosts: map[string]router.Route{"p": {Name: "p", Handler: p}},
		Identify: func(a netip.Addr) (policy.Caller, bool) {
			c := who(a)
			return policy.Caller{Sandbox: c.sandbox, Policy: c.pol}, c.known
		},
		Metrics: m,
		Logger:  slog.New(slog.DiscardHandler),
	})
	return addr, rt, m, ended
}

// upgrade opens a tunnel to host through the router at addr, from the
// loopback address src.
func upgrade(t *testing.T, src, addr, host string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c := routertest.Dial(t, src, addr, 10*time.Second)
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n", host)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrading: %v %v", resp, err)
	}
	if err := echoes(c, br, "before"); err != nil {
		t.Fatalf("before any change: %v", err)
	}
	return c, br
}

// echoes sends a line through a tunnel and reads it back within a second.
func echoes(c net.Conn, br *bufio.Reader, msg string) error {
	c.SetDeadline(time.Now().Add(time.Second))
	defer c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, msg+"\n")
	got, err := br.ReadString('\n')
	if err != nil {
		return err
	}
	if got != msg+"\n" {
		return fmt.Errorf("echoed %q", got)
	}
	return nil
}

// cut reports whether the tunnel's sandbox side ends within a second.
func cut(c net.Conn, br *bufio.Reader) bool {
	c.SetReadDeadline(time.Now().Add(time.Second))
	_, err := br.ReadByte()
	return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

func TestAPolicyChangeCutsTheTunnelsItNowDeniesThroughTheRoutersOwnDecision(t *testing.T) {
	open := compiled(policy.Policy{Internet: true})
	tests := []struct {
		name    string
		now     caller // the manager's word after the change
		wantCut bool
		reason  string
	}{
		{"a deny of the tunnel's host cuts it", caller{"loop", compiled(policy.Policy{Internet: true, DeniedHosts: []string{"p"}}), true}, true, policy.ReasonDenied},
		{"a deny of another host cuts nothing", caller{"loop", compiled(policy.Policy{Internet: true, DeniedHosts: []string{"q"}}), true}, false, ""},
		// As for a request: an allowlist and internet off never block the
		// operator's handlers, so they cut no tunnel to one.
		{"an allowlist without the handler's host cuts nothing", caller{"loop", compiled(policy.Policy{AllowedHosts: []string{"q"}}), true}, false, ""},
		{"internet off cuts nothing to a handler", caller{"loop", compiled(policy.Policy{}), true}, false, ""},
		{"a source that is no sandbox any more is cut", caller{"", open, false}, true, policy.ReasonUnknown},
		{"a source that is another sandbox now is cut", caller{"other", open, true}, true, router.CutSandboxDeleted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var now atomic.Pointer[caller]
			now.Store(&caller{"loop", open, true})
			addr, rt, m, upEnded := tunnelRouter(t, func(netip.Addr) caller { return *now.Load() })
			c, br := upgrade(t, "", addr, "p")
			if got := testutil.ToFloat64(router.TunnelsOpen(m)); got != 1 {
				t.Errorf("open tunnels: %v, want 1", got)
			}
			now.Store(&tt.now)
			n := rt.Redecide("loop")
			if (n == 1) != tt.wantCut {
				t.Fatalf("cut %d tunnels, want cut %v", n, tt.wantCut)
			}
			if !tt.wantCut {
				if err := echoes(c, br, "after"); err != nil {
					t.Errorf("the tunnel after the change: %v", err)
				}
				return
			}
			if !cut(c, br) {
				t.Error("the sandbox's side is still open")
			}
			select {
			case <-upEnded:
			case <-time.After(time.Second):
				t.Error("the upstream's side is still open")
			}
			if got := testutil.ToFloat64(router.TunnelsCut(m, tt.reason)); got != 1 {
				t.Errorf("cuts with reason %s: %v, want 1", tt.reason, got)
			}
			// The proxy's goroutine ends the tunnel again once it notices:
			// the gauge must not count it twice.
			deadline := time.Now().Add(time.Second)
			for testutil.ToFloat64(router.TunnelsOpen(m)) != 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond)
			if got := testutil.ToFloat64(router.TunnelsOpen(m)); got != 0 {
				t.Errorf("open tunnels after the cut: %v, want 0", got)
			}
		})
	}
}

func TestForgettingASandboxCutsItsTunnelsAndNoOneElses(t *testing.T) {
	open := compiled(policy.Policy{Internet: true})
	addr, rt, m, _ := tunnelRouter(t, func(a netip.Addr) caller {
		if a == netip.MustParseAddr("127.0.0.2") {
			return caller{"b", open, true}
		}
		return caller{"a", open, true}
	})
	ca, bra := upgrade(t, "127.0.0.1", addr, "p")
	cb, brb := upgrade(t, "127.0.0.2", addr, "p")
	rt.Forget("a")
	if !cut(ca, bra) {
		t.Error("the forgotten sandbox's tunnel is still open")
	}
	if err := echoes(cb, brb, "after"); err != nil {
		t.Errorf("the other sandbox's tunnel: %v", err)
	}
	if got := testutil.ToFloat64(router.TunnelsCut(m, router.CutSandboxDeleted)); got != 1 {
		t.Errorf("cuts: %v, want 1", got)
	}
}

func TestAPolicyChangeBetweenTheDecisionAndTheTunnelsRegistrationStillCutsIt(t *testing.T) {
	// The first lookup is the request's decision; the policy changes (and
	// Redecide finds nothing yet) before the tunnel is registered.
	var lookups atomic.Int32
	before := caller{"loop", compiled(policy.Policy{Internet: true}), true}
	after := caller{"loop", compiled(policy.Policy{Internet: true, DeniedHosts: []string{"p"}}), true}
	addr, _, m, _ := tunnelRouter(t, func(netip.Addr) caller {
		if lookups.Add(1) == 1 {
			return before
		}
		return after
	})
	c := routertest.Dial(t, "", addr, 5*time.Second)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: p\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	got, _ := io.ReadAll(c)
	if strings.HasPrefix(string(got), "HTTP/1.1 101") {
		t.Errorf("the tunnel opened under the old policy: %q", got)
	}
	if n := testutil.ToFloat64(router.TunnelsCut(m, policy.ReasonDenied)); n != 1 {
		t.Errorf("cuts: %v, want 1 (got %q, lookups %d)", n, got, lookups.Load())
	}
}

func TestASplicedTLSConnectionIsATunnelDecidedAgainOnAPolicyChange(t *testing.T) {
	var pol atomic.Pointer[policy.Compiled]
	pol.Store(compiled(policy.Policy{Internet: true}))
	m := router.NewMetrics(prometheus.NewRegistry(), metrics.NewSandboxLabels(10))
	rt := router.New(router.Config{
		Identify: func(a netip.Addr) (policy.Caller, bool) { return policy.Caller{Sandbox: "s", Policy: pol.Load()}, true },
		Metrics:  m,
		Logger:   slog.New(slog.DiscardHandler),
	})
	// No SNI: the address decides, and internet on opens it.
	v := rt.DecideTLS(netip.MustParseAddrPort("10.213.0.2:40000"), netip.MustParseAddrPort("203.0.113.10:443"), "")
	if !v.Allowed() || v.Track == nil {
		t.Fatalf("verdict %+v (Track set: %v), want an allowed passthrough to track", v.Decision, v.Track != nil)
	}
	cuts := 0
	ended := v.Track(func() { cuts++ })
	defer ended()
	if got := testutil.ToFloat64(router.TunnelsOpen(m)); got != 1 {
		t.Errorf("open tunnels: %v, want 1", got)
	}
	if n := rt.Redecide("s"); n != 0 || cuts != 0 {
		t.Fatalf("under the same policy: %d cut", cuts)
	}
	pol.Store(compiled(policy.Policy{Internet: false}))
	if n := rt.Redecide("s"); n != 1 || cuts != 1 {
		t.Errorf("after internet went off: Redecide said %d, cut called %d times; want 1", n, cuts)
	}
}

func TestASplicedConnectionDecidedAgainCostsTheSandboxNoDNSBudget(t *testing.T) {
	// The name's answer lives a second; the sandbox's budget allows one
	// lookup, spent by the connection's own check.
	dst := netip.MustParseAddrPort("203.0.113.20:443")
	var asked, charged atomic.Int32
	pol := compiled(policy.Policy{Internet: true})
	rt := router.New(router.Config{
		Identify: func(a netip.Addr) (policy.Caller, bool) { return policy.Caller{Sandbox: "s", Policy: pol}, true },
		Verdicts: policy.Verdicts{
			Book: &policy.AddrBook{},
			Resolve: func(string) ([]netip.Addr, time.Duration, error) {
				asked.Add(1)
				return []netip.Addr{dst.Addr()}, 0, nil
			},
			Charge: func(policy.Caller) bool { return charged.Add(1) == 1 },
		},
		Metrics: router.NewMetrics(prometheus.NewRegistry(), metrics.NewSandboxLabels(10)),
		Logger:  slog.New(slog.DiscardHandler),
	})
	v := rt.DecideTLS(netip.MustParseAddrPort("10.213.0.2:40001"), dst, "cdn.example")
	if !v.Allowed() || v.Track == nil {
		t.Fatalf("verdict %+v, want an allowed passthrough", v.Decision)
	}
	cuts := 0
	defer v.Track(func() { cuts++ })()
	time.Sleep(1100 * time.Millisecond) // the answer has expired
	// An operator's policy change decides it again: the name is looked up
	// afresh, on no budget of the sandbox's, and the connection stays.
	if n := rt.Redecide("s"); n != 0 || cuts != 0 {
		t.Errorf("a policy change cut %d (%d) for want of DNS budget", n, cuts)
	}
	if asked.Load() < 2 || charged.Load() != 1 {
		t.Errorf("asked %d, charged %d; want the second lookup uncharged", asked.Load(), charged.Load())
	}
	// The sandbox's own next connection to a name it never resolved is
	// charged, and over the budget refused.
	if v := rt.DecideTLS(netip.MustParseAddrPort("10.213.0.2:40002"), netip.MustParseAddrPort("203.0.113.21:443"), "fresh.example"); v.Allowed() {
		t.Errorf("over the budget: %+v", v.Decision)
	}
}
