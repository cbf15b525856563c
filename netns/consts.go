package netns

// Marks, routing tables and rule priorities used by interception, in one place
// with the reason for each. They must not collide with what else runs on a
// container host (Docker, Kubernetes CNIs, Tailscale, WireGuard), which is why
// they sit in bits and numbers those do not use.
const (
	// NFTTable is the nftables table (family ip) holding the tproxy rule and
	// the DNS flood limit.
	NFTTable = "interceptd"

	// TProxyMark is set by the TPROXY rule on intercepted port-80 packets. The
	// policy-routing rule below sends packets carrying it to TProxyTable, so
	// they are delivered to the local transparent listener instead of being
	// forwarded. Bit 24 is clear of kube-proxy (0x4000, 0x8000), Cilium
	// (0xf00), Tailscale (0xff0000) and of Calico, which allocates from the low
	// end of its 0xffff0000 mask.
	TProxyMark = 0x1000000
	// TProxyMask limits our mark to our bit so other software's marks survive.
	TProxyMask = 0x1000000

	// TProxyTable holds one route, "local 0.0.0.0/0 dev lo": every marked
	// packet is local, which is what lets a socket accept connections for
	// addresses the host does not own. 461 is far from the tables in use by
	// the main distributions (253-255) and by Tailscale (52).
	TProxyTable = 461

	// TProxyRulePriority is the preference of the "fwmark → TProxyTable" rule.
	// It must precede the main table (32766) and should precede rules other
	// software adds after 5000 (Tailscale uses 5210-5270).
	TProxyRulePriority = 4610

	// FlowMark is the conntrack mark bit (ct mark, not the packet mark)
	// set on the first forwarded packet of each allowed routed flow from a
	// sandbox, so that the flow is counted once (see nftTable's routed
	// chain): a retransmitted SYN or a UDP flow's second packet before any
	// answer is still "new" to conntrack but carries it already. Bit 25,
	// next to TProxyMark's and clear of the same neighbours.
	FlowMark = 0x2000000
)

// Sets of NFTTable that count allowed routed flows and their bytes per
// sandbox address (flows.go): one element per address (and protocol), so
// the rule count stays the same whatever the number of sandboxes. Each
// element carries a counter.
const (
	// NFTSetFlows counts new flows by (sandbox address, tcp|udp|icmp);
	// NFTSetFlowsOther those of any other protocol by address.
	NFTSetFlows      = "flows"
	NFTSetFlowsOther = "flows_other"
	// NFTSetSent and NFTSetReceived count the bytes of allowed routed
	// packets from and to each sandbox address.
	NFTSetSent     = "sent"
	NFTSetReceived = "received"
)

// AllowedPrefix is the NFLOGGroup prefix of an allowed routed flow's
// first packet (beside the refusal reasons).
const AllowedPrefix = "allowed"

// Chain names. Jumps to them are inserted at the top of the built-in chains
// and match only packets arriving on (or leaving to) sandbox interfaces, so
// the host's own traffic never traverses them.
const (
	// ChainPrerouting held the iptables TPROXY rule before interception
	// moved to nftables (NFTTable); kept to remove it on upgrade.
	ChainPrerouting = "INTERCEPTD-PREROUTING"
	ChainSpoof      = "INTERCEPTD-ANTISPOOF"
	ChainDNS        = "INTERCEPTD-DNS"
	ChainInput      = "INTERCEPTD-INPUT"
	ChainForward    = "INTERCEPTD-FORWARD"
	ChainNAT        = "INTERCEPTD-POSTROUTING"
	ChainReject     = "INTERCEPTD-REJECT"
	// One chain per refusal reason: each logs the packet to NFLOGGroup with
	// the reason as prefix (rate-limited), then rejects it.
	ChainDenyListed    = "INTERCEPTD-DENY-LISTED"
	ChainDenyProtected = "INTERCEPTD-DENY-PROTECTED"
	ChainDenyOff       = "INTERCEPTD-DENY-OFF"
	ChainDenyPrivate   = "INTERCEPTD-DENY-PRIVATE"
	// ChainDenyUnlisted refuses what a non-empty allowlist does not open
	// (reason not_allowed), with internet on or off.
	ChainDenyUnlisted = "INTERCEPTD-DENY-NOT-ALLOWED"
	// ChainDenyQUIC refuses QUIC (UDP 443) that no IP/CIDR allow opened
	// (reason quic_refused), so that clients fall back to TCP, where the
	// TLS front sees the SNI.
	ChainDenyQUIC = "INTERCEPTD-DENY-QUIC"
	// ChainInbound returns the first packet of a connection into a
	// sandbox that the sandbox's inbound policy opens, and refuses (as a
	// protected destination) every other.
	ChainInbound = "INTERCEPTD-INBOUND"
)

// NFLOGGroup is the netfilter log group refused flows are sent to, so the
// daemon can log and count them (a group binds one listener per namespace:
// 4610 is far from the small numbers ulogd and examples use).
const NFLOGGroup = 4610

// SandboxInterface is the name of the sandbox end of the veth pair.
const SandboxInterface = "eth0"

// ipsets that carry per-sandbox policy for non-HTTP traffic, so the rule
// count stays the same whatever the number of sandboxes.
const (
	// SetInternet holds the addresses of sandboxes with internet on and an
	// empty allowlist: theirs is the only routed traffic that goes anywhere
	// not denied, protected or private.
	SetInternet = "interceptd-inet"
	// SetListed holds the addresses of sandboxes with a non-empty
	// allowlist, whose routed traffic reaches only what it opens: the rest
	// is refused as not_allowed, with internet on or off.
	SetListed = "interceptd-listed"
	// SetAllow and SetDeny hold (sandbox address, proto:port, destination
	// net) for allowed_hosts / denied_hosts IP and CIDR entries with a port.
	SetAllow = "interceptd-allow-port"
	SetDeny  = "interceptd-deny-port"
	// SetAllowAll and SetDenyAll hold (destination net, sandbox interface)
	// for entries without a port. Explicit entries only: these are matched
	// before the protected and private destinations, which they may open.
	SetAllowAll = "interceptd-allow-any"
	SetDenyAll  = "interceptd-deny-any"
	// SetLearnedAll and SetLearned hold, with the answer's TTL as timeout,
	// the addresses DNS answered for allowed hostnames: (address, sandbox
	// interface) when an entry without a port names the host, else
	// (sandbox address, proto:port, address) for each port the entries
	// give. Matched after the protected and private destinations, which a
	// DNS answer never opens.
	SetLearnedAll = "interceptd-learned-any"
	SetLearned    = "interceptd-learned-port"
	// SetDenyLearned holds (address, sandbox interface), with the answer's
	// TTL as timeout, for the addresses DNS answered for a name the
	// sandbox's policy denies: refused with the other denies, before any
	// allow.
	SetDenyLearned = "interceptd-deny-learned"
	// SetInbound holds (sandbox address, proto:port, source net) for the
	// inbound entries with a port: one element per port of a range and per
	// protocol, matched on the destination address, port and source.
	SetInbound = "interceptd-inbound-port"
	// SetInboundAll holds (source net, sandbox interface) for the inbound
	// entries without a port, which open every port and protocol, and
	// SetInboundDst (sandbox address/32, sandbox interface) for each
	// sandbox that has such entries: both must match (the packet leaves
	// by that sandbox's link, to that sandbox's address), so that an
	// entry opens its sandbox's address and nothing else behind its link.
	// hash:net,iface, not hash:net,net, which kernels are often built
	// without.
	SetInboundAll = "interceptd-inbound-any"
	SetInboundDst = "interceptd-inbound-dst"
)
