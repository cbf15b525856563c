package policy

import (
	"net"
	"net/netip"
	"strings"
)

// NormalizeHost is the one form of a host the daemon compares: a Host
// header (router), a handler's host in the config (config, daemon, the DNS
// shim's handler names) and a host an operator names (admin). It trims
// spaces, lowercases, strips a port, the brackets of an IPv6 literal and
// trailing dots, and turns an IPv4-mapped IPv6 literal into the IPv4
// address, so that every decision (patterns, the Host check, the log) sees
// the same host whichever way it was written.
//
// It is not for DNS question names: a qname has no port or brackets, and
// stripping them would answer "my.kv:80." as the handler my.kv.
func NormalizeHost(h string) string {
	// Repeat until nothing changes, so that normalising twice is the same
	// as once whatever a client sends (the fuzzer found "[[]." and "..").
	for {
		prev := h
		h = strings.TrimSpace(h)
		if strings.IndexByte(h, ':') >= 0 { // else SplitHostPort only fails, allocating its error
			if host, _, err := net.SplitHostPort(h); err == nil {
				h = host
			}
		}
		if len(h) >= 2 && h[0] == '[' && h[len(h)-1] == ']' {
			h = h[1 : len(h)-1]
		}
		h = strings.ToLower(strings.TrimRight(h, "."))
		if strings.IndexByte(h, ':') >= 0 {
			// An IPv4-mapped IPv6 literal names an IPv4 address.
			if a, err := netip.ParseAddr(h); err == nil && a.Is4In6() {
				h = a.Unmap().String()
			}
		}
		if h == prev {
			return h
		}
	}
}

// Sanitize is how a decision's Detail quotes what the sandbox sent (a
// Host, a name learned from DNS): at most 32 bytes, anything but
// printable ASCII as '?', so a deny body or log line carries no control
// characters or lookalikes from it. Every message that quotes the sandbox
// (deny details, handler errors) goes through it.
func Sanitize(s string) string {
	if len(s) > 32 {
		s = s[:32]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, s)
}
