package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Verdicts makes every decision the daemon takes about what a sandbox sends
// through it, each in the one order the package comment lists: an
// intercepted HTTP request (HTTP), a DNS query (DNSQuery) and the answer
// an upstream gave it (DNSAnswer). Callers map the Decision to what they
// do (a route, an rcode) and never add a check of their own, so that the
// order read in the package comment is the order that runs.
//
// It holds what those decisions need beyond the caller's policy. The zero
// Verdicts closes only the private networks, knows no DNS answers and
// never resolves: a Host then passes its consistency check (a router
// without the daemon's DNS has nothing to check it against).
type Verdicts struct {
	// Protected says why an address is a protected destination ("" when it
	// is not): Destinations.Protected, with the daemon host's own addresses.
	// nil closes only the private networks.
	Protected func(netip.Addr) string
	// Book holds the addresses the daemon's DNS gave each sandbox. It is
	// where the Host check looks first, and where a request whose Host
	// names no hostname finds the names its address was given for.
	Book *AddrBook
	// Resolve resolves a name through the daemon's upstreams, for the Host
	// check when Book does not know the answer. nil: never resolve (and,
	// with a Book, a Host the Book does not know is a mismatch). The DNS
	// decisions never resolve.
	Resolve func(name string) ([]netip.Addr, time.Duration, error)
	// Charge, when set, is asked before Resolve resolves a name for the
	// Host check on a sandbox's behalf: it takes one query from the
	// caller's DNS budget (dns.max_qps_per_sandbox, as a query the sandbox
	// sent would) and says whether there was one. Without one nothing is
	// resolved and the check fails, so that Host headers and SNIs naming
	// fresh names are no way around the sandbox's DNS rate.
	Charge func(caller Caller) bool
	// Sandbox returns the policy of the sandbox at an address, if one is
	// there. A forward to another sandbox (which only an explicit IP/CIDR
	// allow opens) goes from the daemon, past the kernel's inbound rules,
	// so it is held to them here: the other sandbox's inbound entries must
	// admit the caller's address on that TCP port. nil: no such check.
	Sandbox func(netip.Addr) (*Compiled, bool)
}

// HTTPRequest is what the HTTP verdict looks at.
type HTTPRequest struct {
	// Host is the Host header as NormalizeHost left it; "" when there is
	// none (HTTP/1.0).
	Host string
	// Dest is the address and port the sandbox connected to.
	Dest netip.AddrPort
	// Virtual is the handler's name when Dest is a handler's virtual
	// address, else "". The address names that handler whatever the Host
	// says, so a deny of either name holds.
	Virtual string
	// HasHandler: a per-host handler is configured for Host.
	HasHandler bool
	// HasCatchAll: a catch-all handler is configured.
	HasCatchAll bool
}

// Deny details that name no host.
const detailUnknown = "the source address is not a sandbox"

// HTTP decides an intercepted request from caller, in the package
// comment's order. A caller without a policy is not a sandbox. A Handler
// result is served by the handler for Host, or, when Host has none, by the
// one whose virtual address was dialled.
//
// It may block on Resolve (the Host check), only for a forward to an
// address the daemon's DNS did not give the sandbox for Host.
func (v *Verdicts) HTTP(caller Caller, r HTTPRequest) Decision {
	c := caller.Policy
	if c == nil {
		return Decision{Result: Deny, Reason: ReasonUnknown, Detail: detailUnknown}
	}
	dest, port := r.Dest.Addr(), r.Dest.Port()
	if r.Virtual != "" && r.Virtual != r.Host {
		// Dialled by address: the handler's own name must not be denied
		// either, whatever the Host says (an IP literal, none, or another).
		if p, ok := matchAny(c.denied, r.Virtual, dest, port); ok {
			return listDeny(Decision{Result: Deny, Reason: ReasonDenied, Pattern: p.raw}, r.Virtual)
		}
	}
	d := c.decideLists(r.Host, dest, port, r.HasHandler || r.Virtual != "", r.HasCatchAll)
	switch d.Result {
	case Deny:
		return listDeny(d, r.Host)
	case Handler, CatchAll:
		// The operator's handlers answer in the daemon: nothing is
		// forwarded, so the destination's checks do not apply.
		return d
	}
	if reason, why := Closed(v.Protected, dest); reason != "" && !c.AllowsAddress(dest, port) {
		return Decision{Result: Deny, Reason: reason,
			Detail: fmt.Sprintf("destination %s is %s; only an IP/CIDR allowed_hosts entry opens it", dest, why)}
	}
	if v.Sandbox != nil {
		if to, ok := v.Sandbox(dest); ok && to != nil {
			if _, in := to.AdmitsInbound(caller.Addr, "tcp", port); !in {
				return Decision{Result: Deny, Reason: ReasonProtected,
					Detail: fmt.Sprintf("destination %s is a sandbox whose inbound policy does not admit this one on tcp port %d", dest, port)}
			}
		}
	}
	if isAddressHost(r.Host) {
		// The Host names no name a deny could match: the names DNS gave for
		// this address do. A name never resolved through the shim is not
		// known here (docs/security.md).
		if name, p, ok := v.deniedName(c, r.Dest); ok {
			return Decision{Result: Deny, Reason: ReasonDenied, Pattern: p,
				Detail: fmt.Sprintf("destination %s is an address of %s, which matches denied_hosts entry %q", dest, Sanitize(name), p)}
		}
	}
	if !v.consistent(caller, r.Host, dest) {
		return Decision{Result: Deny, Reason: ReasonMismatch,
			Detail: fmt.Sprintf("destination %s is not an address of %s", dest, Sanitize(r.Host))}
	}
	return d
}

// TLSHello is what the TLS verdict looks at: a connection to port 443 and
// the ClientHello it opened with.
type TLSHello struct {
	// SNI is the ClientHello's server name as NormalizeHost left it; ""
	// when it has none (or the connection did not open with a ClientHello).
	// With ECH it is the outer, public name: the only one the daemon sees.
	SNI string
	// Dest is the address and port the sandbox connected to.
	Dest netip.AddrPort
	// Virtual is the handler's name when Dest is a handler's virtual
	// address, else "".
	Virtual string
	// HasHandler: a per-host handler is configured for SNI (a built-in
	// one, or a function of the caller's worker).
	HasHandler bool
	// Intercept: that handler (or Virtual's) is marked for HTTPS: the
	// daemon terminates TLS for it with its own CA and serves the requests
	// inside as it serves port 80's.
	Intercept bool
}

// TLS decides a TLS connection (port 443) from caller by its ClientHello,
// before a byte of it reaches the destination: the HTTP order, with the
// SNI in the Host's place, and three differences, since nothing in the
// daemon reads the stream:
//
//   - no catch-all: a connection it would have served is decided by the
//     lists and the destination as if there were none;
//   - a handler's name, or its virtual address, is the Handler decision if
//     the handler is marked for HTTPS (Intercept: the daemon terminates TLS
//     and serves it), and is refused with handler_not_https otherwise: the
//     virtual address is no place to pass a stream on to;
//   - the consistency check's refusal is sni_mismatch: the address
//     dialled must be the SNI literally, one the daemon's DNS gave for it,
//     or one the daemon resolves it to (as for a Host).
//
// Without an SNI (a client that sends none, or a connection that is not
// TLS) the address decides, as for a request without a Host: the lists'
// IP/CIDR entries, internet on or off, the closed destinations and the
// names DNS gave for the address.
func (v *Verdicts) TLS(caller Caller, h TLSHello) Decision {
	d := v.HTTP(caller, HTTPRequest{Host: h.SNI, Dest: h.Dest, Virtual: h.Virtual, HasHandler: h.HasHandler})
	switch {
	case d.Result == Handler && h.Intercept:
		return d
	case d.Result == Handler:
		name := h.SNI
		if !h.HasHandler && h.Virtual != "" {
			name = h.Virtual
		}
		return Decision{Result: Deny, Reason: ReasonNoHTTPS, Pattern: d.Pattern,
			Detail: fmt.Sprintf("%s is served by a handler over HTTP only; its handler is not marked for HTTPS", Sanitize(name))}
	case d.Reason == ReasonMismatch:
		d.Reason = ReasonSNIMismatch
		d.Detail = fmt.Sprintf("destination %s is not an address of %s, the ClientHello's server name", h.Dest.Addr(), Sanitize(h.SNI))
	}
	return d
}

// listDeny adds the detail to a deny of the policy's lists; host is the
// name it was decided for, as the sandbox sent it (so sanitized).
func listDeny(d Decision, host string) Decision {
	h := Sanitize(host)
	if h == "" {
		h = "a connection that names no host" // HTTP/1.0 without a Host, TLS without an SNI
	}
	switch d.Reason {
	case ReasonDenied:
		d.Detail = fmt.Sprintf("%s matches denied_hosts entry %q", h, d.Pattern)
	case ReasonNotAllowed:
		d.Detail = fmt.Sprintf("%s is not in allowed_hosts", h)
	case ReasonOff:
		d.Detail = fmt.Sprintf("internet access is off for this sandbox and %s is not allowed", h)
	default:
		d.Detail = d.Reason
	}
	return d
}

// isAddressHost reports whether a normalised Host names no hostname: none
// at all (HTTP/1.0), or an IP literal.
func isAddressHost(host string) bool {
	if host == "" {
		return true
	}
	_, err := netip.ParseAddr(host)
	return err == nil
}

// deniedName finds a name that DNS answered with dest (for any sandbox)
// and that c denies on dest's port.
func (v *Verdicts) deniedName(c *Compiled, dest netip.AddrPort) (name, pattern string, ok bool) {
	if v.Book == nil || !c.DeniesNames() {
		return "", "", false
	}
	for _, n := range v.Book.NamesOf(dest.Addr()) {
		if p, denied := c.Denies(n, dest.Port()); denied {
			return n, p, true
		}
	}
	return "", "", false
}

// consistent reports whether dest is an address of host: the host is that
// address literally, the daemon's DNS gave it to this sandbox (or to the
// daemon) for host, or the daemon resolves host to it now — only when the
// sandbox's policy would let it resolve host itself, so that a Host header
// is never a way to send a name (and the data in it) to a resolver on the
// sandbox's behalf, and only within the sandbox's DNS budget (Charge).
// The Host header is the sandbox's word; without this check,
// "Host: allowed.example" could go anywhere.
func (v *Verdicts) consistent(caller Caller, host string, dest netip.Addr) bool {
	if host == "" {
		return true // HTTP/1.0 without a Host: the address is all it names
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap() == dest
	}
	if v.Book == nil {
		return v.Resolve == nil
	}
	if v.Book.Knows(caller.Sandbox, host, dest) || v.Book.Knows("", host, dest) {
		return true
	}
	if v.Resolve == nil || !caller.Policy.decideName(host, false).Allowed() {
		return false
	}
	if v.Charge != nil && !v.Charge(caller) {
		return false
	}
	addrs, ttl, err := v.Resolve(host)
	if err != nil {
		return false
	}
	v.Book.Learn("", host, addrs, ttl)
	for _, a := range addrs {
		if a == dest {
			return true
		}
	}
	return false
}

// DNSQuery decides whether a sandbox's query for name is answered, before
// anything is sent upstream (a denied name never leaves the daemon):
// handler names always, unless denied; other names as an HTTP request for
// that host would be, so a client learns of a block at resolution time
// instead of hanging later. isHandler: name is a handler's. The decision's
// Reason and Pattern say why; its Detail is empty.
//
// A caller without a policy is not a sandbox: denied (unknown_source).
func (v *Verdicts) DNSQuery(caller Caller, name string, isHandler bool) Decision {
	if caller.Policy == nil {
		return Decision{Result: Deny, Reason: ReasonUnknown, Detail: detailUnknown}
	}
	return caller.Policy.decideName(name, isHandler)
}

// DNSAnswer is a forwarded answer as its screening sees it.
type DNSAnswer struct {
	// Names are the name asked, then every name the answer's CNAME records
	// lead to: the answer's addresses answer for each of them.
	Names []string
	// Addrs are the answer's address records (A and AAAA), in order.
	Addrs []netip.Addr
}

// Screened is the screening of a forwarded answer.
type Screened struct {
	// Decision denies the whole answer, or forwards it (with no reason:
	// the query's decision gave it) keeping the addresses Keeps keeps.
	Decision Decision
	// Removed says why the last address removed went, when the answer
	// passes without some of its addresses; zero when none was.
	Removed Decision
	keep    []bool // nil: every address stays
}

// Keeps reports whether the i-th of the answer's Addrs stays in it.
func (s Screened) Keeps(i int) bool { return s.keep == nil || s.keep[i] }

// DNSAnswer screens the answer an upstream gave to a query DNSQuery let
// through, steps 5 to 8 of the package comment's DNS order: the name was
// allowed, what it points at may not be. A CNAME into a denied name denies
// the answer; an address closed to the caller is removed, and an answer
// left with none of its addresses is denied.
//
// A caller without a policy is not a sandbox: denied (unknown_source).
func (v *Verdicts) DNSAnswer(caller Caller, a DNSAnswer) Screened {
	c := caller.Policy
	if c == nil {
		return Screened{Decision: Decision{Result: Deny, Reason: ReasonUnknown, Detail: detailUnknown}}
	}
	for i, n := range a.Names {
		if i == 0 {
			continue // the name asked: DNSQuery decided it
		}
		if p, denied := c.Denies(n, 0); denied {
			return Screened{Decision: Decision{Result: Deny, Reason: ReasonDenied, Pattern: p,
				Detail: "a CNAME leads to " + strings.TrimSuffix(n, ".")}}
		}
	}
	var s Screened
	kept := 0
	for i, addr := range a.Addrs {
		addr = addr.Unmap()
		if reason, why := Closed(v.Protected, addr); reason != "" && !c.NamesAddress(addr) {
			if s.keep == nil {
				s.keep = make([]bool, len(a.Addrs))
				for j := range i {
					s.keep[j] = true
				}
			}
			s.Removed = Decision{Result: Deny, Reason: reason, Detail: fmt.Sprintf("%s is %s", addr, why)}
			continue
		}
		if s.keep != nil {
			s.keep[i] = true
		}
		kept++
	}
	if s.Removed.Result != "" && kept == 0 {
		return Screened{Decision: s.Removed, keep: s.keep}
	}
	s.Decision = Decision{Result: Forward}
	return s
}
