package router

import (
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/interceptd/interceptd/metrics"
	"github.com/interceptd/interceptd/policy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestHostPatternsMatchTheMostSpecificKey(t *testing.T) {
	var hp HostPatterns[string]
	for _, k := range []string{
		"my.kv", "my.kv:8080", "*.example.com", "*.api.example.com", "*.api.example.com:8443",
		"10.0.0.0/8", "10.1.0.0/16", "10.1.2.3", "10.1.2.3:81", "API.Upper.Test.",
	} {
		if err := hp.Add(k, k); err != nil {
			t.Fatalf("Add(%q): %v", k, err)
		}
	}
	tests := []struct {
		name    string
		host    string
		dest    string
		wantKey string // "" for no match
	}{
		{"an exact name matches on any port", "my.kv", "192.0.2.1:80", "my.kv"},
		{"an exact name with a port beats the same name without one", "my.kv", "192.0.2.1:8080", "my.kv:8080"},
		{"keys are compared lowercased without a trailing dot", "api.upper.test", "192.0.2.1:80", "API.Upper.Test."},
		{"a glob matches one label in front", "a.example.com", "192.0.2.1:80", "*.example.com"},
		{"a glob matches several labels in front", "a.b.example.com", "192.0.2.1:80", "*.example.com"},
		{"a glob does not match its own suffix", "example.com", "192.0.2.1:80", ""},
		{"a glob does not match a name that only ends like it", "badexample.com", "192.0.2.1:80", ""},
		{"the longest glob wins", "v1.api.example.com", "192.0.2.1:80", "*.api.example.com"},
		{"a glob with the port beats the same glob without", "v1.api.example.com", "192.0.2.1:8443", "*.api.example.com:8443"},
		{"a name key beats an address key", "my.kv", "10.1.2.3:80", "my.kv"},
		{"an unmatched name falls to the address keys", "other.test", "10.1.2.3:80", "10.1.2.3"},
		{"the narrowest CIDR wins", "", "10.1.9.9:80", "10.1.0.0/16"},
		{"the widest CIDR still matches", "", "10.200.0.1:80", "10.0.0.0/8"},
		{"an address with the port beats the address without", "", "10.1.2.3:81", "10.1.2.3:81"},
		{"an IP literal Host is no name: the destination decides", "10.1.2.3", "192.0.2.1:80", ""},
		{"nothing matches elsewhere", "other.test", "192.0.2.1:80", ""},
		{"an IPv4-mapped destination is the IPv4 address", "", "[::ffff:10.1.2.3]:80", "10.1.2.3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, v, ok := hp.Match(tt.host, netip.MustParseAddrPort(tt.dest))
			if ok != (tt.wantKey != "") || key != tt.wantKey || v != key {
				t.Errorf("Match(%q, %s) = %q, %q, %v; want %q", tt.host, tt.dest, key, v, ok, tt.wantKey)
			}
		})
	}
}

func TestHostPatternsRefuseBadAndRepeatedKeys(t *testing.T) {
	tests := []struct {
		name, first, key, wantErr string
	}{
		{"a glob in the middle", "", "a.*.example.com", "a glob is"},
		{"a glob without a dot", "", "*example.com", "a glob is"},
		{"two stars", "", "*.*.example.com", "a glob is"},
		{"not a hostname", "", "bad host", "invalid pattern"},
		{"a bad CIDR", "", "10.0.0.0/33", "invalid pattern"},
		{"a bad port", "", "my.kv:0", "invalid pattern"},
		{"the same name however written", "my.kv", "MY.KV.", "repeats"},
		{"the same name and port", "my.kv:81", "my.kv:81", "repeats"},
		{"the same glob", "*.example.com", "*.Example.com", "repeats"},
		{"the same address as a /32", "10.1.2.3", "10.1.2.3/32", "repeats"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hp HostPatterns[int]
			if tt.first != "" {
				if err := hp.Add(tt.first, 1); err != nil {
					t.Fatal(err)
				}
			}
			err := hp.Add(tt.key, 2)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Add(%q) = %v, want an error with %q", tt.key, err, tt.wantErr)
			}
		})
	}
	var hp HostPatterns[int]
	for _, k := range []string{"my.kv", "my.kv:81", "*.example.com", "*.example.com:81", "10.0.0.0/8", "10.0.0.0/8:81"} {
		if err := hp.Add(k, 0); err != nil {
			t.Errorf("Add(%q): %v (keys that differ in the port are distinct)", k, err)
		}
	}
	if hp.Len() != 6 {
		t.Errorf("Len() = %d, want 6", hp.Len())
	}
}

func TestHostPatternsMatchNameIsWhatDNSAnswers(t *testing.T) {
	var hp HostPatterns[int]
	for _, k := range []string{"my.kv:8080", "*.example.com", "10.0.0.0/8"} {
		if err := hp.Add(k, 0); err != nil {
			t.Fatal(err)
		}
	}
	for name, want := range map[string]string{
		"my.kv": "my.kv", "a.example.com": "*.example.com", "example.com": "", "10.1.2.3": "", "other.test": "", "": "",
	} {
		got, ok := hp.MatchName(name)
		if got != want || ok != (want != "") {
			t.Errorf("MatchName(%q) = %q, %v; want %q", name, got, ok, want)
		}
	}
	names := hp.Names()
	if len(names) != 2 || !strings.Contains(strings.Join(names, " "), "*.example.com") || !strings.Contains(strings.Join(names, " "), "my.kv") {
		t.Errorf("Names() = %v, want my.kv and *.example.com", names)
	}
}

// testProgram is a worker as the router sees it, over HostPatterns as
// router/worker's is.
type testProgram struct {
	name     string
	keys     HostPatterns[Route]
	outbound bool
	served   *[]string // the label of each function called
}

func newTestProgram(t *testing.T, name string, outbound bool, served *[]string, keys ...string) *testProgram {
	t.Helper()
	p := &testProgram{name: name, outbound: outbound, served: served}
	for _, k := range keys {
		k := k
		err := p.keys.Add(k, Route{Name: WorkerLabel(name), Handler: HandlerFunc(func(w http.ResponseWriter, r *http.Request, env Env) error {
			*served = append(*served, name+" "+k)
			w.WriteHeader(http.StatusAccepted)
			return nil
		})})
		if err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func (p *testProgram) Match(host string, dest netip.AddrPort) (Route, bool) {
	_, r, ok := p.keys.Match(host, dest)
	return r, ok
}

func (p *testProgram) Outbound() (Route, bool) {
	if !p.outbound {
		return Route{}, false
	}
	return Route{Name: WorkerOutboundLabel(p.name), Handler: HandlerFunc(func(w http.ResponseWriter, r *http.Request, env Env) error {
		*p.served = append(*p.served, p.name+" outbound")
		w.WriteHeader(http.StatusNonAuthoritativeInfo)
		return nil
	})}, true
}

var (
	workerVirtualIP = netip.MustParseAddr("198.18.213.2") // the worker key my.fn's
	globVirtualIP   = netip.MustParseAddr("198.18.213.3") // the worker key *.fn.test's
	workerKeyIP     = netip.MustParseAddr("203.0.113.7")  // an IPv4 key of the worker
)

// newWorkerRouter is a router whose sandbox web1 (at sandboxIP) has pol
// and uses worker (none when ""); the worker "app" has the functions
// my.fn, *.fn.test, my.kv (as the built-in handler, to show the worker
// comes first), 203.0.113.0/24 and an outbound; my.kv and my.state are
// built-in handlers.
func newWorkerRouter(t *testing.T, pol policy.Policy, worker string, served *[]string) *testRouter {
	t.Helper()
	app := newTestProgram(t, "app", true, served, "my.fn", "*.fn.test", "203.0.113.0/24", "my.kv")
	other := newTestProgram(t, "other", false, served, "other.fn")
	tr := &testRouter{metrics: NewMetrics(prometheus.NewRegistry(), metrics.NewSandboxLabels(10))}
	tr.Router = New(Config{
		Hosts: map[string]Route{"my.kv": {Name: "my.kv", Handler: absentKeys}, "my.state": {Name: "my.state", Handler: absentKeys}},
		Virtual: map[netip.Addr]string{
			virtualIP: "my.kv", workerVirtualIP: "my.fn", globVirtualIP: "*.fn.test",
		},
		Programs: func(name string) Program {
			switch name {
			case "app":
				return app
			case "other":
				return other
			}
			return nil
		},
		Identify: func(a netip.Addr) (policy.Caller, bool) {
			return policy.Caller{Sandbox: "web1", Policy: policy.MustCompile(pol), Worker: worker}, a == sandboxIP
		},
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

func TestAWorkerMeetsThePolicyAsHandlersDo(t *testing.T) {
	const (
		function = http.StatusAccepted
		outbound = http.StatusNonAuthoritativeInfo
		builtin  = http.StatusNotFound
		forward  = http.StatusTeapot
	)
	open := policy.Policy{Internet: true}
	deny := policy.Policy{Internet: true, DeniedHosts: []string{"my.fn", "*.fn.test", "203.0.113.7", "my.kv"}}
	allowlist := policy.Policy{Internet: true, AllowedHosts: []string{"allowed.test"}}
	off := policy.Policy{}
	tests := []struct {
		name     string
		pol      policy.Policy
		worker   string
		host     string
		dst      netip.Addr
		wantCode int
		wantWhy  string
		served   string // the function that ran, "" for none
	}{
		// What a worker serves.
		{"a per-host function serves its name", open, "app", "my.fn", outsideIP, function, "", "app my.fn"},
		{"a glob function serves a name under it", open, "app", "a.fn.test", outsideIP, function, "", "app *.fn.test"},
		{"a CIDR function serves its addresses", open, "app", "", workerKeyIP, function, "", "app 203.0.113.0/24"},
		{"a function serves its virtual address without a Host", open, "app", "", workerVirtualIP, function, "", "app my.fn"},
		{"a function serves its virtual address with an IP Host", open, "app", workerVirtualIP.String(), workerVirtualIP, function, "", "app my.fn"},
		{"a glob function serves its virtual address", open, "app", "", globVirtualIP, function, "", "app *.fn.test"},
		{"a per-host function beats a built-in handler of the same host", open, "app", "my.kv", virtualIP, function, "", "app my.kv"},
		{"a built-in handler serves what no function does", open, "app", "my.state", outsideIP, builtin, "key not found", ""},
		{"a built-in handler serves a sandbox without a worker", open, "", "my.kv", outsideIP, builtin, "key not found", ""},
		{"outbound serves what neither does", open, "app", "example.test", outsideIP, outbound, "", "app outbound"},
		{"a worker without outbound leaves the rest to the forward", open, "other", "example.test", outsideIP, forward, "", ""},
		// As any handler, a function answers in the daemon whatever address
		// was dialled: its fetch(request) must make the forward's checks.
		{"a per-host function answers for a private destination", open, "app", "my.fn", netip.MustParseAddr("192.168.1.1"), function, "", "app my.fn"},
		{"outbound answers for a private destination", open, "app", "example.test", netip.MustParseAddr("192.168.1.1"), outbound, "", "app outbound"},
		{"without a worker a private destination is denied", open, "", "example.test", netip.MustParseAddr("192.168.1.1"), 403, "private_destination", ""},
		{"an unknown worker is as none", open, "gone", "my.fn", outsideIP, forward, "", ""},

		// A denied host never reaches a worker function.
		{"a denied name is denied", deny, "app", "my.fn", outsideIP, 403, "denied_host", ""},
		{"a denied glob is denied", deny, "app", "a.fn.test", outsideIP, 403, "denied_host", ""},
		{"a denied name is denied by its virtual address", deny, "app", "", workerVirtualIP, 403, "denied_host", ""},
		{"a denied name is denied by its virtual address with an IP Host", deny, "app", workerVirtualIP.String(), workerVirtualIP, 403, "denied_host", ""},
		{"a denied name is denied by its virtual address with another Host", deny, "app", "anything.test", workerVirtualIP, 403, "denied_host", ""},
		{"a denied glob is denied by its virtual address", deny, "app", "", globVirtualIP, 403, "denied_host", ""},
		{"a denied address is denied by destination", deny, "app", "", workerKeyIP, 403, "denied_host", ""},
		{"a denied address is denied as an IP Host", deny, "app", workerKeyIP.String(), workerKeyIP, 403, "denied_host", ""},
		{"a denied built-in host stays denied behind a worker", deny, "app", "my.kv", outsideIP, 403, "denied_host", ""},

		// An allowlist does not block a per-host function, but does block outbound.
		{"an allowlist lets a per-host function serve", allowlist, "app", "my.fn", outsideIP, function, "", "app my.fn"},
		{"an allowlist lets a glob function serve", allowlist, "app", "b.fn.test", outsideIP, function, "", "app *.fn.test"},
		{"an allowlist lets an address function serve", allowlist, "app", "", workerKeyIP, function, "", "app 203.0.113.0/24"},
		{"an allowlist blocks outbound", allowlist, "app", "example.test", outsideIP, 403, "not_allowed", ""},
		{"an allowlisted host reaches outbound", allowlist, "app", "allowed.test", outsideIP, outbound, "", "app outbound"},
		{"internet off lets a per-host function serve", off, "app", "my.fn", outsideIP, function, "", "app my.fn"},
		{"internet off still reaches outbound, as any catch-all", off, "app", "example.test", outsideIP, outbound, "", "app outbound"},

		// A sandbox without the worker is never routed to it.
		{"without a worker a function's name is forwarded", open, "", "my.fn", outsideIP, forward, "", ""},
		{"without a worker a function's address is forwarded", open, "", "", workerKeyIP, forward, "", ""},
		{"without a worker a function's virtual address is no handler", open, "", "", workerVirtualIP, 403, "private_destination", ""},
		{"another worker does not serve app's name", open, "other", "my.fn", outsideIP, forward, "", ""},
		{"another worker does not serve app's virtual address", open, "other", "", workerVirtualIP, 403, "private_destination", ""},
		{"another worker's allowlisted sandbox is denied app's name", allowlist, "other", "my.fn", outsideIP, 403, "not_allowed", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var served []string
			tr := newWorkerRouter(t, tt.pol, tt.worker, &served)
			w := tr.do("GET", tt.host, "/k", "", sandboxIP, tt.dst)
			if w.Code != tt.wantCode || w.Header().Get("X-Interceptd-Error") != tt.wantWhy {
				t.Errorf("%d %q, want %d %q; body %q", w.Code, w.Header().Get("X-Interceptd-Error"), tt.wantCode, tt.wantWhy, w.Body)
			}
			if tt.served != "" && (len(served) != 1 || served[0] != tt.served) {
				t.Errorf("served %q, want %q", served, tt.served)
			}
			if tt.served == "" && tt.wantCode != function && tt.wantCode != outbound && len(served) != 0 {
				t.Errorf("a worker function ran: %q", served)
			}
		})
	}
}

func TestWorkerFunctionsAreCountedUnderTheWorkerNotTheHost(t *testing.T) {
	var served []string
	tr := newWorkerRouter(t, policy.Policy{Internet: true}, "app", &served)
	for _, h := range []string{"a.fn.test", "b.fn.test", "c.d.fn.test", "my.fn"} {
		tr.do("GET", h, "/", "", sandboxIP, outsideIP)
	}
	tr.do("GET", "example.test", "/", "", sandboxIP, outsideIP)
	if got := testutil.ToFloat64(tr.metrics.requests.WithLabelValues("worker:app", "202", "web1")); got != 4 {
		t.Errorf("worker:app requests = %v, want 4", got)
	}
	if got := testutil.ToFloat64(tr.metrics.requests.WithLabelValues("worker:app:outbound", "203", "web1")); got != 1 {
		t.Errorf("worker:app:outbound requests = %v, want 1", got)
	}
	if n := testutil.CollectAndCount(tr.metrics.requests); n != 2 {
		t.Errorf("%d request series, want 2 (one per function kind)", n)
	}
}
