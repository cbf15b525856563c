package policy

import (
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// The addresses of the verdict tests: a daemon whose sandboxes live in
// 10.213.0.0/16 and whose handler my.kv answers at 198.18.213.1.
var (
	vPool      = netip.MustParsePrefix("10.213.0.0/16")
	vVirtual   = netip.MustParseAddr("198.18.213.1")
	vOutside   = netip.MustParseAddr("192.0.2.10") // DNS gave it for x.evil.test and cdn.test
	vLearned   = netip.MustParseAddr("192.0.2.20") // DNS gave it to "s" for learned.test
	vResolved  = netip.MustParseAddr("192.0.2.30") // the daemon resolves resolved.test to it
	vStranger  = netip.MustParseAddr("192.0.2.99") // no name's
	vMetadata  = netip.MustParseAddr("169.254.169.254")
	vLAN       = netip.MustParseAddr("192.168.1.10") // rebind.test's, and z.evil.test's
	vCorp      = netip.MustParseAddr("10.1.2.3")     // intranet.corp.test's
	vLoopback  = netip.MustParseAddr("127.0.0.1")
	vOtherSbox = netip.MustParseAddr("10.213.0.3")
)

// verdictResolver answers from a table and records every name it is asked,
// as the daemon's upstream resolver would see them.
type verdictResolver struct {
	mu    sync.Mutex
	asked []string
}

func (r *verdictResolver) resolve(name string) ([]netip.Addr, time.Duration, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asked = append(r.asked, name)
	switch name {
	case "learned.test":
		return []netip.Addr{vLearned}, time.Minute, nil
	case "resolved.test":
		return []netip.Addr{vResolved}, time.Minute, nil
	case "c2VjcmV0.attacker.test":
		return []netip.Addr{vStranger}, time.Minute, nil
	}
	return nil, 0, errors.New("no such host")
}

// newTestVerdicts is the daemon's Verdicts over a book that the DNS
// answers above filled, and a resolver that records what it is asked.
func newTestVerdicts() (*Verdicts, *verdictResolver) {
	book := &AddrBook{}
	book.Learn("other", "x.evil.test", []netip.Addr{vOutside}, time.Minute)
	book.Learn("s", "cdn.test", []netip.Addr{vOutside}, time.Minute)
	book.Learn("s", "learned.test", []netip.Addr{vLearned}, time.Minute)
	book.Learn("s", "metadata.test", []netip.Addr{vMetadata}, time.Minute)
	book.Learn("s", "rebind.test", []netip.Addr{vLAN}, time.Minute)
	book.Learn("other", "z.evil.test", []netip.Addr{vLAN}, time.Minute)
	book.Learn("s", "intranet.corp.test", []netip.Addr{vCorp}, time.Minute)
	res := &verdictResolver{}
	dests := NewDestinations(vPool, netip.PrefixFrom(vVirtual, 24))
	return &Verdicts{Protected: dests.Protected, Book: book, Resolve: res.resolve}, res
}

// Each row is a way a sandbox could try to get past one step of the HTTP
// order by satisfying another; the row's name says which step must decide.
// Swapping, dropping or reordering a step makes at least one row fail.
func TestTheHTTPVerdictTakesItsStepsInTheDocumentedOrder(t *testing.T) {
	internet := Policy{Internet: true}
	evil := Policy{Internet: true, DeniedHosts: []string{"*.evil.test"}}
	deniedKV := Policy{Internet: true, DeniedHosts: []string{"my.kv"}}
	tests := []struct {
		name        string
		policy      *Policy // nil: the source is not a sandbox
		host        string
		dest        netip.Addr
		port        uint16 // 0: 80
		virtual     bool   // dest is my.kv's virtual address
		handler     bool   // host has a handler
		catchAll    bool
		wantResult  Result
		wantReason  string
		wantPattern string
		wantDetail  string
		wantAsked   []string // what the resolver was asked
	}{
		{name: "a source that is not a sandbox is refused before anything",
			host: "my.kv", dest: vVirtual, virtual: true, handler: true,
			wantResult: Deny, wantReason: ReasonUnknown, wantDetail: "the source address is not a sandbox"},

		{name: "a denied handler dialled by its virtual address is denied whatever other Host it sends",
			policy: &deniedKV, host: "fine.test", dest: vVirtual, virtual: true,
			wantResult: Deny, wantReason: ReasonDenied, wantPattern: "my.kv", wantDetail: `my.kv matches denied_hosts entry "my.kv"`},
		{name: "a denied handler dialled by its virtual address with an IP-literal Host is denied",
			policy: &deniedKV, host: "198.18.213.1", dest: vVirtual, virtual: true,
			wantResult: Deny, wantReason: ReasonDenied, wantPattern: "my.kv", wantDetail: `my.kv matches denied_hosts entry "my.kv"`},
		{name: "a denied Host sent to an allowed handler's virtual address is denied for the Host",
			policy: &evil, host: "x.evil.test", dest: vVirtual, virtual: true,
			wantResult: Deny, wantReason: ReasonDenied, wantPattern: "*.evil.test", wantDetail: `x.evil.test matches denied_hosts entry "*.evil.test"`},
		{name: "a denied Host is denied though it has a handler",
			policy: &deniedKV, host: "my.kv", dest: vStranger, handler: true,
			wantResult: Deny, wantReason: ReasonDenied, wantPattern: "my.kv", wantDetail: `my.kv matches denied_hosts entry "my.kv"`},
		{name: "a denied address is denied whatever the Host",
			policy: &Policy{Internet: true, DeniedHosts: []string{"192.0.2.0/24"}}, host: "learned.test", dest: vLearned,
			wantResult: Deny, wantReason: ReasonDenied, wantPattern: "192.0.2.0/24", wantDetail: `learned.test matches denied_hosts entry "192.0.2.0/24"`},

		{name: "a handler dialled by its protected virtual address is served with internet off",
			policy: &Policy{}, host: "198.18.213.1", dest: vVirtual, virtual: true,
			wantResult: Handler, wantReason: ReasonHandler},
		{name: "a handler is served though the allowlist does not name it",
			policy: &Policy{AllowedHosts: []string{"github.com"}}, host: "my.kv", dest: vStranger, handler: true,
			wantResult: Handler, wantReason: ReasonHandler},
		{name: "a handler beats the catch-all",
			policy: &Policy{}, host: "my.kv", dest: vStranger, handler: true, catchAll: true,
			wantResult: Handler, wantReason: ReasonHandler},

		{name: "an allowlist miss is denied before the catch-all answers",
			policy: &Policy{AllowedHosts: []string{"github.com"}}, host: "other.test", dest: vStranger, catchAll: true,
			wantResult: Deny, wantReason: ReasonNotAllowed, wantDetail: "other.test is not in allowed_hosts"},
		{name: "an allowlist miss is denied with internet on",
			policy: &Policy{Internet: true, AllowedHosts: []string{"github.com"}}, host: "other.test", dest: vStranger,
			wantResult: Deny, wantReason: ReasonNotAllowed, wantDetail: "other.test is not in allowed_hosts"},
		{name: "the catch-all answers for a protected address, since nothing is forwarded",
			policy: &Policy{}, host: "x.test", dest: vMetadata, catchAll: true,
			wantResult: CatchAll, wantReason: ReasonCatchAll},
		{name: "internet off denies before the destination is looked at",
			policy: &Policy{}, host: "127.0.0.1", dest: vLoopback,
			wantResult: Deny, wantReason: ReasonOff, wantDetail: "internet access is off for this sandbox and 127.0.0.1 is not allowed"},

		{name: "an allowed name DNS gave the metadata address for is refused as protected",
			policy: &Policy{AllowedHosts: []string{"metadata.test"}}, host: "metadata.test", dest: vMetadata,
			wantResult: Deny, wantReason: ReasonProtected,
			wantDetail: "destination 169.254.169.254 is link-local; only an IP/CIDR allowed_hosts entry opens it"},
		{name: "a Host sent to loopback is refused as protected before anything is resolved",
			policy: &internet, host: "resolved.test", dest: vLoopback,
			wantResult: Deny, wantReason: ReasonProtected,
			wantDetail: "destination 127.0.0.1 is loopback; only an IP/CIDR allowed_hosts entry opens it"},
		{name: "an IP entry opens the metadata address",
			policy: &Policy{AllowedHosts: []string{"169.254.169.254:80"}}, host: "169.254.169.254", dest: vMetadata,
			wantResult: Forward, wantReason: ReasonAllowed, wantPattern: "169.254.169.254:80"},
		{name: "an IP entry opens the metadata address on its own port only",
			policy: &Policy{AllowedHosts: []string{"169.254.169.254:80", "metadata.test"}}, host: "metadata.test", dest: vMetadata, port: 8080,
			wantResult: Deny, wantReason: ReasonProtected,
			wantDetail: "destination 169.254.169.254 is link-local; only an IP/CIDR allowed_hosts entry opens it"},
		{name: "another sandbox's address is protected before it is private",
			policy: &internet, host: "", dest: vOtherSbox,
			wantResult: Deny, wantReason: ReasonProtected,
			wantDetail: "destination 10.213.0.3 is protected (10.213.0.0/16); only an IP/CIDR allowed_hosts entry opens it"},
		{name: "a public name DNS answered with a LAN address is refused as private",
			policy: &internet, host: "rebind.test", dest: vLAN,
			wantResult: Deny, wantReason: ReasonPrivate,
			wantDetail: "destination 192.168.1.10 is in a private network; only an IP/CIDR allowed_hosts entry opens it"},
		{name: "a hostname entry does not open a private address",
			policy: &Policy{AllowedHosts: []string{"*.corp.test"}}, host: "intranet.corp.test", dest: vCorp,
			wantResult: Deny, wantReason: ReasonPrivate,
			wantDetail: "destination 10.1.2.3 is in a private network; only an IP/CIDR allowed_hosts entry opens it"},
		{name: "a CIDR entry opens the LAN",
			policy: &Policy{AllowedHosts: []string{"192.168.0.0/16"}}, host: "192.168.1.10", dest: vLAN,
			wantResult: Forward, wantReason: ReasonAllowed, wantPattern: "192.168.0.0/16"},
		{name: "a denied name's private address is refused as private",
			policy: &evil, host: "", dest: vLAN,
			wantResult: Deny, wantReason: ReasonPrivate,
			wantDetail: "destination 192.168.1.10 is in a private network; only an IP/CIDR allowed_hosts entry opens it"},

		{name: "an IP-literal Host for an address DNS gave a denied name is denied by that name",
			policy: &evil, host: "192.0.2.10", dest: vOutside,
			wantResult: Deny, wantReason: ReasonDenied, wantPattern: "*.evil.test",
			wantDetail: `destination 192.0.2.10 is an address of x.evil.test, which matches denied_hosts entry "*.evil.test"`},
		{name: "no Host for that address is denied by that name",
			policy: &evil, host: "", dest: vOutside,
			wantResult: Deny, wantReason: ReasonDenied, wantPattern: "*.evil.test",
			wantDetail: `destination 192.0.2.10 is an address of x.evil.test, which matches denied_hosts entry "*.evil.test"`},
		{name: "another IP literal as Host for that address is denied by that name, not as a mismatch",
			policy: &evil, host: "192.0.2.77", dest: vOutside,
			wantResult: Deny, wantReason: ReasonDenied, wantPattern: "*.evil.test",
			wantDetail: `destination 192.0.2.10 is an address of x.evil.test, which matches denied_hosts entry "*.evil.test"`},
		{name: "a named Host is judged by its own name, not by the other names of its address",
			policy: &evil, host: "cdn.test", dest: vOutside,
			wantResult: Forward, wantReason: ReasonInternet},

		{name: "a Host sent to an address DNS never gave for it is a mismatch",
			policy: &internet, host: "learned.test", dest: vStranger,
			wantResult: Deny, wantReason: ReasonMismatch, wantDetail: "destination 192.0.2.99 is not an address of learned.test",
			wantAsked: []string{"learned.test"}},
		{name: "an IP-literal Host of another address is a mismatch",
			policy: &internet, host: "192.0.2.20", dest: vStranger,
			wantResult: Deny, wantReason: ReasonMismatch, wantDetail: "destination 192.0.2.99 is not an address of 192.0.2.20"},
		{name: "a Host DNS gave the destination for passes without a resolve",
			policy: &internet, host: "learned.test", dest: vLearned,
			wantResult: Forward, wantReason: ReasonInternet},
		{name: "a Host the daemon resolves to the destination passes",
			policy: &internet, host: "resolved.test", dest: vResolved,
			wantResult: Forward, wantReason: ReasonInternet, wantAsked: []string{"resolved.test"}},
		{name: "a Host the sandbox may not resolve is never sent to a resolver",
			policy: &Policy{AllowedHosts: []string{"192.0.2.99"}}, host: "c2VjcmV0.attacker.test", dest: vStranger,
			wantResult: Deny, wantReason: ReasonMismatch, wantDetail: "destination 192.0.2.99 is not an address of c2VjcmV0.attacker.test"},
		{name: "a mismatched Host is quoted sanitized and cut short",
			policy: &internet, host: "evil\x1b[31m.test.that.goes.on.and.on.test", dest: vStranger,
			wantResult: Deny, wantReason: ReasonMismatch, wantDetail: "destination 192.0.2.99 is not an address of evil?[31m.test.that.goes.on.and.",
			wantAsked: []string{"evil\x1b[31m.test.that.goes.on.and.on.test"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, res := newTestVerdicts()
			caller := Caller{Sandbox: "s"}
			if tt.policy != nil {
				caller.Policy = MustCompile(*tt.policy)
			}
			port := tt.port
			if port == 0 {
				port = 80
			}
			r := HTTPRequest{Host: tt.host, Dest: netip.AddrPortFrom(tt.dest, port), HasHandler: tt.handler, HasCatchAll: tt.catchAll}
			if tt.virtual {
				r.Virtual = "my.kv"
			}
			d := v.HTTP(caller, r)
			want := Decision{Result: tt.wantResult, Reason: tt.wantReason, Pattern: tt.wantPattern, Detail: tt.wantDetail}
			if d != want {
				t.Errorf("decision\n %+v, want\n %+v", d, want)
			}
			if !slices.Equal(res.asked, tt.wantAsked) {
				t.Errorf("resolver asked %q, want %q", res.asked, tt.wantAsked)
			}
		})
	}
}

func TestTheZeroVerdictsClosePrivateNetworksAndCheckAHostAgainstNothing(t *testing.T) {
	caller := Caller{Sandbox: "s", Policy: MustCompile(Policy{Internet: true})}
	var v Verdicts
	for dest, want := range map[string]string{"192.0.2.99": ReasonInternet, "127.0.0.1": ReasonInternet, "10.0.0.1": ReasonPrivate} {
		if d := v.HTTP(caller, HTTPRequest{Host: "any.test", Dest: netip.MustParseAddrPort(dest + ":80")}); d.Reason != want {
			t.Errorf("to %s: %+v, want reason %s", dest, d, want)
		}
	}
	// With a book but no resolver, a Host the book does not know is a
	// mismatch: nothing could confirm it.
	v.Book = &AddrBook{}
	if d := v.HTTP(caller, HTTPRequest{Host: "any.test", Dest: netip.MustParseAddrPort("192.0.2.99:80")}); d.Reason != ReasonMismatch {
		t.Errorf("with a book and no resolver: %+v, want host_mismatch", d)
	}
}

func TestTheDNSQueryVerdictTakesItsStepsInTheDocumentedOrder(t *testing.T) {
	tests := []struct {
		name       string
		policy     *Policy
		qname      string
		handler    bool
		wantResult Result
		wantReason string
		wantPat    string
	}{
		{"a source that is not a sandbox is refused", nil, "my.kv.", true, Deny, ReasonUnknown, ""},
		{"a denied handler name is denied", &Policy{DeniedHosts: []string{"my.kv"}}, "my.kv.", true, Deny, ReasonDenied, "my.kv"},
		{"a handler name is answered though the allowlist does not name it", &Policy{AllowedHosts: []string{"github.com"}}, "my.kv.", true, Handler, ReasonHandler, ""},
		{"an allowlist miss is denied with internet on", &Policy{Internet: true, AllowedHosts: []string{"github.com"}}, "example.test.", false, Deny, ReasonNotAllowed, ""},
		{"an allowed name is forwarded with internet off", &Policy{AllowedHosts: []string{"*.github.com:443"}}, "api.github.com.", false, Forward, ReasonAllowed, "*.github.com:443"},
		{"internet on forwards the rest", &Policy{Internet: true}, "example.test.", false, Forward, ReasonInternet, ""},
		{"internet off denies the rest", &Policy{}, "example.test.", false, Deny, ReasonOff, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, res := newTestVerdicts()
			caller := Caller{Sandbox: "s"}
			if tt.policy != nil {
				caller.Policy = MustCompile(*tt.policy)
			}
			d := v.DNSQuery(caller, tt.qname, tt.handler)
			if d.Result != tt.wantResult || d.Reason != tt.wantReason || d.Pattern != tt.wantPat {
				t.Errorf("decision %+v, want %s/%s/%q", d, tt.wantResult, tt.wantReason, tt.wantPat)
			}
			if len(res.asked) > 0 {
				t.Errorf("a query decision resolved %q", res.asked)
			}
		})
	}
}

func TestTheDNSAnswerVerdictTakesItsStepsInTheDocumentedOrder(t *testing.T) {
	evil := Policy{Internet: true, DeniedHosts: []string{"*.evil.test"}}
	tests := []struct {
		name        string
		policy      Policy
		names       []string
		addrs       []string
		wantResult  Result
		wantReason  string
		wantPattern string
		wantDetail  string
		wantKept    []bool // of a passing answer's addresses
		wantRemoved string // the reason the last removed address went
	}{
		{name: "a CNAME into a denied zone is refused before its addresses are looked at",
			policy: evil, names: []string{"a.test.", "x.evil.test."}, addrs: []string{"127.0.0.1"},
			wantResult: Deny, wantReason: ReasonDenied, wantPattern: "*.evil.test", wantDetail: "a CNAME leads to x.evil.test"},
		{name: "the name asked is the query's to decide, not the answer's",
			policy: evil, names: []string{"x.evil.test."}, addrs: []string{"192.0.2.2"},
			wantResult: Forward, wantKept: []bool{true}},
		{name: "a CNAME elsewhere passes",
			policy: evil, names: []string{"a.test.", "b.test."}, addrs: []string{"192.0.2.2"},
			wantResult: Forward, wantKept: []bool{true}},
		{name: "the metadata address is removed, and with no address left the answer is refused",
			policy: evil, names: []string{"a.test."}, addrs: []string{"169.254.169.254"},
			wantResult: Deny, wantReason: ReasonProtected, wantDetail: "169.254.169.254 is link-local"},
		{name: "a mixed answer loses only its closed address",
			policy: evil, names: []string{"a.test."}, addrs: []string{"192.0.2.2", "169.254.169.254", "192.0.2.3"},
			wantResult: Forward, wantKept: []bool{true, false, true}, wantRemoved: ReasonProtected},
		{name: "the virtual range is protected before it is private",
			policy: evil, names: []string{"a.test."}, addrs: []string{"198.18.213.9"},
			wantResult: Deny, wantReason: ReasonProtected, wantDetail: "198.18.213.9 is protected (198.18.213.0/24)"},
		{name: "an answer with every address removed is refused for the last one's reason",
			policy: evil, names: []string{"a.test."}, addrs: []string{"169.254.169.254", "192.168.1.1"},
			wantResult: Deny, wantReason: ReasonPrivate, wantDetail: "192.168.1.1 is in a private network"},
		{name: "an IPv4-mapped private address is private",
			policy: evil, names: []string{"a.test."}, addrs: []string{"::ffff:10.0.0.1"},
			wantResult: Deny, wantReason: ReasonPrivate, wantDetail: "10.0.0.1 is in a private network"},
		{name: "a CIDR entry opens the LAN in an answer, whatever its port",
			policy: Policy{Internet: true, AllowedHosts: []string{"192.168.0.0/16:5432"}}, names: []string{"db.test."}, addrs: []string{"192.168.1.1"},
			wantResult: Forward, wantKept: []bool{true}},
		{name: "a hostname entry does not open the LAN in an answer",
			policy: Policy{AllowedHosts: []string{"db.test"}}, names: []string{"db.test."}, addrs: []string{"192.168.1.1"},
			wantResult: Deny, wantReason: ReasonPrivate, wantDetail: "192.168.1.1 is in a private network"},
		{name: "an answer without addresses passes",
			policy: evil, names: []string{"a.test."},
			wantResult: Forward},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, res := newTestVerdicts()
			var addrs []netip.Addr
			for _, a := range tt.addrs {
				addrs = append(addrs, netip.MustParseAddr(a))
			}
			s := v.DNSAnswer(Caller{Sandbox: "s", Policy: MustCompile(tt.policy)}, DNSAnswer{Names: tt.names, Addrs: addrs})
			want := Decision{Result: tt.wantResult, Reason: tt.wantReason, Pattern: tt.wantPattern, Detail: tt.wantDetail}
			if s.Decision != want {
				t.Fatalf("decision\n %+v, want\n %+v", s.Decision, want)
			}
			if s.Decision.Allowed() {
				for i, want := range tt.wantKept {
					if s.Keeps(i) != want {
						t.Errorf("keeps address %d (%s) = %v, want %v", i, addrs[i], s.Keeps(i), want)
					}
				}
				if s.Removed.Reason != tt.wantRemoved {
					t.Errorf("removed for %q, want %q", s.Removed.Reason, tt.wantRemoved)
				}
			}
			if len(res.asked) > 0 {
				t.Errorf("screening resolved %q", res.asked)
			}
		})
	}
	if s := (&Verdicts{}).DNSAnswer(Caller{Sandbox: "s"}, DNSAnswer{Names: []string{"a.test."}}); s.Decision.Reason != ReasonUnknown {
		t.Errorf("without a policy: %+v, want unknown_source", s.Decision)
	}
}

// Each row is a way a sandbox could try to get a TLS connection past the
// SNI policy; the HTTP order's own rows above cover the steps TLS shares.
func TestTheTLSVerdictDecidesByTheSNIAsHTTPDecidesByTheHost(t *testing.T) {
	internet := Policy{Internet: true}
	tests := []struct {
		name        string
		policy      *Policy
		sni         string
		dest        netip.Addr
		virtual     bool
		handler     bool
		intercept   bool
		wantResult  Result
		wantReason  string
		wantPattern string
		wantDetail  string
	}{
		{name: "a handler marked for HTTPS is the handler's",
			policy: &Policy{}, sni: "my.kv", dest: vVirtual, virtual: true, handler: true, intercept: true,
			wantResult: Handler, wantReason: ReasonHandler},
		{name: "a handler marked for HTTPS reached by its address without an SNI is the handler's",
			policy: &Policy{}, sni: "", dest: vVirtual, virtual: true, intercept: true,
			wantResult: Handler, wantReason: ReasonHandler},
		{name: "a denied handler marked for HTTPS is still denied",
			policy: &Policy{Internet: true, DeniedHosts: []string{"my.kv"}}, sni: "my.kv", dest: vVirtual, virtual: true, handler: true, intercept: true,
			wantResult: Deny, wantReason: ReasonDenied, wantPattern: "my.kv", wantDetail: `my.kv matches denied_hosts entry "my.kv"`},
		{name: "a source that is not a sandbox is refused",
			sni: "learned.test", dest: vLearned, wantResult: Deny, wantReason: ReasonUnknown, wantDetail: "the source address is not a sandbox"},
		{name: "an allowed name at the address DNS gave it passes",
			policy: &Policy{AllowedHosts: []string{"learned.test"}}, sni: "learned.test", dest: vLearned,
			wantResult: Forward, wantReason: ReasonAllowed, wantPattern: "learned.test"},
		{name: "an allowed name sent to another address is sni_mismatch",
			policy: &Policy{AllowedHosts: []string{"learned.test"}}, sni: "learned.test", dest: vStranger,
			wantResult: Deny, wantReason: ReasonSNIMismatch, wantDetail: "destination 192.0.2.99 is not an address of learned.test, the ClientHello's server name"},
		{name: "a name the daemon resolves to the address dialled passes",
			policy: &internet, sni: "resolved.test", dest: vResolved, wantResult: Forward, wantReason: ReasonInternet},
		{name: "a denied name is refused at its own address",
			policy: &Policy{Internet: true, DeniedHosts: []string{"*.evil.test"}}, sni: "x.evil.test", dest: vOutside,
			wantResult: Deny, wantReason: ReasonDenied, wantPattern: "*.evil.test", wantDetail: `x.evil.test matches denied_hosts entry "*.evil.test"`},
		{name: "a name off the allowlist is refused",
			policy: &Policy{Internet: true, AllowedHosts: []string{"github.com"}}, sni: "learned.test", dest: vLearned,
			wantResult: Deny, wantReason: ReasonNotAllowed, wantDetail: "learned.test is not in allowed_hosts"},
		{name: "no SNI with internet off is refused by the address policy",
			policy: &Policy{}, sni: "", dest: vStranger,
			wantResult: Deny, wantReason: ReasonOff, wantDetail: "internet access is off for this sandbox and a connection that names no host is not allowed"},
		{name: "no SNI to an address of a denied name is refused for that name",
			policy: &Policy{Internet: true, DeniedHosts: []string{"*.evil.test"}}, sni: "", dest: vOutside,
			wantResult: Deny, wantReason: ReasonDenied, wantPattern: "*.evil.test", wantDetail: `destination 192.0.2.10 is an address of x.evil.test, which matches denied_hosts entry "*.evil.test"`},
		{name: "no SNI to an address an IP/CIDR entry allows passes",
			policy: &Policy{AllowedHosts: []string{"192.0.2.99"}}, sni: "", dest: vStranger,
			wantResult: Forward, wantReason: ReasonAllowed, wantPattern: "192.0.2.99"},
		{name: "an IP-literal SNI of another address is sni_mismatch",
			policy: &internet, sni: "192.0.2.10", dest: vStranger,
			wantResult: Deny, wantReason: ReasonSNIMismatch, wantDetail: "destination 192.0.2.99 is not an address of 192.0.2.10, the ClientHello's server name"},
		{name: "an allowed name that DNS rebinds to the metadata address is refused",
			policy: &internet, sni: "metadata.test", dest: vMetadata,
			wantResult: Deny, wantReason: ReasonProtected, wantDetail: "destination 169.254.169.254 is link-local; only an IP/CIDR allowed_hosts entry opens it"},
		{name: "a handler's name is refused: nothing passes a stream to its virtual address",
			policy: &internet, sni: "my.kv", dest: vVirtual, virtual: true, handler: true,
			wantResult: Deny, wantReason: ReasonNoHTTPS, wantDetail: "my.kv is served by a handler over HTTP only; its handler is not marked for HTTPS"},
		{name: "a handler's virtual address without an SNI is refused for the handler",
			policy: &internet, sni: "", dest: vVirtual, virtual: true,
			wantResult: Deny, wantReason: ReasonNoHTTPS, wantDetail: "my.kv is served by a handler over HTTP only; its handler is not marked for HTTPS"},
		{name: "a denied handler is denied, not merely not HTTPS",
			policy: &Policy{Internet: true, DeniedHosts: []string{"my.kv"}}, sni: "other.test", dest: vVirtual, virtual: true,
			wantResult: Deny, wantReason: ReasonDenied, wantPattern: "my.kv", wantDetail: `my.kv matches denied_hosts entry "my.kv"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, _ := newTestVerdicts()
			caller := Caller{Sandbox: "s"}
			if tt.policy != nil {
				caller.Policy = MustCompile(*tt.policy)
			}
			h := TLSHello{SNI: tt.sni, Dest: netip.AddrPortFrom(tt.dest, 443), HasHandler: tt.handler, Intercept: tt.intercept}
			if tt.virtual {
				h.Virtual = "my.kv"
			}
			d := v.TLS(caller, h)
			want := Decision{Result: tt.wantResult, Reason: tt.wantReason, Pattern: tt.wantPattern, Detail: tt.wantDetail}
			if d != want {
				t.Errorf("decision\n %+v, want\n %+v", d, want)
			}
		})
	}
}

func TestTheHostCheckResolvesOnlyWithinTheSandboxsDNSBudget(t *testing.T) {
	v, res := newTestVerdicts()
	budget := 1
	var charged []string
	v.Charge = func(c Caller) bool {
		charged = append(charged, c.Sandbox)
		if budget == 0 {
			return false
		}
		budget--
		return true
	}
	caller := Caller{Sandbox: "t", Policy: MustCompile(Policy{Internet: true})} // DNS gave "t" nothing
	tls := func() Decision {
		return v.TLS(caller, TLSHello{SNI: "resolved.test", Dest: netip.AddrPortFrom(vResolved, 443)})
	}
	if d := tls(); d.Result != Forward {
		t.Fatalf("within the budget: %+v", d)
	}
	// What was resolved is known for its TTL, and costs nothing more.
	if d := tls(); d.Result != Forward || len(res.asked) != 1 || len(charged) != 1 {
		t.Fatalf("the name resolved before: %+v, asked %q, charged %q", d, res.asked, charged)
	}
	// A name the book does not know, over the budget: not resolved, and so
	// not shown to be the destination's.
	d := v.TLS(caller, TLSHello{SNI: "learned.test", Dest: netip.AddrPortFrom(vLearned, 443)})
	if d.Result != Deny || d.Reason != ReasonSNIMismatch {
		t.Errorf("over the budget: %+v, want sni_mismatch", d)
	}
	if len(res.asked) != 1 || !slices.Equal(charged, []string{"t", "t"}) {
		t.Errorf("over the budget: asked %q, charged %q", res.asked, charged)
	}
	// A name the sandbox may not resolve is neither charged nor asked.
	off := Caller{Sandbox: "t", Policy: MustCompile(Policy{AllowedHosts: []string{vStranger.String()}})}
	v.HTTP(off, HTTPRequest{Host: "c2VjcmV0.attacker.test", Dest: netip.AddrPortFrom(vStranger, 80)})
	if len(res.asked) != 1 || len(charged) != 2 {
		t.Errorf("a name the sandbox may not resolve: asked %q, charged %q", res.asked, charged)
	}
}
