package dnsshim

import (
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/interceptd/interceptd/policy"
	"github.com/miekg/dns"
)

// workerShim is a shim whose sandboxes are web1 (10.213.0.2, worker app),
// web2 (10.213.0.6, no worker) and web3 (10.213.0.10, worker other), all
// with pol. Worker app serves my.fn, *.fn.test and x.denied.test; my.kv is
// a built-in handler's name.
func workerShim(t *testing.T, pol policy.Policy, withHook bool) (*Shim, *[]string) {
	t.Helper()
	var asked []string
	cfg := Config{
		Names:     map[string]netip.Addr{"my.kv": netip.MustParseAddr("198.18.213.1")},
		Upstreams: []string{fakeUpstream(t)}, Timeout: time.Second, TTL: 30,
		Identify: func(a netip.Addr) (policy.Caller, bool) {
			c := policy.Caller{Policy: policy.MustCompile(pol)}
			switch a {
			case netip.MustParseAddr("10.213.0.2"):
				c.Sandbox, c.Worker = "web1", "app"
			case netip.MustParseAddr("10.213.0.6"):
				c.Sandbox = "web2"
			case netip.MustParseAddr("10.213.0.10"):
				c.Sandbox, c.Worker = "web3", "other"
			default:
				return policy.Caller{}, false
			}
			return c, true
		},
		Logger: slog.New(slog.DiscardHandler),
	}
	if withHook {
		cfg.WorkerName = func(worker, name string) (netip.Addr, bool) {
			asked = append(asked, worker+" "+name)
			if worker != "app" {
				return netip.Addr{}, false
			}
			switch {
			case name == "my.fn":
				return netip.MustParseAddr("198.18.213.2"), true
			case strings.HasSuffix(name, ".fn.test"):
				return netip.MustParseAddr("198.18.213.3"), true
			case name == "x.denied.test":
				return netip.MustParseAddr("198.18.213.4"), true
			}
			return netip.Addr{}, false
		}
	}
	return New(cfg), &asked
}

func TestAWorkersNamesGetVirtualAddressesOnlyForItsSandboxes(t *testing.T) {
	web1 := &net.UDPAddr{IP: net.IPv4(10, 213, 0, 2), Port: 40000}
	web2 := &net.UDPAddr{IP: net.IPv4(10, 213, 0, 6), Port: 40000}
	web3 := &net.UDPAddr{IP: net.IPv4(10, 213, 0, 10), Port: 40000}
	open := policy.Policy{Internet: true, DeniedHosts: []string{"*.denied.test"}}
	allowlist := policy.Policy{Internet: true, AllowedHosts: []string{"example.test"}}
	off := policy.Policy{}
	tests := []struct {
		name   string
		pol    policy.Policy
		from   net.Addr
		qname  string
		rcode  int
		answer string // "" for none
	}{
		{"a worker's exact name", open, web1, "my.fn.", dns.RcodeSuccess, "198.18.213.2"},
		{"a worker's name in any case", open, web1, "MY.Fn.", dns.RcodeSuccess, "198.18.213.2"},
		{"a name a worker's glob matches", open, web1, "a.b.fn.test.", dns.RcodeSuccess, "198.18.213.3"},
		{"a built-in handler's name beside a worker", open, web1, "my.kv.", dns.RcodeSuccess, "198.18.213.1"},
		{"other names are forwarded", open, web1, "example.test.", dns.RcodeSuccess, "192.0.2.10"},
		{"a denied name the worker serves is denied", open, web1, "x.denied.test.", dns.RcodeNameError, ""},
		{"an allowlist does not hide a worker's name", allowlist, web1, "my.fn.", dns.RcodeSuccess, "198.18.213.2"},
		{"internet off does not hide a worker's name", off, web1, "a.fn.test.", dns.RcodeSuccess, "198.18.213.3"},
		{"a sandbox without the worker forwards its name", open, web2, "my.fn.", dns.RcodeNameError, ""},
		{"a sandbox of another worker forwards its name", open, web3, "my.fn.", dns.RcodeNameError, ""},
		{"an allowlisted sandbox without the worker is denied its name", allowlist, web2, "my.fn.", dns.RcodeNameError, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := workerShim(t, tt.pol, true)
			m := query(s, tt.from, tt.qname, dns.TypeA)
			if m.Rcode != tt.rcode || (tt.answer == "") != (len(m.Answer) == 0) {
				t.Fatalf("rcode %s with %v, want %s with %q", dns.RcodeToString[m.Rcode], m.Answer, dns.RcodeToString[tt.rcode], tt.answer)
			}
			if tt.answer != "" && m.Answer[0].(*dns.A).A.String() != tt.answer {
				t.Errorf("answer %s, want %s", m.Answer[0], tt.answer)
			}
		})
	}
	s, asked := workerShim(t, open, true)
	query(s, web2, "my.fn.", dns.TypeA)
	if len(*asked) != 0 {
		t.Errorf("the hook was asked for a sandbox without a worker: %v", *asked)
	}
	query(s, web1, "My.Fn.", dns.TypeA)
	if strings.Join(*asked, ",") != "app my.fn" {
		t.Errorf("the hook was asked %v, want the name lowercased without its dot", *asked)
	}
}

func TestTheFastPathLeavesASandboxWithAWorkerToTheFullPath(t *testing.T) {
	q := new(dns.Msg)
	q.SetQuestion("my.kv.", dns.TypeA)
	ask := func(s *Shim, src string) bool {
		_, ok := s.fastAnswer(pack(q), netip.MustParseAddr(src), nil, new(querySeries))
		return ok
	}
	open := policy.Policy{Internet: true}
	s, _ := workerShim(t, open, true)
	if ask(s, "10.213.0.2") {
		t.Error("the fast path answered a sandbox whose worker may serve the name")
	}
	if !ask(s, "10.213.0.6") {
		t.Error("the fast path no longer answers a sandbox without a worker")
	}
	if s, _ := workerShim(t, open, false); !ask(s, "10.213.0.2") {
		t.Error("without the hook, the fast path no longer answers a sandbox naming a worker")
	}
	if s, _ := workerShim(t, open, false); query(s, &net.UDPAddr{IP: net.IPv4(10, 213, 0, 2), Port: 1}, "my.fn.", dns.TypeA).Rcode != dns.RcodeNameError {
		t.Error("without the hook, a worker's name was answered")
	}
}
