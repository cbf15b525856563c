// Package policy decides where a sandbox may go. A Policy (internet on or
// off, allowed and denied host patterns) compiles into a Compiled policy.
// Verdicts applies it, with what the daemon knows beyond it (the protected
// destinations, the addresses its DNS gave, its resolver), to every
// intercepted request and DNS query, and returns a Decision that explains
// itself: the result, a reason from a closed set, the pattern that decided
// and a detail, so that the deny body, the decision log and the metrics
// all say why. The router and the DNS shim only act on it; no check lives
// outside this order.
//
// The order for an intercepted HTTP request (Verdicts.HTTP); the first
// step that decides, decides:
//
//  1. the source is not a sandbox                 → deny (unknown_source)
//  2. the destination is a handler's virtual
//     address, denied_hosts matches its name      → deny (denied_host)
//  3. denied_hosts matches the Host or the
//     destination                                 → deny (denied_host)
//  4. a per-host handler (for the Host, else for
//     the virtual address dialled): a function of
//     the caller's worker, else a built-in one     → that handler
//  5. allowed_hosts set, no match                 → deny (not_allowed)
//  6. a catch-all handler (the outbound of the
//     caller's worker, else the configured one)   → that handler
//  7. no allowed_hosts match and internet off     → deny (internet_off)
//  8. a protected destination, then a private
//     one, unless an IP/CIDR allowed_hosts entry
//     names it on its port                        → deny (protected_destination,
//     private_destination)
//     and, for another sandbox's address so
//     opened, its inbound entries do not admit
//     the caller on that TCP port                 → deny (protected_destination)
//  9. the Host is an IP literal or absent, and a
//     name DNS answered with the destination (to
//     any sandbox) matches denied_hosts           → deny (denied_host)
//  10. the destination is not an address of the
//     Host: not the Host literally, not given for
//     it by the daemon's DNS, and not what the
//     daemon resolves it to now (asked only when
//     the sandbox may resolve the Host itself,
//     within its DNS budget: Verdicts.Charge)    → deny (host_mismatch)
//  11. otherwise                                  → forward (allowed,
//     internet_on)
//
// Per-host handlers configured by the operator (a worker's per-host
// functions among them) are not blocked by an allowlist meant for the
// internet; only denied_hosts stops them. Handlers
// answer in the daemon, so steps 8 to 10, which guard where a forward
// goes, do not apply to them (the catch-all answers for a protected
// address too).
//
// A TLS connection to port 443 (Verdicts.TLS) takes the HTTP order with
// its ClientHello's SNI in the Host's place, before any byte of it is
// passed on: without a catch-all (nothing reads the stream), a handler's
// name or virtual address refused (handler_not_https: handlers answer over
// HTTP), and step 10's refusal named sni_mismatch. Without an SNI the
// address decides, as for a request without a Host.
//
// The order for a DNS query (Verdicts.DNSQuery, before anything goes
// upstream), then for the answer an upstream gives (Verdicts.DNSAnswer); a
// query from an address that is no sandbox's is refused before step 1 (the
// shim is no open resolver):
//
//  1. denied_hosts matches the name               → denied rcode (denied_host)
//  2. a handler's name (a built-in handler's, or
//     one the caller's worker serves)             → its virtual address
//  3. allowed_hosts set, no match                 → denied rcode (not_allowed)
//  4. no allowed_hosts match and internet off     → denied rcode (internet_off)
//  5. forwarded; a CNAME in the answer leads to a
//     name denied_hosts matches                   → denied rcode (denied_host)
//  6. each address record of a protected, then a
//     private destination that no IP/CIDR
//     allowed_hosts entry names (on any port)     → removed
//  7. every address record removed               → denied rcode (the last
//     removal's reason)
//  8. otherwise                                   → the answer, less what 6
//     removed
//
// Routed (non-HTTP) traffic meets the same lists and closed destinations
// in the kernel rules and ipsets the daemon builds from them
// (Destinations, PrivatePrefixes, the addresses DNS answers).
package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// Pattern is one entry of allowed_hosts or denied_hosts: a hostname glob
// (`*` matches any run of characters, dots included; case-insensitive; a
// trailing dot ignored), an IP or a CIDR, each optionally with `:port`
// (IPv6 in brackets: `[2001:db8::1]:443`).
type Pattern struct {
	raw    string
	glob   *regexp.Regexp // hostname patterns
	host   string         // exact hostname when it has no '*'
	prefix netip.Prefix   // IP and CIDR patterns
	port   uint16         // 0: any port
}

var (
	// ErrInvalidPattern is returned (wrapped, naming the pattern) for a
	// pattern that is neither a hostname glob, an IP nor a CIDR.
	ErrInvalidPattern = errors.New("invalid pattern")
	globRE            = regexp.MustCompile(`^[a-z0-9*_]([a-z0-9*_.-]*[a-z0-9*_])?$`)
)

// ParsePattern parses one pattern.
func ParsePattern(s string) (Pattern, error) {
	p := Pattern{raw: s}
	bad := func(why string) (Pattern, error) {
		return Pattern{}, fmt.Errorf("%w %q: %s", ErrInvalidPattern, s, why)
	}
	v := strings.TrimSpace(s)
	if v == "" {
		return bad("empty")
	}
	// Split a port off: "host:443", "10.0.0.0/8:443", "[::1]:443".
	if strings.HasPrefix(v, "[") {
		end := strings.Index(v, "]")
		if end < 0 {
			return bad("unclosed [")
		}
		rest := v[end+1:]
		v = v[1:end]
		if rest != "" {
			if !strings.HasPrefix(rest, ":") {
				return bad("junk after ]")
			}
			port, err := parsePort(rest[1:])
			if err != nil {
				return bad(err.Error())
			}
			p.port = port
		}
	} else if i := strings.LastIndexByte(v, ':'); i >= 0 && strings.Count(v, ":") == 1 {
		port, err := parsePort(v[i+1:])
		if err != nil {
			return bad(err.Error())
		}
		v, p.port = v[:i], port
	}
	if pre, err := netip.ParsePrefix(v); err == nil {
		p.prefix = pre.Masked()
		return p, nil
	}
	if a, err := netip.ParseAddr(v); err == nil {
		p.prefix = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		return p, nil
	}
	if strings.Contains(v, "/") {
		return bad("not a valid CIDR")
	}
	h := normName(v)
	if !globRE.MatchString(h) || strings.Contains(h, "..") {
		return bad("not a hostname glob, IP or CIDR")
	}
	if !strings.Contains(h, "*") {
		p.host = h
		return p, nil
	}
	parts := strings.Split(h, "*")
	for i, part := range parts {
		parts[i] = regexp.QuoteMeta(part)
	}
	p.glob = regexp.MustCompile("^" + strings.Join(parts, ".*") + "$")
	return p, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q is not 1-65535", s)
	}
	return uint16(n), nil
}

// String returns the pattern as written.
func (p Pattern) String() string { return p.raw }

// IsAddress reports whether the pattern is an IP or CIDR.
func (p Pattern) IsAddress() bool { return p.prefix.IsValid() }

func (p Pattern) portOK(port uint16) bool { return p.port == 0 || p.port == port }

// MatchHost reports whether a hostname (or an IP literal) on a port matches.
// Port 0 means "any port" (DNS names have none).
func (p Pattern) MatchHost(host string, port uint16) bool {
	if port != 0 && !p.portOK(port) {
		return false
	}
	host = normName(host)
	if p.prefix.IsValid() {
		a, err := netip.ParseAddr(host)
		return err == nil && p.prefix.Contains(a.Unmap())
	}
	if p.glob != nil {
		return p.glob.MatchString(host)
	}
	return p.host == host
}

// MatchAddr reports whether an address on a port matches an IP/CIDR pattern.
func (p Pattern) MatchAddr(a netip.Addr, port uint16) bool {
	return p.prefix.IsValid() && p.portOK(port) && p.prefix.Contains(a.Unmap())
}

// ParsePatterns parses a list, naming every invalid entry.
func ParsePatterns(list []string) ([]Pattern, error) {
	out := make([]Pattern, 0, len(list))
	var errs []error
	for _, s := range list {
		p, err := ParsePattern(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, p)
	}
	return out, errors.Join(errs...)
}

// Prefix is the address or CIDR of an IP/CIDR pattern.
func (p Pattern) Prefix() netip.Prefix { return p.prefix }

// Port is the pattern's port, 0 for any.
func (p Pattern) Port() uint16 { return p.port }
