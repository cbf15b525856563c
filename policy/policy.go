package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Policy is a sandbox's egress policy as operators write it.
type Policy struct {
	// Internet lets traffic with no handler and no allowlist entry out.
	Internet bool `json:"internet" yaml:"internet"`
	// AllowedHosts, when not empty, is an allowlist: hosts (and, for
	// non-HTTP traffic, addresses) not on it are denied even with internet on.
	// It never blocks the operator's per-host handlers.
	AllowedHosts []string `json:"allowed_hosts" yaml:"allowed_hosts"`
	// DeniedHosts are denied first, whatever else says.
	DeniedHosts []string `json:"denied_hosts" yaml:"denied_hosts"`
	// Inbound lists who may open connections to the sandbox (Inbound
	// entries: a source IPv4 CIDR, optionally a port or range and tcp or
	// udp). Empty: nothing enters, as before the field existed; the
	// sandbox's own flows are answered either way.
	Inbound []string `json:"inbound,omitempty" yaml:"inbound"`
}

// Compiled is a validated policy, ready to decide. It is immutable; a policy
// change swaps in a new one.
type Compiled struct {
	Policy  Policy
	allowed []Pattern
	denied  []Pattern
	inbound []Inbound
}

// Compile validates p; the error names every invalid pattern and its list.
func (p Policy) Compile() (*Compiled, error) {
	allowed, aerr := ParsePatterns(p.AllowedHosts)
	denied, derr := ParsePatterns(p.DeniedHosts)
	if aerr != nil {
		return nil, fmt.Errorf("allowed_hosts: %w", aerr)
	}
	if derr != nil {
		return nil, fmt.Errorf("denied_hosts: %w", derr)
	}
	inbound, ierr := ParseInbounds(p.Inbound)
	if ierr != nil {
		return nil, ierr
	}
	if p.AllowedHosts == nil {
		p.AllowedHosts = []string{}
	}
	if p.DeniedHosts == nil {
		p.DeniedHosts = []string{}
	}
	return &Compiled{Policy: p, allowed: allowed, denied: denied, inbound: inbound}, nil
}

// MustCompile is Compile for policies known to be valid.
func MustCompile(p Policy) *Compiled {
	c, err := p.Compile()
	if err != nil {
		panic(err)
	}
	return c
}

// Result is what a decision does.
type Result string

// Results.
const (
	Handler  Result = "handler"   // a per-host handler answers
	CatchAll Result = "catch_all" // the catch-all handler answers
	Forward  Result = "forward"   // passed to the destination
	Deny     Result = "deny"
)

// Reasons: a closed set, used as a metric label and in deny bodies.
const (
	ReasonHandler    = "handler"
	ReasonCatchAll   = "catch_all"
	ReasonAllowed    = "allowed"     // an allowed_hosts match
	ReasonInternet   = "internet_on" // no match, internet on
	ReasonDenied     = "denied_host"
	ReasonNotAllowed = "not_allowed"
	ReasonOff        = "internet_off"
	ReasonProtected  = "protected_destination"
	ReasonPrivate    = "private_destination"
	ReasonMismatch   = "host_mismatch"
	ReasonUnknown    = "unknown_source"
	// Port 443 (Verdicts.TLS; QUIC in the kernel rules).
	ReasonSNIMismatch = "sni_mismatch"      // the address dialled is not one of the SNI's
	ReasonNoHTTPS     = "handler_not_https" // the SNI names a handler not marked for HTTPS
	ReasonQUIC        = "quic_refused"      // UDP 443, which would hide the SNI from the daemon
)

// Reasons lists every reason, for metrics.
var Reasons = []string{ReasonHandler, ReasonCatchAll, ReasonAllowed, ReasonInternet, ReasonDenied, ReasonNotAllowed, ReasonOff, ReasonProtected, ReasonPrivate, ReasonMismatch, ReasonUnknown,
	ReasonSNIMismatch, ReasonNoHTTPS, ReasonQUIC}

// Decision is the outcome of a policy check and explains itself: what it
// does, why (a closed set: the metrics label, the deny header), the
// pattern that decided and, for a deny, a sentence for the deny body and
// the log.
type Decision struct {
	Result Result
	Reason string
	// Pattern is the pattern that decided, if one did.
	Pattern string
	// Detail says why a deny denies, naming what it was decided for (a
	// host from the sandbox comes Sanitized); empty for what passes and
	// for the DNS query's denies, whose Reason and Pattern say it all.
	Detail string
}

// Allowed reports whether the decision lets the traffic through.
func (d Decision) Allowed() bool { return d.Result != Deny }

func matchAny(ps []Pattern, host string, dest netip.Addr, port uint16) (Pattern, bool) {
	for _, p := range ps {
		if (host != "" && p.MatchHost(host, port)) || (dest.IsValid() && p.MatchAddr(dest, port)) {
			return p, true
		}
	}
	return Pattern{}, false
}

// decideLists is the policy's own part of the HTTP verdict (Verdicts.HTTP
// runs it, then the destination's checks): denied_hosts, the handlers,
// allowed_hosts, internet. Its denies have no Detail yet.
func (c *Compiled) decideLists(host string, dest netip.Addr, port uint16, hasHandler, hasCatchAll bool) Decision {
	if p, ok := matchAny(c.denied, host, dest, port); ok {
		return Decision{Result: Deny, Reason: ReasonDenied, Pattern: p.raw}
	}
	if hasHandler {
		return Decision{Result: Handler, Reason: ReasonHandler}
	}
	p, allowed := matchAny(c.allowed, host, dest, port)
	if len(c.allowed) > 0 && !allowed {
		return Decision{Result: Deny, Reason: ReasonNotAllowed}
	}
	if hasCatchAll {
		return Decision{Result: CatchAll, Reason: ReasonCatchAll}
	}
	if allowed {
		return Decision{Result: Forward, Reason: ReasonAllowed, Pattern: p.raw}
	}
	if c.Policy.Internet {
		return Decision{Result: Forward, Reason: ReasonInternet}
	}
	return Decision{Result: Deny, Reason: ReasonOff}
}

// decideName decides whether a name may be resolved: the DNS query's
// verdict (Verdicts.DNSQuery), and what lets the Host check resolve a name.
func (c *Compiled) decideName(name string, isHandler bool) Decision {
	if p, ok := matchAny(c.denied, name, netip.Addr{}, 0); ok {
		return Decision{Result: Deny, Reason: ReasonDenied, Pattern: p.raw}
	}
	if isHandler {
		return Decision{Result: Handler, Reason: ReasonHandler}
	}
	p, allowed := matchAny(c.allowed, name, netip.Addr{}, 0)
	switch {
	case len(c.allowed) > 0 && !allowed:
		return Decision{Result: Deny, Reason: ReasonNotAllowed}
	case allowed:
		return Decision{Result: Forward, Reason: ReasonAllowed, Pattern: p.raw}
	case c.Policy.Internet:
		return Decision{Result: Forward, Reason: ReasonInternet}
	}
	return Decision{Result: Deny, Reason: ReasonOff}
}

// Denies reports whether a denied_hosts hostname entry matches name on port
// (0: any port, as for DNS), and which.
func (c *Compiled) Denies(name string, port uint16) (pattern string, denied bool) {
	name = normName(name)
	for _, p := range c.denied {
		if !p.prefix.IsValid() && p.MatchHost(name, port) {
			return p.raw, true
		}
	}
	return "", false
}

// DeniesNames reports whether the policy has hostname entries in
// denied_hosts: only such a policy needs the addresses of denied names.
func (c *Compiled) DeniesNames() bool {
	for _, p := range c.denied {
		if !p.prefix.IsValid() {
			return true
		}
	}
	return false
}

// AllowsAddress reports whether an IP/CIDR allowed_hosts entry names dest
// explicitly: the only way through to a protected destination.
func (c *Compiled) AllowsAddress(dest netip.Addr, port uint16) bool {
	for _, p := range c.allowed {
		if p.MatchAddr(dest, port) {
			return true
		}
	}
	return false
}

// Inbound returns the policy's inbound entries, parsed.
func (c *Compiled) Inbound() []Inbound { return c.inbound }

// AdmitsInbound reports whether an inbound entry lets src open a
// connection to the sandbox on port over proto, and which entry.
func (c *Compiled) AdmitsInbound(src netip.Addr, proto string, port uint16) (string, bool) {
	for _, in := range c.inbound {
		if in.Admits(src, proto, port) {
			return in.raw, true
		}
	}
	return "", false
}

// AddrBook remembers, per sandbox, the addresses the daemon's DNS gave it
// for each name, until the record's TTL runs out. A forwarded request must go
// to an address consistent with its Host, and this is the first place that
// consistency is looked up.
//
// It also keeps, for every address any answer carried, the names it was an
// answer for: a request to an address whose Host names nothing (an IP
// literal, or none) is denied to a sandbox whose policy denies one of them.
type AddrBook struct {
	mu sync.Mutex
	m  map[string]map[string][]learned // sandbox → name → addresses
	// names: address → name → when that answer expires; indexed counts
	// its (address, name) pairs.
	names     map[netip.Addr]map[string]time.Time
	indexed   int
	lastSweep time.Time
	// clock is time.Now unless a test sets it: answers expire by it.
	clock func() time.Time
}

func (b *AddrBook) now() time.Time {
	if b.clock != nil {
		return b.clock()
	}
	return time.Now()
}

// Bounds on the reverse index: what DNS answers can make the daemon keep
// (about 13 MiB at most). When it is full, live entries are kept and new
// ones dropped: a sandbox flooding it cannot push out what a deny relies
// on, though it can keep names learned later out of it (docs/security.md).
const (
	maxIndexedPairs    = 1 << 17
	maxNamesPerAddress = 16
)

type learned struct {
	addr    netip.Addr
	expires time.Time
}

// maxNamesPerSandbox bounds what one sandbox can make the daemon remember.
const maxNamesPerSandbox = 4096

// Learn records addrs as answers for name given to sandbox, for ttl.
func (b *AddrBook) Learn(sandbox, name string, addrs []netip.Addr, ttl time.Duration) {
	if len(addrs) == 0 {
		return
	}
	name = normName(name)
	exp := b.now().Add(max(ttl, time.Second))
	b.mu.Lock()
	defer b.mu.Unlock()
	b.index(name, addrs, exp)
	if b.m == nil {
		b.m = map[string]map[string][]learned{}
	}
	names := b.m[sandbox]
	if names == nil {
		names = map[string][]learned{}
		b.m[sandbox] = names
	}
	if len(names) >= maxNamesPerSandbox {
		now := b.now()
		for n, ls := range names {
			live := ls[:0]
			for _, l := range ls {
				if l.expires.After(now) {
					live = append(live, l)
				}
			}
			if len(live) == 0 {
				delete(names, n)
			} else {
				names[n] = live
			}
		}
		if len(names) >= maxNamesPerSandbox {
			return
		}
	}
	ls := names[name]
	for _, a := range addrs {
		found := false
		for i := range ls {
			if ls[i].addr == a.Unmap() {
				ls[i].expires, found = exp, true
			}
		}
		if !found {
			ls = append(ls, learned{a.Unmap(), exp})
		}
	}
	names[name] = ls
}

// index records name as an answer for each of addrs until exp.
func (b *AddrBook) index(name string, addrs []netip.Addr, exp time.Time) {
	if b.names == nil {
		b.names = map[netip.Addr]map[string]time.Time{}
	}
	for _, a := range addrs {
		a = a.Unmap()
		ns := b.names[a]
		old, known := ns[name]
		if !known {
			if b.indexed >= maxIndexedPairs && b.now().Sub(b.lastSweep) > time.Second {
				// At most once a second: a full index of live entries
				// would otherwise cost a walk of it per answer.
				b.sweepIndex()
			}
			if b.indexed >= maxIndexedPairs || len(ns) >= maxNamesPerAddress {
				continue
			}
			if ns == nil {
				ns = map[string]time.Time{}
				b.names[a] = ns
			}
			b.indexed++
		}
		if old.Before(exp) {
			ns[name] = exp
		}
	}
}

func (b *AddrBook) sweepIndex() {
	now := b.now()
	b.lastSweep = now
	for a, ns := range b.names {
		for n, exp := range ns {
			if !exp.After(now) {
				delete(ns, n)
				b.indexed--
			}
		}
		if len(ns) == 0 {
			delete(b.names, a)
		}
	}
}

// NamesOf returns the names DNS answers (to any sandbox, or to the daemon)
// gave a as an address of, while those answers live.
func (b *AddrBook) NamesOf(a netip.Addr) []string {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for n, exp := range b.names[a.Unmap()] {
		if exp.After(now) {
			out = append(out, n)
		}
	}
	return out
}

// Indexed calls fn for every live (address, name) the book holds, with the
// time left: what a policy change re-applies its denies from.
func (b *AddrBook) Indexed(fn func(a netip.Addr, name string, left time.Duration)) {
	now := b.now()
	type entry struct {
		a    netip.Addr
		name string
		left time.Duration
	}
	var live []entry
	b.mu.Lock()
	for a, ns := range b.names {
		for n, exp := range ns {
			if exp.After(now) {
				live = append(live, entry{a, n, exp.Sub(now)})
			}
		}
	}
	b.mu.Unlock()
	for _, e := range live {
		fn(e.a, e.name, e.left)
	}
}

// Knows reports whether sandbox was told that name has address a.
func (b *AddrBook) Knows(sandbox, name string, a netip.Addr) bool {
	name = normName(name)
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, l := range b.m[sandbox][name] {
		if l.addr == a.Unmap() && l.expires.After(now) {
			return true
		}
	}
	return false
}

// Forget drops what a sandbox learned (on delete).
func (b *AddrBook) Forget(sandbox string) {
	b.mu.Lock()
	delete(b.m, sandbox)
	b.mu.Unlock()
}

// normName is how patterns and decisions compare a name: lowercased, one
// trailing dot dropped. Names reach it either from NormalizeHost (Host
// headers, handler hosts) or as DNS question names, which must not lose a
// port or brackets they cannot have (see NormalizeHost).
func normName(n string) string { return strings.TrimSuffix(strings.ToLower(n), ".") }

// Caller is who sent a request or query: the sandbox the source address
// belongs to and its policy at that moment.
type Caller struct {
	Sandbox string
	Policy  *Compiled
	// Addr is the sandbox's address: what another sandbox's inbound
	// entries must admit for a forward to it (Verdicts.Sandbox).
	Addr netip.Addr
	// Worker names the sandbox's worker (config workers[].name), "" for
	// none: its per-host functions count as handlers for the policy and
	// its outbound function as the sandbox's catch-all.
	Worker string
	// Limits are the sandbox's own limits; a nil field, the daemon's.
	Limits Limits
}
