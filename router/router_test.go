package router

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/interceptd/interceptd/internal/ratelimit"
	"github.com/interceptd/interceptd/metrics"
	"github.com/interceptd/interceptd/policy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var (
	sandboxIP = netip.MustParseAddr("10.213.0.2")
	virtualIP = netip.MustParseAddr("198.18.213.1")
	outsideIP = netip.MustParseAddr("192.0.2.10")
)

type testRouter struct {
	*Router
	fallback *Env
	metrics  *Metrics
}

// absentKeys stands for the KV handler of my.kv (whose own semantics the
// handlers' tests hold): every key is absent, so that a 404 "key not
// found" says the request reached the handler.
var absentKeys = HandlerFunc(func(w http.ResponseWriter, r *http.Request, env Env) error {
	return Errorf(http.StatusNotFound, "key not found")
})

// testConn is a connection without a transport: the addresses a request
// came from and to, and a cache of its own. A unit test of the router
// cannot use routertest.Conn, which imports the router.
type testConn struct {
	src, dst netip.AddrPort
	cache    ConnCache
	closed   bool
}

func (c *testConn) Addrs() (netip.AddrPort, netip.AddrPort) { return c.src, c.dst }
func (c *testConn) Cache() *ConnCache                       { return &c.cache }
func (c *testConn) WhenGone(func())                         {}
func (c *testConn) StopWhenGone() bool                      { return true }
func (c *testConn) Ambiguous() bool                         { return false }
func (c *testConn) Close() error                            { c.closed = true; return nil }

func newTestRouter(t *testing.T) *testRouter {
	t.Helper()
	return newTestRouterWith(t, policy.Policy{Internet: true}, nil)
}

// newTestRouterWith is newTestRouter with the sandbox's policy and an
// address book.
func newTestRouterWith(t *testing.T, pol policy.Policy, book *policy.AddrBook) *testRouter {
	t.Helper()
	tr := &testRouter{metrics: NewMetrics(prometheus.NewRegistry(), metrics.NewSandboxLabels(10))}
	tr.Router = New(Config{
		Hosts:   map[string]Route{"my.kv": {Name: "my.kv", Handler: absentKeys}},
		Virtual: map[netip.Addr]string{virtualIP: "my.kv"},
		Identify: func(a netip.Addr) (policy.Caller, bool) {
			return policy.Caller{Sandbox: "web1", Policy: policy.MustCompile(pol)}, a == sandboxIP
		},
		Verdicts: policy.Verdicts{Book: book},
		Fallback: HandlerFunc(func(w http.ResponseWriter, r *http.Request, env Env) error {
			tr.fallback = &env
			w.WriteHeader(http.StatusTeapot)
			return nil
		}),
		Metrics: tr.metrics,
		Logger:  slog.New(slog.DiscardHandler),
	})
	return tr
}

// do sends a request as if it arrived on an intercepted connection from src
// to dst.
func (tr *testRouter) do(method, host, target string, body string, src, dst netip.Addr) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	r.Host = host
	w := httptest.NewRecorder()
	tr.ServeConn(w, r, &testConn{src: netip.AddrPortFrom(src, 40000), dst: netip.AddrPortFrom(dst, 80)})
	return w
}

func TestDispatch(t *testing.T) {
	tests := []struct {
		name        string
		host        string
		src, dst    netip.Addr
		wantStatus  int
		wantFallbak bool
	}{
		{"the Host picks the handler", "my.kv", sandboxIP, virtualIP, http.StatusNotFound, false},
		{"Host matching ignores case, port and a trailing dot", "MY.Kv.:80", sandboxIP, outsideIP, http.StatusNotFound, false},
		{"without a Host the virtual address picks the handler", "", sandboxIP, virtualIP, http.StatusNotFound, false},
		{"an IP literal Host to a virtual address is that handler", "198.18.213.1", sandboxIP, virtualIP, http.StatusNotFound, false},
		{"a host without a handler goes to the fallback", "example.test", sandboxIP, outsideIP, http.StatusTeapot, true},
		{"a source that is not a sandbox is refused", "my.kv", outsideIP, virtualIP, http.StatusForbidden, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTestRouter(t)
			w := tr.do("GET", tt.host, "/absent", "", tt.src, tt.dst)
			if w.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %q", w.Code, tt.wantStatus, w.Body)
			}
			if (tr.fallback != nil) != tt.wantFallbak {
				t.Fatalf("fallback called = %v", tr.fallback != nil)
			}
			if tr.fallback != nil && (tr.fallback.Sandbox != "web1" || tr.fallback.Dest.Addr() != outsideIP) {
				t.Errorf("fallback env = %+v", *tr.fallback)
			}
		})
	}
}

func TestEveryRouteToAHandlerMeetsTheSamePolicy(t *testing.T) {
	book := &policy.AddrBook{}
	book.Learn("other", "x.evil.test", []netip.Addr{outsideIP}, time.Minute)
	tr := newTestRouterWith(t, policy.Policy{Internet: true, DeniedHosts: []string{"my.kv", "*.evil.test"}}, book)
	tests := []struct {
		name     string
		host     string
		dst      netip.Addr
		wantCode int
		wantWhy  string
	}{
		{"the denied handler by name", "my.kv", outsideIP, 403, "denied_host"},
		{"the denied handler by its address without a Host", "", virtualIP, 403, "denied_host"},
		{"the denied handler by its address with an IP Host", "198.18.213.1", virtualIP, 403, "denied_host"},
		{"the denied handler by its address with another Host", "anything", virtualIP, 403, "denied_host"},
		{"an address a denied name resolved to, with an IP Host", outsideIP.String(), outsideIP, 403, "denied_host"},
		{"the same with an IPv4-mapped Host", "[::ffff:" + outsideIP.String() + "]:80", outsideIP, 403, "denied_host"},
		{"the same without a Host", "", outsideIP, 403, "denied_host"},
		{"a private destination", "", netip.MustParseAddr("192.168.1.1"), 403, "private_destination"},
		{"CGNAT space", "", netip.MustParseAddr("100.64.0.1"), 403, "private_destination"},
		{"another address passes", "", netip.MustParseAddr("192.0.2.99"), http.StatusTeapot, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := tr.do("GET", tt.host, "/k", "", sandboxIP, tt.dst)
			if w.Code != tt.wantCode || w.Header().Get("X-Interceptd-Error") != tt.wantWhy {
				t.Errorf("%d %q, want %d %q; body %q", w.Code, w.Header().Get("X-Interceptd-Error"), tt.wantCode, tt.wantWhy, w.Body)
			}
		})
	}
}

func TestASandboxOverItsRequestRateGets429(t *testing.T) {
	tr := newTestRouter(t)
	tr.limit = ratelimit.New(5) // bursts of 10
	// The limiter's clock stands still unless the test moves it: a busy
	// machine's pauses earn no tokens.
	now := time.Unix(1000, 0)
	tr.now = func() time.Time { return now }
	served := func(n int) map[int]int {
		codes := map[int]int{}
		for range n {
			codes[tr.do("GET", "example.test", "/", "", sandboxIP, outsideIP).Code]++
		}
		return codes
	}
	if codes := served(30); codes[http.StatusTeapot] != 10 || codes[http.StatusTooManyRequests] != 20 {
		t.Fatalf("30 requests at once: codes %v, want 10 served (the burst) and 20 limited", codes)
	}
	w := tr.do("GET", "example.test", "/", "", sandboxIP, outsideIP)
	if w.Header().Get("Retry-After") != "1" || w.Header().Get("X-Interceptd-Error") != "rate_limited" {
		t.Errorf("429 without its reason: %v", w.Header())
	}
	if got := testutil.ToFloat64(tr.metrics.requests.WithLabelValues(LabelLimited, "429", "web1")); got != 21 {
		t.Errorf("limited requests counted %v, want 21", got)
	}
	now = now.Add(time.Second)
	if codes := served(10); codes[http.StatusTeapot] != 5 || codes[http.StatusTooManyRequests] != 5 {
		t.Errorf("10 requests a second later: codes %v, want 5 served (the rate) and 5 limited", codes)
	}
	tr.Forget("web1")
	if w := tr.do("GET", "example.test", "/", "", sandboxIP, outsideIP); w.Code != http.StatusTeapot {
		t.Errorf("after Forget: %d", w.Code)
	}
}

func TestRequestsIsEveryRequestCountedWhateverItsLabels(t *testing.T) {
	tr := newTestRouter(t)
	tr.do("GET", "my.kv", "/a", "", sandboxIP, virtualIP)
	tr.do("GET", "example.test", "/", "", sandboxIP, outsideIP)
	tr.do("GET", "my.kv", "/b", "", outsideIP, virtualIP) // not a sandbox: still a request
	if got := tr.metrics.Requests(); got != 3 {
		t.Errorf("Requests() = %d, want 3", got)
	}
}
