// Package policy decides where a sandbox may go. A Policy (internet on or
// off, allowed and denied host patterns) compiles into a Compiled policy
// whose Decide methods return a Decision that carries its reason, so the deny
// body, the decision log and the metrics all say why.
//
// The order for an intercepted HTTP request:
//
//  1. a denied_hosts match          → deny (denied_host)
//  2. a per-host handler            → that handler
//  3. allowed_hosts set, no match   → deny (not_allowed)
//  4. a catch-all handler           → that handler
//  5. an allowed match, or internet → forward
//  6. otherwise                     → deny (internet_off)
//
// Per-host handlers configured by the operator are not blocked by an
// allowlist meant for the internet; only denied_hosts stops them.
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
