package policy

import "fmt"

// Limits are one sandbox's own limits on what it may use of the daemon: a
// nil field takes the daemon's configured default (listen.*_per_sandbox,
// dns.max_qps_per_sandbox), a zero one means no limit for that sandbox.
// They travel with its policy in the Caller, so the router, the TLS front
// and the DNS shim read them where they read the policy.
type Limits struct {
	// RPS: intercepted HTTP requests served per second (bursts of twice
	// that); beyond it, 429.
	RPS *int `json:"max_rps,omitempty"`
	// Conns: intercepted HTTP and HTTPS connections held open at once (on
	// each listener); more are reset.
	Conns *int `json:"max_conns,omitempty"`
	// DNSQPS: DNS queries answered per second (bursts of twice that);
	// beyond it, REFUSED.
	DNSQPS *int `json:"max_dns_qps,omitempty"`
}

// LimitFields names the limits as the admin API, the CLI and CNI args
// write them.
var LimitFields = []string{"max_rps", "max_conns", "max_dns_qps"}

// Validate refuses a negative limit, naming it.
func (l Limits) Validate() error {
	for i, v := range []*int{l.RPS, l.Conns, l.DNSQPS} {
		if v != nil && *v < 0 {
			return fmt.Errorf("%s: %d is negative (0 means no limit; leave it out for the daemon's default)", LimitFields[i], *v)
		}
	}
	return nil
}

// Merge returns l with the fields o sets replacing l's.
func (l Limits) Merge(o Limits) Limits {
	if o.RPS != nil {
		l.RPS = o.RPS
	}
	if o.Conns != nil {
		l.Conns = o.Conns
	}
	if o.DNSQPS != nil {
		l.DNSQPS = o.DNSQPS
	}
	return l
}

// IsZero: no limit of the sandbox's own; every one is the daemon's.
func (l Limits) IsZero() bool { return l.RPS == nil && l.Conns == nil && l.DNSQPS == nil }

// Or returns *v, or def when v is nil (the daemon's default).
func Or(v *int, def int) int {
	if v != nil {
		return *v
	}
	return def
}
