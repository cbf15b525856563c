package handlers_test

// The handlers as the router serves them, from outside the package.

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/interceptd/interceptd/metrics"
	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/handlers"
	"github.com/interceptd/interceptd/router/routertest"
	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
	"github.com/prometheus/client_golang/prometheus"
)

func TestKVThroughTheRouter(t *testing.T) {
	db, err := store.Open(t.TempDir(), &store.Options{Limits: store.Limits{MaxValueBytes: 16}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	reg := prometheus.NewRegistry()
	m := router.NewMetrics(reg, metrics.NewSandboxLabels(10))
	rt := router.New(router.Config{
		Hosts: map[string]router.Route{"my.kv": {Name: "my.kv", Handler: &handlers.KV{Store: backend.Bolt(db), Kind: store.KindKV, Namespace: "default", Limits: store.Limits{MaxValueBytes: 16}}}},
		Identify: func(a netip.Addr) (policy.Caller, bool) {
			return policy.Caller{Sandbox: "web1", Policy: policy.MustCompile(policy.Policy{Internet: true})}, true
		},
		Metrics: m,
		Logger:  slog.New(slog.DiscardHandler),
	})
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
		{"an unknown method is a 405", "PATCH", "/greeting", "", 405, "interceptd: method PATCH not allowed: use GET, HEAD, PUT (or POST) or DELETE\n"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			r := httptest.NewRequest(s.method, s.target, strings.NewReader(s.body))
			r.Host = "my.kv"
			w := routertest.Do(rt, r, netip.MustParseAddrPort("10.213.0.2:40000"), netip.MustParseAddrPort("198.18.213.1:80"))
			body, _ := io.ReadAll(w.Body)
			if w.Code != s.wantStatus || string(body) != s.wantBody {
				t.Fatalf("%s %s: %d %q, want %d %q", s.method, s.target, w.Code, body, s.wantStatus, s.wantBody)
			}
		})
	}
	if got := routertest.Counted(t, reg, "interceptd_router_requests_total", map[string]string{"handler": "my.kv", "code": "204", "sandbox": "web1"}); got != 4 {
		t.Errorf("requests{my.kv,204} = %v, want 4", got)
	}
}

func TestForwardRefusesProtectedDestinations(t *testing.T) {
	f := &handlers.Forward{Destinations: policy.NewDestinations(netip.MustParsePrefix("10.213.0.0/16"), netip.MustParsePrefix("198.18.213.0/24"))}
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
