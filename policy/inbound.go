package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Inbound is one entry of a policy's inbound list: who may open connections
// to the sandbox, and on which of its ports. Nothing enters a sandbox that no
// entry names; replies to the sandbox's own flows are not inbound and always
// pass.
//
// Written `SOURCE[:PORT[-PORT][/PROTO]]`: SOURCE an IPv4 address or CIDR,
// PORT one port or an inclusive range on the sandbox, PROTO tcp or udp
// (both when left out). Without a port every port and protocol is open to
// SOURCE. Examples: `10.244.0.0/16`, `10.96.0.0/12:8080/tcp`,
// `192.0.2.7:5000-5010/udp`.
type Inbound struct {
	raw string
	// Source is the sources' network.
	Source netip.Prefix
	// PortFrom and PortTo bound the destination ports (inclusive); both 0:
	// every port and every protocol.
	PortFrom, PortTo uint16
	// Proto is "tcp", "udp", or "" for both (with a port) or any (without).
	Proto string
}

// MaxInboundPorts is the widest port range one inbound entry may give. The
// kernel keeps one set element per port and protocol, so a wide range costs
// memory in a set every sandbox shares; an entry without a port opens every
// port at the cost of one element.
const MaxInboundPorts = 256

// ErrInvalidInbound is returned (wrapped, naming the entry and what is wrong
// with it) for an inbound entry that cannot be parsed.
var ErrInvalidInbound = errors.New("invalid inbound entry")

// ParseInbound parses one inbound entry.
func ParseInbound(s string) (Inbound, error) {
	bad := func(format string, args ...any) (Inbound, error) {
		return Inbound{}, fmt.Errorf("%w %q: %s", ErrInvalidInbound, s, fmt.Sprintf(format, args...))
	}
	in := Inbound{raw: s}
	v := strings.TrimSpace(s)
	if v == "" {
		return bad("empty")
	}
	src, ports, hasPort := strings.Cut(v, ":")
	if strings.HasPrefix(src, "[") || strings.Count(v, ":") > 1 {
		return bad("IPv6 is not supported: interception is IPv4 only")
	}
	switch p, err := netip.ParsePrefix(src); {
	case err == nil:
		if p.Masked() != p {
			// 10.1.2.3/16 opens 10.1.0.0/16: say so rather than open more
			// than the operator may have meant.
			return bad("source %s has host bits set: write %s", p, p.Masked())
		}
		in.Source = p
	default:
		a, aerr := netip.ParseAddr(src)
		if aerr != nil {
			return bad("source %q is not an IPv4 address or CIDR", src)
		}
		in.Source = netip.PrefixFrom(a, a.BitLen())
	}
	if !in.Source.Addr().Is4() {
		return bad("source %s is not IPv4: interception is IPv4 only", in.Source)
	}
	if !hasPort {
		return in, nil
	}
	portPart, proto, hasProto := strings.Cut(ports, "/")
	if hasProto {
		switch proto {
		case "tcp", "udp":
			in.Proto = proto
		default:
			return bad("protocol %q: want tcp or udp", proto)
		}
	}
	from, to, isRange := strings.Cut(portPart, "-")
	var err error
	if in.PortFrom, err = parsePort(from); err != nil {
		return bad("%v", err)
	}
	in.PortTo = in.PortFrom
	if isRange {
		if in.PortTo, err = parsePort(to); err != nil {
			return bad("%v", err)
		}
		if in.PortTo < in.PortFrom {
			return bad("port range %d-%d runs backwards", in.PortFrom, in.PortTo)
		}
		if n := int(in.PortTo) - int(in.PortFrom) + 1; n > MaxInboundPorts {
			return bad("port range %d-%d is %d ports, more than %d: give several entries, or none for every port", in.PortFrom, in.PortTo, n, MaxInboundPorts)
		}
	}
	return in, nil
}

// String returns the entry as written.
func (in Inbound) String() string { return in.raw }

// AnyPort reports whether the entry opens every port and protocol.
func (in Inbound) AnyPort() bool { return in.PortFrom == 0 }

// Protos returns the protocols the entry opens its ports on: its own, or
// tcp and udp; none for an entry without a port (which opens all of them).
func (in Inbound) Protos() []string {
	switch {
	case in.AnyPort():
		return nil
	case in.Proto != "":
		return []string{in.Proto}
	}
	return []string{"tcp", "udp"}
}

// Admits reports whether the entry lets src open a connection to the
// sandbox on port over proto ("tcp" or "udp"; any other protocol only
// through an entry without a port). The kernel rules decide; this says the
// same in words, for tests and tools.
func (in Inbound) Admits(src netip.Addr, proto string, port uint16) bool {
	if !in.Source.Contains(src.Unmap()) {
		return false
	}
	if in.AnyPort() {
		return true
	}
	if in.Proto != "" && in.Proto != proto {
		return false
	}
	if proto != "tcp" && proto != "udp" {
		return false
	}
	return port >= in.PortFrom && port <= in.PortTo
}

// ParseInbounds parses a policy's inbound list; the error names every bad
// entry by its index (inbound[i]).
func ParseInbounds(ss []string) ([]Inbound, error) {
	out := make([]Inbound, 0, len(ss))
	var errs []error
	for i, s := range ss {
		in, err := ParseInbound(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("inbound[%d]: %w", i, err))
			continue
		}
		out = append(out, in)
	}
	return out, errors.Join(errs...)
}
