package policy

import (
	"fmt"
	"net/netip"
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
}

// Compiled is a validated policy, ready to decide. It is immutable; a policy
// change swaps in a new one.
type Compiled struct {
	Policy  Policy
	allowed []Pattern
	denied  []Pattern
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
	if p.AllowedHosts == nil {
		p.AllowedHosts = []string{}
	}
	if p.DeniedHosts == nil {
		p.DeniedHosts = []string{}
	}
	return &Compiled{Policy: p, allowed: allowed, denied: denied}, nil
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
	ReasonMismatch   = "host_mismatch"
	ReasonUnknown    = "unknown_source"
)

// Reasons lists every reason, for metrics.
var Reasons = []string{ReasonHandler, ReasonCatchAll, ReasonAllowed, ReasonInternet, ReasonDenied, ReasonNotAllowed, ReasonOff, ReasonProtected, ReasonMismatch, ReasonUnknown}

// Decision is the outcome of a policy check, with its reason.
type Decision struct {
	Result Result
	Reason string
	// Pattern is the pattern that decided, if one did.
	Pattern string
}

// Allowed reports whether the decision lets the traffic through.
func (d Decision) Allowed() bool { return d.Result != Deny }

// HTTPRequest is what an HTTP decision looks at.
type HTTPRequest struct {
	// Host is the normalised Host (no port); may be empty.
	Host string
	// Port is the destination port.
	Port uint16
	// Dest is the address the sandbox connected to.
	Dest netip.Addr
	// HasHandler: a per-host handler is configured for Host (or Dest is
	// a handler's virtual address).
	HasHandler bool
	// HasCatchAll: a catch-all handler is configured.
	HasCatchAll bool
}

func matchAny(ps []Pattern, host string, dest netip.Addr, port uint16) (Pattern, bool) {
	for _, p := range ps {
		if (host != "" && p.MatchHost(host, port)) || (dest.IsValid() && p.MatchAddr(dest, port)) {
			return p, true
		}
	}
	return Pattern{}, false
}

// DecideHTTP applies the documented order to an intercepted request.
func (c *Compiled) DecideHTTP(r HTTPRequest) Decision {
	if p, ok := matchAny(c.denied, r.Host, r.Dest, r.Port); ok {
		return Decision{Deny, ReasonDenied, p.raw}
	}
	if r.HasHandler {
		return Decision{Handler, ReasonHandler, ""}
	}
	p, allowed := matchAny(c.allowed, r.Host, r.Dest, r.Port)
	if len(c.allowed) > 0 && !allowed {
		return Decision{Deny, ReasonNotAllowed, ""}
	}
	if r.HasCatchAll {
		return Decision{CatchAll, ReasonCatchAll, ""}
	}
	if allowed {
		return Decision{Forward, ReasonAllowed, p.raw}
	}
	if c.Policy.Internet {
		return Decision{Forward, ReasonInternet, ""}
	}
	return Decision{Deny, ReasonOff, ""}
}

// DecideDNS decides whether a name is answered: handler names always (unless
// denied); otherwise as an HTTP request for that host would be, so a client
// learns of a block at resolution time instead of hanging later.
func (c *Compiled) DecideDNS(name string, isHandler bool) Decision {
	if p, ok := matchAny(c.denied, name, netip.Addr{}, 0); ok {
		return Decision{Deny, ReasonDenied, p.raw}
	}
	if isHandler {
		return Decision{Handler, ReasonHandler, ""}
	}
	p, allowed := matchAny(c.allowed, name, netip.Addr{}, 0)
	switch {
	case len(c.allowed) > 0 && !allowed:
		return Decision{Deny, ReasonNotAllowed, ""}
	case allowed:
		return Decision{Forward, ReasonAllowed, p.raw}
	case c.Policy.Internet:
		return Decision{Forward, ReasonInternet, ""}
	}
	return Decision{Deny, ReasonOff, ""}
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
