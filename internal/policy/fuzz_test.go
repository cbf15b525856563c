package policy

import (
	"net/netip"
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
