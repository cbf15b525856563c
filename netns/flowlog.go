package netns

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"

	nflog "github.com/florianl/go-nflog/v2"
)

// Refusal is one flow the kernel refused on a sandbox's behalf (non-HTTP
// traffic against the policy, or a sandbox reaching for the host), or,
// with Reason AllowedPrefix, one it let through (WatchFlows).
type Refusal struct {
	// Reason is a policy reason, the prefix of the chain that refused it:
	// denied_host, protected_destination, private_destination, not_allowed
	// or internet_off; or AllowedPrefix.
	Reason string
	// Proto is tcp, udp, icmp or other.
	Proto string
	Src   netip.Addr
	Dst   netip.AddrPort
}

// WatchRefusals reads the refusals the rules log to NFLOGGroup and calls fn
// for each, until ctx ends. The rules rate-limit what they log.
func WatchRefusals(ctx context.Context, fn func(Refusal)) error {
	return WatchFlows(ctx, fn, nil)
}

// WatchFlows reads what the rules log to NFLOGGroup until ctx ends: each
// refusal goes to refused, and the first packet of each allowed routed flow
// (Reason AllowedPrefix) to allowed, when not nil. The rules rate-limit
// each kind (100/s, bursts of 200): the records are per flow up to that
// rate, and the counters (FlowMetrics) count every flow.
func WatchFlows(ctx context.Context, refused, allowed func(Refusal)) error {
	fn := func(r Refusal) {
		if r.Reason != AllowedPrefix {
			refused(r)
		} else if allowed != nil {
			allowed(r)
		}
	}
	nf, err := nflog.Open(&nflog.Config{Group: NFLOGGroup, Copymode: nflog.CopyPacket, Bufsize: 64})
	if err != nil {
		return fmt.Errorf("opening nflog group %d: %w", NFLOGGroup, err)
	}
	go func() {
		<-ctx.Done()
		nf.Close()
	}()
	hook := func(a nflog.Attribute) int {
		if a.Payload == nil || a.Prefix == nil {
			return 0
		}
		if r, ok := parseRefusal(*a.Prefix, *a.Payload); ok {
			fn(r)
		}
		return 0
	}
	errFn := func(err error) int {
		if ctx.Err() != nil {
			return 1 // stop
		}
		return 0
	}
	if err := nf.RegisterWithErrorFunc(ctx, hook, errFn); err != nil {
		nf.Close()
		return fmt.Errorf("listening on nflog group %d: %w", NFLOGGroup, err)
	}
	return nil
}

// parseRefusal reads the IPv4 and transport headers of a logged packet.
func parseRefusal(prefix string, p []byte) (Refusal, bool) {
	if len(p) < 20 || p[0]>>4 != 4 {
		return Refusal{}, false
	}
	ihl := int(p[0]&0x0f) * 4
	src := netip.AddrFrom4([4]byte(p[12:16]))
	dst := netip.AddrFrom4([4]byte(p[16:20]))
	r := Refusal{Reason: prefix, Src: src, Proto: "other"}
	var port uint16
	switch p[9] {
	case 6, 17:
		r.Proto = map[byte]string{6: "tcp", 17: "udp"}[p[9]]
		if len(p) >= ihl+4 {
			port = binary.BigEndian.Uint16(p[ihl+2 : ihl+4])
		}
	case 1:
		r.Proto = "icmp"
	}
	r.Dst = netip.AddrPortFrom(dst, port)
	return r, true
}
