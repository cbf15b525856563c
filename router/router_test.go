package router

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/internal/ratelimit"
	"github.com/interceptd/interceptd/metrics"
	"github.com/interceptd/interceptd/store"
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

func newTestRouter(t *testing.T) *testRouter {
	t.Helper()
	return newTestRouterWith(t, policy.Policy{Internet: true}, nil)
}

// newTestRouterWith is newTestRouter with the sandbox's policy and an
// address book.
func newTestRouterWith(t *testing.T, pol policy.Policy, book *policy.AddrBook) *testRouter {
	t.Helper()
	db, err := store.Open(t.TempDir(), &store.Options{Limits: store.Limits{MaxValueBytes: 16}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	tr := &testRouter{metrics: NewMetrics(prometheus.NewRegistry(), metrics.NewSandboxLabels(10))}
	tr.Router = New(Config{
		Hosts:   map[string]Route{"my.kv": {Name: "my.kv", Handler: &KV{DB: db, Kind: store.KindKV, Namespace: "default", Limits: store.Limits{MaxValueBytes: 16}}}},
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
	ci := connInfo{src: netip.AddrPortFrom(src, 40000), dst: netip.AddrPortFrom(dst, 80)}
	r = r.WithContext(context.WithValue(r.Context(), connKey{}, ci))
	w := httptest.NewRecorder()
	tr.ServeHTTP(w, r)
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

func TestKVThroughTheRouter(t *testing.T) {
	tr := newTestRouter(t)
	steps := []struct {
		name, method, target, body string
		wantStatus                 int
		wantBody                   string
	}{
		{"a missing key is 404", "GET", "/greeting", "", 404, "interceptd: key not found\n"},
		{"PUT stores the body", "PUT", "/greeting", "hello", 204, ""},
		{"GET returns it", "GET", "/greeting", "", 200, "hello"},
		{"HEAD has no body", "HEAD", "/greeting", "", 200, ""},
		{"a percent-encoded slash is part of the key", "PUT", "/a%2Fb", "x", 204, ""},
		{"which reads back by the decoded key", "GET", "/a/b", "", 200, "x"},
		{"DELETE is 204", "DELETE", "/greeting", "", 204, ""},
		{"and again when absent", "DELETE", "/greeting", "", 204, ""},
		{"the key is gone", "GET", "/greeting", "", 404, "interceptd: key not found\n"},
		{"a value over the limit is a 413 naming it", "PUT", "/big", strings.Repeat("x", 17), 413, "interceptd: value too large: 17 bytes, limit 16\n"},
		{"an unknown method is a 405", "PATCH", "/greeting", "", 405, "interceptd: method PATCH not allowed: use GET, HEAD, PUT or DELETE\n"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			w := tr.do(s.method, "my.kv", s.target, s.body, sandboxIP, virtualIP)
			body, _ := io.ReadAll(w.Body)
			if w.Code != s.wantStatus || string(body) != s.wantBody {
				t.Fatalf("%s %s: %d %q, want %d %q", s.method, s.target, w.Code, body, s.wantStatus, s.wantBody)
			}
		})
	}
	if got := testutil.ToFloat64(tr.metrics.requests.WithLabelValues("my.kv", "204", "web1")); got != 4 {
		t.Errorf("requests{my.kv,204} = %v, want 4", got)
	}
}

func TestForwardRefusesProtectedDestinations(t *testing.T) {
	f := &Forward{Destinations: policy.NewDestinations(netip.MustParsePrefix("10.213.0.0/16"), netip.MustParsePrefix("198.18.213.0/24"))}
	tests := []struct {
		addr string
		want string
	}{
		{"127.0.0.1", "loopback"},
		{"169.254.169.254", "link-local"},
		{"224.0.0.1", "multicast"},
		{"255.255.255.255", "not a unicast address"},
		{"0.0.0.0", "not a unicast address"},
		{"10.213.0.6", "protected (10.213.0.0/16)"},
		{"198.18.213.9", "protected (198.18.213.0/24)"},
		{"192.0.2.10", ""},
	}
	for _, tt := range tests {
		if got := f.Protected(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("protected(%s) = %q, want %q", tt.addr, got, tt.want)
		}
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
