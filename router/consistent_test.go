package router

import (
	"errors"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/interceptd/interceptd/policy"
)

// fakeResolver answers from a table and records every name it is asked,
// as the daemon's upstream resolver would see them.
type fakeResolver struct {
	mu      sync.Mutex
	answers map[string][]netip.Addr
	asked   []string
}

func (r *fakeResolver) resolve(name string) ([]netip.Addr, time.Duration, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asked = append(r.asked, name)
	if a, ok := r.answers[name]; ok {
		return a, time.Minute, nil
	}
	return nil, 0, errors.New("no such host")
}

func (r *fakeResolver) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.asked)
}

// newResolvingRouter is a unit router with an address book and a
// resolver: what the daemon gives its router, so that consistent() is
// really asked.
func newResolvingRouter(t *testing.T, pol policy.Policy, book *policy.AddrBook, res *fakeResolver) *testRouter {
	t.Helper()
	tr := newTestRouterWith(t, pol, book)
	tr.cfg.Verdicts.Resolve = res.resolve
	return tr
}

var (
	learnedIP  = netip.MustParseAddr("192.0.2.20")
	othersIP   = netip.MustParseAddr("192.0.2.21")
	resolvedIP = netip.MustParseAddr("192.0.2.30")
	strangerIP = netip.MustParseAddr("192.0.2.99")
)

func TestAForwardedRequestGoesOnlyToAnAddressConsistentWithItsHost(t *testing.T) {
	tests := []struct {
		name      string
		host      string
		dst       netip.Addr
		wantCode  int
		wantWhy   string
		wantAsked []string // names the resolver was asked
	}{
		{"a name this sandbox's DNS answer gave for the address", "learned.test", learnedIP, http.StatusTeapot, "", nil},
		{"the same name with case, a port and a trailing dot", "LEARNED.test.:80", learnedIP, http.StatusTeapot, "", nil},
		{"a name the daemon resolves to the address", "resolved.test", resolvedIP, http.StatusTeapot, "", []string{"resolved.test"}},
		{"a learned name sent elsewhere", "learned.test", strangerIP, 403, "host_mismatch", []string{"learned.test"}},
		{"a resolvable name sent elsewhere", "resolved.test", strangerIP, 403, "host_mismatch", []string{"resolved.test"}},
		{"a name only another sandbox was given that address for", "others.test", othersIP, 403, "host_mismatch", []string{"others.test"}},
		{"a name that does not resolve", "nxdomain.test", strangerIP, 403, "host_mismatch", []string{"nxdomain.test"}},
		{"an IP literal Host that is the destination", strangerIP.String(), strangerIP, http.StatusTeapot, "", nil},
		{"an IP literal Host that is another address", learnedIP.String(), strangerIP, 403, "host_mismatch", nil},
		{"no Host at all", "", strangerIP, http.StatusTeapot, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			book := &policy.AddrBook{}
			book.Learn("web1", "learned.test", []netip.Addr{learnedIP}, time.Minute)
			book.Learn("other", "others.test", []netip.Addr{othersIP}, time.Minute)
			res := &fakeResolver{answers: map[string][]netip.Addr{
				"learned.test":  {learnedIP},
				"resolved.test": {resolvedIP},
			}}
			tr := newResolvingRouter(t, policy.Policy{Internet: true}, book, res)
			w := tr.do("GET", tt.host, "/", "", sandboxIP, tt.dst)
			if w.Code != tt.wantCode || w.Header().Get("X-Interceptd-Error") != tt.wantWhy {
				t.Errorf("%d %q, want %d %q; body %q", w.Code, w.Header().Get("X-Interceptd-Error"), tt.wantCode, tt.wantWhy, w.Body)
			}
			if got := res.names(); !slices.Equal(got, tt.wantAsked) {
				t.Errorf("resolver asked %q, want %q", got, tt.wantAsked)
			}
		})
	}
}

func TestWhatTheHostCheckResolvesIsKeptForItsTTL(t *testing.T) {
	res := &fakeResolver{answers: map[string][]netip.Addr{"resolved.test": {resolvedIP}}}
	tr := newResolvingRouter(t, policy.Policy{Internet: true}, &policy.AddrBook{}, res)
	for range 3 {
		if w := tr.do("GET", "resolved.test", "/", "", sandboxIP, resolvedIP); w.Code != http.StatusTeapot {
			t.Fatalf("%d %q", w.Code, w.Header().Get("X-Interceptd-Error"))
		}
	}
	if got := res.names(); len(got) != 1 {
		t.Errorf("resolver asked %q, want once", got)
	}
}

func TestTheHostCheckResolvesOnlyNamesTheSandboxMayResolve(t *testing.T) {
	// Internet off; an address entry lets the sandbox reach 192.0.2.30,
	// and one name is on its allowlist.
	pol := policy.Policy{AllowedHosts: []string{resolvedIP.String(), "allowed.test"}}
	tests := []struct {
		name      string
		host      string
		wantCode  int
		wantWhy   string
		wantAsked []string
	}{
		{"a name it may not resolve is never sent to a resolver", "c2VjcmV0.attacker.test", 403, "host_mismatch", nil},
		{"a name on its allowlist is resolved", "allowed.test", http.StatusTeapot, "", []string{"allowed.test"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := &fakeResolver{answers: map[string][]netip.Addr{
				"allowed.test":           {resolvedIP},
				"c2VjcmV0.attacker.test": {resolvedIP},
			}}
			tr := newResolvingRouter(t, pol, &policy.AddrBook{}, res)
			w := tr.do("GET", tt.host, "/", "", sandboxIP, resolvedIP)
			if w.Code != tt.wantCode || w.Header().Get("X-Interceptd-Error") != tt.wantWhy {
				t.Errorf("%d %q, want %d %q; body %q", w.Code, w.Header().Get("X-Interceptd-Error"), tt.wantCode, tt.wantWhy, w.Body)
			}
			if got := res.names(); !slices.Equal(got, tt.wantAsked) {
				t.Errorf("resolver asked %q, want %q", got, tt.wantAsked)
			}
		})
	}
}
