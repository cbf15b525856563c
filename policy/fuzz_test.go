package policy

import (
	"net"
	"net/netip"
	"strings"
	"testing"
)

// FuzzPattern parses arbitrary patterns: an accepted one must match its own
// literal host or address, and matching must never panic.
func FuzzPattern(f *testing.F) {
	for _, s := range []string{"api.github.com", "*.github.com", "10.0.0.0/8:443", "[2001:db8::1]:80", "*", "a*b*c", "1.2.3.4", "x:0", "[::1", ""} {
		f.Add(s, "api.github.com", uint16(443))
	}
	f.Fuzz(func(t *testing.T, pattern, host string, port uint16) {
		p, err := ParsePattern(pattern)
		if err != nil {
			return
		}
		p.MatchHost(host, port)
		if a, err := netip.ParseAddr(host); err == nil {
			p.MatchAddr(a, port)
		}
		if p.host != "" && !p.MatchHost(p.host, p.port) {
			t.Fatalf("%q does not match its own host %q", pattern, p.host)
		}
		if p.IsAddress() && !p.MatchAddr(p.prefix.Addr(), p.port) {
			t.Fatalf("%q does not match its own address", pattern)
		}
	})
}

// FuzzNormalizeHost: normalising is idempotent and yields no uppercase, no
// port, no trailing dot and no IPv4-mapped IPv6 literal (those become their
// IPv4 address); a port after a name or an IPv4 address goes, as does the
// ::ffff: of a mapped IPv4 address, whatever brackets and port it comes in.
func FuzzNormalizeHost(f *testing.F) {
	for _, s := range []string{"my.kv", "MY.KV:8080", "my.kv.", "[::1]:80", "", "a:b:c", "[", "::1", "[::ffff:192.0.2.1]:80", "::FFFF:C000:0201", "1.2.3.4.:80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		n := NormalizeHost(h)
		if n2 := NormalizeHost(n); n2 != n {
			t.Fatalf("NormalizeHost not idempotent: %q -> %q -> %q", h, n, n2)
		}
		if n != strings.ToLower(n) {
			t.Fatalf("%q normalises to %q, not lowercase", h, n)
		}
		if strings.HasSuffix(n, ".") {
			t.Fatalf("%q normalises to %q, with a trailing dot", h, n)
		}
		if host, port, err := net.SplitHostPort(n); err == nil {
			t.Fatalf("%q normalises to %q, still host %q and port %q", h, n, host, port)
		}
		a, err := netip.ParseAddr(n)
		if err == nil && a.Is4In6() {
			t.Fatalf("%q normalises to %q, an IPv4-mapped literal", h, n)
		}
		if !strings.ContainsAny(h, ":[]") {
			// A name or an IPv4 address: a port after it changes nothing.
			if p := NormalizeHost(h + ":8080"); p != n {
				t.Fatalf("%q normalises to %q, but with a port to %q", h, n, p)
			}
		}
		if err == nil && a.Is4() {
			for _, m := range []string{"::ffff:" + n, "[::ffff:" + n + "]", "[::FFFF:" + n + "]:80"} {
				if got := NormalizeHost(m); got != n {
					t.Fatalf("%q normalises to %q, want the IPv4 address %q", m, got, n)
				}
			}
		}
	})
}
