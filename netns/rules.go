package netns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"

	"github.com/interceptd/interceptd/policy"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// IPTables is the narrow part of go-iptables that rule setup uses, so that
// unit tests can run the same code against an in-memory fake.
type IPTables interface {
	ChainExists(table, chain string) (bool, error)
	ClearChain(table, chain string) error
	ClearAndDeleteChain(table, chain string) error
	DeleteChain(table, chain string) error
	Exists(table, chain string, rulespec ...string) (bool, error)
	Insert(table, chain string, pos int, rulespec ...string) error
	Append(table, chain string, rulespec ...string) error
	DeleteIfExists(table, chain string, rulespec ...string) error
}

// NFT loads nft scripts (one atomic transaction each); the daemon's runs
// `nft -f -`, unit tests use a fake.
type NFT interface {
	Run(script string) error
}

// NFTExec runs the nft command in the caller's network namespace.
type NFTExec struct{}

// Run implements NFT.
func (NFTExec) Run(script string) error {
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return fmt.Errorf("nft is needed for port-80 interception and the dns flood limit (Debian package nftables): %w", err)
		}
		return fmt.Errorf("nft: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Rule is one iptables rule: the table, the chain and the rule spec.
type Rule struct {
	Table string
	Chain string
	Spec  []string
}

func (r Rule) String() string {
	return fmt.Sprintf("-t %s -A %s %s", r.Table, r.Chain, strings.Join(r.Spec, " "))
}

// Chain is one of the daemon's own chains.
type Chain struct {
	Table string
	Name  string
}

// RuleParams are the inputs the rule set is rendered from.
type RuleParams struct {
	// InterfacePrefix is the prefix of the host side of every sandbox veth.
	InterfacePrefix string
	// HTTPListen is the transparent listener's loopback address and port.
	HTTPListenIP   string
	HTTPListenPort int
	// HTTPSListenPort is the TLS front's transparent listener port, on
	// HTTPListenIP: TCP 443 from sandboxes goes there (and is reset at once
	// while nothing listens), and QUIC is refused. 0: port 443 is routed
	// traffic like any other port, and QUIC too.
	HTTPSListenPort int
	// DNSPort is where captured DNS is redirected.
	DNSPort int
	// Pool is the sandbox pool (masqueraded on the way out); Protected are
	// the destinations non-HTTP traffic never reaches unless an explicit
	// IP/CIDR allow names them.
	Pool      string
	Protected []string
	// Private are the networks behind the host (its LAN or VPC: RFC 1918,
	// carrier-grade NAT...) that routed traffic never reaches unless an
	// explicit IP/CIDR allow names them, as for Protected; refused with
	// reason private_destination. Empty: no such rule.
	Private []string
	// DNSQPS, when positive, caps the DNS queries (UDP) each sandbox address
	// sends per second in the kernel, bursts of twice that: a flood is
	// dropped before it can fill the shim's socket, which all sandboxes share
	// (the dnslimit chain of NFTTable).
	DNSQPS int
}

// Set is one ipset the rules match against.
type Set struct {
	Name string
	Type string
}

// RuleSet is the whole interception ruleset as data: the daemon's chains, the
// rules inside them (in order), and the jumps that send sandbox traffic to
// them, inserted first in the built-in chains. Its size does not depend on the
// number of sandboxes: every rule matches the interface prefix.
type RuleSet struct {
	Sets   []Set
	Chains []Chain
	Rules  []Rule
	Jumps  []Rule
	// TProxy is the nftables table (ip NFTTable) that steers port-80 TCP
	// from sandboxes to the transparent listener. It is nft's tproxy, not
	// iptables' TPROXY target: when no listener is there (the daemon is
	// down), nft's falls through, and the packet meets ChainForward's reset,
	// where the iptables target would drop it and leave the client waiting.
	// With RuleParams.DNSQPS it also holds the DNS flood limit.
	TProxy string
	// Obsolete are jumps and chains earlier versions installed; Apply and
	// Teardown remove them.
	ObsoleteJumps  []Rule
	ObsoleteChains []Chain
}

// Rules renders the rule set for p.
func Rules(p RuleParams) RuleSet {
	in := p.InterfacePrefix + "+"
	mark := fmt.Sprintf("0x%x/0x%x", TProxyMark, TProxyMask)
	dnsPort := strconv.Itoa(p.DNSPort)
	r := func(table, chain string, spec ...string) Rule { return Rule{table, chain, spec} }
	return RuleSet{
		Sets: []Set{
			{SetInternet, "hash:ip"},
			{SetListed, "hash:ip"},
			{SetAllow, "hash:ip,port,net"},
			{SetDeny, "hash:ip,port,net"},
			{SetAllowAll, "hash:net,iface"},
			{SetDenyAll, "hash:net,iface"},
			{SetLearnedAll, "hash:net,iface"},
			{SetLearned, "hash:ip,port,net"},
			{SetDenyLearned, "hash:net,iface"},
			{SetInbound, "hash:ip,port,net"},
			{SetInboundAll, "hash:net,iface"},
			{SetInboundDst, "hash:net,iface"},
		},
		Chains: []Chain{
			{"raw", ChainSpoof},
			{"nat", ChainDNS},
			{"filter", ChainInput},
			{"filter", ChainReject},
			{"filter", ChainDenyListed},
			{"filter", ChainDenyProtected},
			{"filter", ChainDenyOff},
			{"filter", ChainDenyPrivate},
			{"filter", ChainDenyUnlisted},
			{"filter", ChainDenyQUIC},
			{"filter", ChainInbound},
			{"filter", ChainForward},
			{"nat", ChainNAT},
		},
		Rules: slices.Concat([]Rule{
			// Identity is the source address, so a packet whose source would
			// not be routed back out of the interface it came in on (another
			// sandbox's address, a host address, anything else) is dropped
			// before anything can answer it.
			r("raw", ChainSpoof, "-m", "rpfilter", "--invert", "-m", "comment", "--comment", "interceptd: anti-spoofing", "-j", "DROP"),
			// Every DNS query that leaves a sandbox, to any server, is
			// answered by the DNS shim; conntrack rewrites the answer's source
			// back to the server the sandbox asked.
			r("nat", ChainDNS, "-p", "udp", "--dport", "53", "-m", "comment", "--comment", "interceptd: capture dns", "-j", "REDIRECT", "--to-ports", dnsPort),
			r("nat", ChainDNS, "-p", "tcp", "--dport", "53", "-m", "comment", "--comment", "interceptd: capture dns", "-j", "REDIRECT", "--to-ports", dnsPort),
			// Sandboxes reach the host only through interception: replies,
			// intercepted HTTP and captured DNS. Everything else is refused at
			// once rather than dropped, so clients fail fast.
			r("filter", ChainInput, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"),
			r("filter", ChainInput, "-p", "tcp", "-m", "mark", "--mark", mark, "-j", "ACCEPT"),
			r("filter", ChainInput, "-p", "udp", "--dport", dnsPort, "-m", "conntrack", "--ctstate", "DNAT", "--ctorigdstport", "53", "-j", "ACCEPT"),
			r("filter", ChainInput, "-p", "tcp", "--dport", dnsPort, "-m", "conntrack", "--ctstate", "DNAT", "--ctorigdstport", "53", "-j", "ACCEPT"),
			r("filter", ChainInput, "-m", "comment", "--comment", "interceptd: sandbox to host", "-j", ChainDenyProtected),
			// Routed (non-HTTP, non-DNS) egress follows each sandbox's policy
			// through ipsets: replies pass; nothing new enters a sandbox
			// but what its inbound policy opens;
			// denied entries and the addresses of denied names first;
			// explicit IP/CIDR allows (which may open a protected or private
			// destination); protected, then private destinations; addresses
			// DNS answered for allowed names (on the entries' ports); internet
			// on with no allowlist; everything else is refused at once, as
			// not_allowed when an allowlist did not open it.
			// Port-80 TCP from a sandbox only gets here when the tproxy rule
			// found no listener: the daemon is down. Refused at once, before
			// any conntrack state could let it through.
			r("filter", ChainForward, "-i", in, "-p", "tcp", "--dport", "80", "-m", "comment", "--comment", "interceptd: http while the daemon is down", "-j", "REJECT", "--reject-with", "tcp-reset"),
		}, httpsDownRule(p), []Rule{
			r("filter", ChainForward, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"),
			// A connection into a sandbox is opened only by its inbound
			// policy (ChainInbound): the destination is the sandbox's
			// address, the source and port are an entry's. From outside
			// the sandboxes that is all it takes. From another sandbox
			// (anti-spoofing has made its source its own) it must also be
			// that sandbox's egress, so it goes on to the egress rules
			// below, where the other sandbox's address is a protected or
			// private destination that only an explicit IP/CIDR allow
			// opens: both policies must say yes.
			r("filter", ChainForward, "-o", in, "-m", "comment", "--comment", "interceptd: nothing enters a sandbox that its inbound policy does not open", "-j", ChainInbound),
			r("filter", ChainForward, "-o", in, "!", "-i", in, "-m", "comment", "--comment", "interceptd: inbound policy", "-j", "ACCEPT"),
			// A packet from outside the sandboxes with a source in the pool
			// is forged (anti-spoofing covers what the sandboxes send):
			// no one on the host's networks passes as a sandbox through
			// another's inbound entries.
			r("filter", ChainInbound, "!", "-i", in, "-s", p.Pool, "-m", "comment", "--comment", "interceptd: a sandbox's address from outside the sandboxes", "-j", "DROP"),
			r("filter", ChainInbound, "-m", "set", "--match-set", SetInbound, "dst,dst,src", "-j", "RETURN"),
			r("filter", ChainInbound, "-m", "set", "--match-set", SetInboundAll, "src,dst", "-m", "set", "--match-set", SetInboundDst, "dst,dst", "-j", "RETURN"),
			r("filter", ChainInbound, "-j", ChainDenyProtected),
			r("filter", ChainForward, "-m", "set", "--match-set", SetDenyAll, "dst,src", "-j", ChainDenyListed),
			r("filter", ChainForward, "-m", "set", "--match-set", SetDeny, "src,dst,dst", "-j", ChainDenyListed),
			r("filter", ChainForward, "-m", "set", "--match-set", SetDenyLearned, "dst,src", "-j", ChainDenyListed),
			r("filter", ChainForward, "-m", "set", "--match-set", SetAllowAll, "dst,src", "-j", "ACCEPT"),
			r("filter", ChainForward, "-m", "set", "--match-set", SetAllow, "src,dst,dst", "-j", "ACCEPT"),
		}, quicRule(p), []Rule{
			r("filter", ChainForward, "-d", strings.Join(p.Protected, ","), "-m", "comment", "--comment", "interceptd: protected destinations", "-j", ChainDenyProtected),
		}, privateRule(p), []Rule{
			r("filter", ChainForward, "-m", "set", "--match-set", SetLearnedAll, "dst,src", "-j", "ACCEPT"),
			r("filter", ChainForward, "-m", "set", "--match-set", SetLearned, "src,dst,dst", "-j", "ACCEPT"),
			r("filter", ChainForward, "-m", "set", "--match-set", SetInternet, "src", "-j", "ACCEPT"),
			r("filter", ChainForward, "-m", "set", "--match-set", SetListed, "src", "-m", "comment", "--comment", "interceptd: not on the allowlist", "-j", ChainDenyUnlisted),
			r("filter", ChainForward, "-m", "comment", "--comment", "interceptd: no internet", "-j", ChainDenyOff),
			// Refusals are logged to the daemon (reason as prefix, a bounded
			// rate so a flood cannot flood the log) and answered at once.
			nflogRule(ChainDenyListed, "denied_host"), r("filter", ChainDenyListed, "-j", ChainReject),
			nflogRule(ChainDenyProtected, "protected_destination"), r("filter", ChainDenyProtected, "-j", ChainReject),
			nflogRule(ChainDenyOff, "internet_off"), r("filter", ChainDenyOff, "-j", ChainReject),
			nflogRule(ChainDenyPrivate, "private_destination"), r("filter", ChainDenyPrivate, "-j", ChainReject),
			nflogRule(ChainDenyUnlisted, "not_allowed"), r("filter", ChainDenyUnlisted, "-j", ChainReject),
			nflogRule(ChainDenyQUIC, policy.ReasonQUIC), r("filter", ChainDenyQUIC, "-j", ChainReject),
			r("filter", ChainReject, "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"),
			r("filter", ChainReject, "-j", "REJECT", "--reject-with", "icmp-admin-prohibited"),
			r("nat", ChainNAT, "!", "-o", in, "-j", "MASQUERADE"),
		}),
		Jumps: []Rule{
			r("raw", "PREROUTING", "-i", in, "-j", ChainSpoof),
			r("nat", "PREROUTING", "-i", in, "-j", ChainDNS),
			r("filter", "INPUT", "-i", in, "-j", ChainInput),
			r("filter", "FORWARD", "-i", in, "-j", ChainForward),
			r("filter", "FORWARD", "-o", in, "-j", ChainForward),
			r("nat", "POSTROUTING", "-s", p.Pool, "-j", ChainNAT),
		},
		TProxy:         nftTable(p),
		ObsoleteJumps:  []Rule{r("mangle", "PREROUTING", "-i", in, "-j", ChainPrerouting)},
		ObsoleteChains: []Chain{{"mangle", ChainPrerouting}},
	}
}

// httpsDownRule resets TCP 443 from a sandbox that the TLS front's tproxy
// rule found no listener for (the daemon is down), as port 80's rule does;
// none when port 443 is not intercepted.
func httpsDownRule(p RuleParams) []Rule {
	if p.HTTPSListenPort == 0 {
		return nil
	}
	return []Rule{{"filter", ChainForward, []string{"-i", p.InterfacePrefix + "+", "-p", "tcp", "--dport", "443", "-m", "comment", "--comment", "interceptd: https while the daemon is down", "-j", "REJECT", "--reject-with", "tcp-reset"}}}
}

// quicRule refuses QUIC from sandboxes after the explicit IP/CIDR allows
// (which open it to what they name) and before anything else could accept
// it, so that clients fall back to TCP 443 and its SNI policy; none when
// port 443 is not intercepted.
func quicRule(p RuleParams) []Rule {
	if p.HTTPSListenPort == 0 {
		return nil
	}
	return []Rule{{"filter", ChainForward, []string{"-i", p.InterfacePrefix + "+", "-p", "udp", "--dport", "443", "-m", "comment", "--comment", "interceptd: quic", "-j", ChainDenyQUIC}}}
}

// privateRule sends routed traffic to the private networks to their refusal,
// after the explicit allows and the protected destinations; none without
// private networks.
func privateRule(p RuleParams) []Rule {
	if len(p.Private) == 0 {
		return nil
	}
	return []Rule{{"filter", ChainForward, []string{"-d", strings.Join(p.Private, ","), "-m", "comment", "--comment", "interceptd: private destinations", "-j", ChainDenyPrivate}}}
}

// CountRules counts the rules in iptables-save output and in `nft -a list`
// output of the daemon's table: what the benchmark and the end-to-end tests
// hold constant whatever the number of sandboxes.
func CountRules(iptablesSave, nftList string) int {
	n := 0
	for _, l := range strings.Split(iptablesSave, "\n") {
		if strings.HasPrefix(l, "-A ") {
			n++
		}
	}
	for _, l := range strings.Split(nftList, "\n") {
		// Rules only: tables, chains and sets carry a handle too (a rule
		// may say "set" itself: "meta mark set").
		decl := strings.TrimSpace(l)
		if strings.Contains(l, "# handle") && !strings.HasPrefix(decl, "table ") && !strings.HasPrefix(decl, "chain ") && !strings.HasPrefix(decl, "set ") {
			n++
		}
	}
	return n
}

// InstalledRules counts the rules installed in the network namespace that
// `ip netns` calls ns: the iptables rules (iptables-save) and the rules of
// the daemon's nftables table (iptables-nft keeps its own rules in
// nftables too; they are not counted twice). The benchmark and the
// end-to-end tests read it to hold the count constant however many
// sandboxes there are.
func InstalledRules(ns string) (iptables, nftables int, err error) {
	save, err := exec.Command("ip", "netns", "exec", ns, "iptables-save").Output()
	if err != nil {
		return 0, 0, fmt.Errorf("listing iptables rules in %s: %w", ns, err)
	}
	nft, err := exec.Command("ip", "netns", "exec", ns, "nft", "-a", "list", "table", "ip", NFTTable).Output()
	if err != nil {
		return 0, 0, fmt.Errorf("listing nftables table %s in %s: %w", NFTTable, ns, err)
	}
	return CountRules(string(save), ""), CountRules("", string(nft)), nil
}

// floodSetSize is how many addresses the DNS flood limit's set holds: every
// address of the pool, and at least 65536. A full set would not drop: a
// packet whose address cannot be added passes the rule unlimited.
func floodSetSize(pool string) int {
	size := 1 << 16
	if p, err := netip.ParsePrefix(pool); err == nil && p.Addr().Is4() {
		size = max(size, 1<<(32-p.Bits()))
	}
	return size
}

// dnsFloodRule is the dnslimit chain's one rule, at p.DNSQPS.
func dnsFloodRule(p RuleParams) string {
	return fmt.Sprintf(`iifname "%s*" udp dport 53 update @dnsflood { ip saddr limit rate over %d/second burst %d packets } drop comment "interceptd: dns flood"`,
		p.InterfacePrefix, p.DNSQPS, 2*p.DNSQPS)
}

// nftDNSRate is a script (one transaction) that takes the installed table
// from a DNS flood limit of from per second (0: none) to p.DNSQPS, leaving
// the rest of the table, and its sets' counters, alone. The buckets start
// afresh at the new rate.
func nftDNSRate(p RuleParams, from int) string {
	t := "ip " + NFTTable
	switch {
	case p.DNSQPS <= 0 && from <= 0:
		return ""
	case p.DNSQPS <= 0:
		return fmt.Sprintf("delete chain %s dnslimit\ndelete set %s dnsflood\n", t, t)
	case from <= 0:
		return fmt.Sprintf("add set %[1]s dnsflood { type ipv4_addr; flags dynamic,timeout; timeout 10s; size %[2]d; }\n"+
			"add chain %[1]s dnslimit { type filter hook prerouting priority raw + 1; policy accept; }\n"+
			"add rule %[1]s dnslimit %[3]s\n", t, floodSetSize(p.Pool), dnsFloodRule(p))
	}
	return fmt.Sprintf("flush chain %[1]s dnslimit\nflush set %[1]s dnsflood\nadd rule %[1]s dnslimit %[2]s\n", t, dnsFloodRule(p))
}

// nftTable renders the daemon's nftables table.
func nftTable(p RuleParams) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %s {\n", NFTTable)
	if p.DNSQPS > 0 {
		// A token bucket per sandbox address, in a set that holds one for
		// each address heard from in the last 10 s. update, not add: an
		// address that keeps flooding keeps its bucket, where add would let
		// its entry expire and come back with a full burst every 10 s.
		// Not iptables' hashlimit, which this used to be: it reads the
		// clock before taking the bucket's lock, and with senders on several
		// CPUs a late reader sees time run backwards and refills the bucket
		// (from four senders in a namespace pair, 4607 of a 3 s flood passed
		// 200/s, burst 400, where 1000 should; nft's limit reads the clock
		// under its lock: 1002). After the anti-spoofing rule (raw + 1): a
		// sandbox forging another's address is dropped there and cannot
		// spend the other's budget.
		fmt.Fprintf(&b, `	set dnsflood {
		type ipv4_addr
		flags dynamic,timeout
		timeout 10s
		size %d
	}
	chain dnslimit {
		type filter hook prerouting priority raw + 1; policy accept;
		%s
	}
`, floodSetSize(p.Pool), dnsFloodRule(p))
	}
	// Port-80 TCP from sandboxes goes to the router's transparent
	// listener, whatever its destination address; the mark sends it to the
	// local table (ApplyRouting). The mark is set after tproxy so that a
	// packet no listener took is not marked, and is forwarded to
	// ChainForward's reset instead.
	fmt.Fprintf(&b, `	chain prerouting {
		type filter hook prerouting priority mangle; policy accept;
		iifname "%s*" meta l4proto tcp tcp dport 80 tproxy to %s:%d meta mark set meta mark | 0x%x accept comment "interceptd: intercept http"
`, p.InterfacePrefix, p.HTTPListenIP, p.HTTPListenPort, TProxyMark)
	if p.HTTPSListenPort != 0 {
		// The same for TLS, to the TLS front (SNI policy, passthrough).
		fmt.Fprintf(&b, `		iifname "%s*" meta l4proto tcp tcp dport 443 tproxy to %s:%d meta mark set meta mark | 0x%x accept comment "interceptd: intercept https"
`, p.InterfacePrefix, p.HTTPListenIP, p.HTTPSListenPort, TProxyMark)
	}
	b.WriteString("\t}\n")
	// Allowed routed flows, counted per sandbox address in sets whose
	// elements carry counters (flows.go reads them), and logged (rate-
	// limited, as refusals are) to NFLOGGroup. After the filter chains
	// (priority filter + 10): iptables' FORWARD has accepted what reaches
	// it, and what it refused never does. Intercepted HTTP and captured
	// DNS are the host's input, never forwarded, so never counted here.
	// Flows the sandbox opened only (ct direction original): a reply it
	// sends on a connection its inbound policy let in is not a flow of
	// its own.
	size := floodSetSize(p.Pool)
	in := p.InterfacePrefix + "*"
	fmt.Fprintf(&b, `	set %[1]s {
		type ipv4_addr . inet_proto
		size %[5]d
		flags dynamic
		counter
	}
	set %[2]s {
		type ipv4_addr
		size %[6]d
		flags dynamic
		counter
	}
	set %[3]s {
		type ipv4_addr
		size %[6]d
		flags dynamic
		counter
	}
	set %[4]s {
		type ipv4_addr
		size %[6]d
		flags dynamic
		counter
	}
	chain routed {
		type filter hook forward priority filter + 10; policy accept;
		iifname "%[7]s" ct direction original ct mark & 0x%[8]x == 0 meta l4proto { tcp, udp, icmp } ct mark set ct mark | 0x%[8]x update @%[1]s { ip saddr . meta l4proto } limit rate 100/second burst 200 packets log prefix "%[9]s" group %[10]d snaplen 64 comment "interceptd: an allowed routed flow"
		iifname "%[7]s" ct direction original ct mark & 0x%[8]x == 0 ct mark set ct mark | 0x%[8]x update @%[2]s { ip saddr } limit rate 100/second burst 200 packets log prefix "%[9]s" group %[10]d snaplen 64 comment "interceptd: an allowed routed flow"
		iifname "%[7]s" update @%[3]s { ip saddr } comment "interceptd: bytes of allowed routed flows"
		oifname "%[7]s" update @%[4]s { ip daddr } comment "interceptd: bytes of allowed routed flows"
	}
`, NFTSetFlows, NFTSetFlowsOther, NFTSetSent, NFTSetReceived, 3*size, size, in, FlowMark, AllowedPrefix, NFLOGGroup)
	b.WriteString("}\n")
	return b.String()
}

func nflogRule(chain, reason string) Rule {
	return Rule{"filter", chain, []string{"-m", "limit", "--limit", "100/sec", "--limit-burst", "200",
		"-j", "NFLOG", "--nflog-group", strconv.Itoa(NFLOGGroup), "--nflog-prefix", reason, "--nflog-size", "64"}}
}

// Render returns the rule set, policy routing included, as text: one line a
// rule, in the order Apply installs them. Golden tests compare it.
func (rs RuleSet) Render() string {
	var b strings.Builder
	for _, st := range rs.Sets {
		fmt.Fprintf(&b, "ipset create %s %s\n", st.Name, st.Type)
	}
	for _, c := range rs.Chains {
		fmt.Fprintf(&b, "-t %s -N %s\n", c.Table, c.Name)
	}
	for _, r := range rs.Rules {
		b.WriteString(r.String() + "\n")
	}
	for _, r := range rs.Jumps {
		fmt.Fprintf(&b, "-t %s -I %s 1 %s\n", r.Table, r.Chain, strings.Join(r.Spec, " "))
	}
	b.WriteString("nft -f - <<\n" + rs.TProxy)
	fmt.Fprintf(&b, "ip rule add pref %d fwmark 0x%x/0x%x lookup %d\n", TProxyRulePriority, TProxyMark, TProxyMask, TProxyTable)
	fmt.Fprintf(&b, "ip route add local 0.0.0.0/0 dev lo table %d\n", TProxyTable)
	return b.String()
}

// Apply installs the rule set idempotently: the daemon's chains are created
// or flushed and refilled, and each jump is inserted first in its built-in
// chain unless it is already there. Running it twice leaves one copy.
//
// The jumps come after the chains are filled, so a sandbox interface never
// meets a half-filled chain of ours from a fresh start, and the nftables
// tproxy table after the jumps, so interception starts only when the rest is
// whole. Obsolete rules of earlier versions go last.
func (rs RuleSet) Apply(ipt IPTables, sets IPSets, nft NFT) error {
	for _, st := range rs.Sets {
		if err := sets.Create(st.Name, st.Type); err != nil {
			return fmt.Errorf("creating ipset %s: %w", st.Name, err)
		}
	}
	// On a restart the chains exist and sandboxes are live: refilling a
	// chain leaves it empty for a moment, and an empty chain of ours lets
	// their packets fall through to the host's own rules. Guards first:
	// sandbox traffic is refused outright until the chains are whole again.
	if ok, err := ipt.ChainExists("filter", ChainInput); err == nil && ok {
		for _, g := range rs.guards() {
			if err := ipt.Insert(g.Table, g.Chain, 1, g.Spec...); err != nil {
				return fmt.Errorf("inserting guard %s: %w", g, err)
			}
			defer ipt.DeleteIfExists(g.Table, g.Chain, g.Spec...)
		}
	}
	for _, c := range rs.Chains {
		if err := ipt.ClearChain(c.Table, c.Name); err != nil {
			return fmt.Errorf("preparing chain %s/%s: %w", c.Table, c.Name, err)
		}
	}
	for _, r := range rs.Rules {
		if err := ipt.Append(r.Table, r.Chain, r.Spec...); err != nil {
			return fmt.Errorf("adding rule %s: %w", r, err)
		}
	}
	// Insert in reverse so that, when a built-in chain gets several jumps,
	// they end up in the listed order at its top.
	for i := len(rs.Jumps) - 1; i >= 0; i-- {
		r := rs.Jumps[i]
		ok, err := ipt.Exists(r.Table, r.Chain, r.Spec...)
		if err != nil {
			return fmt.Errorf("checking jump %s: %w", r, err)
		}
		if ok {
			continue
		}
		if err := ipt.Insert(r.Table, r.Chain, 1, r.Spec...); err != nil {
			return fmt.Errorf("inserting jump %s: %w", r, err)
		}
	}
	// Interception last, as one nft transaction that replaces the table
	// whole: a restart never leaves a moment without it.
	if err := nft.Run(nftReplace(rs.TProxy)); err != nil {
		return fmt.Errorf("installing the nftables table (interception, dns flood limit): %w", err)
	}
	return rs.removeObsolete(ipt)
}

// nftReplace is a script that replaces table ip NFTTable with def (or
// removes it, def empty) whether or not it exists: declaring an existing
// table is a no-op, and the whole script is one transaction.
func nftReplace(def string) string {
	return fmt.Sprintf("table ip %s\ndelete table ip %s\n%s", NFTTable, NFTTable, def)
}

func (rs RuleSet) removeObsolete(ipt IPTables) error {
	var present []Chain
	for _, c := range rs.ObsoleteChains {
		if ok, err := ipt.ChainExists(c.Table, c.Name); err == nil && ok {
			present = append(present, c)
		}
	}
	if len(present) == 0 {
		return nil // and so no jump to them either: iptables cannot even look for one
	}
	var errs []error
	for _, r := range rs.ObsoleteJumps {
		if err := ipt.DeleteIfExists(r.Table, r.Chain, r.Spec...); err != nil {
			errs = append(errs, fmt.Errorf("deleting obsolete jump %s: %w", r, err))
		}
	}
	for _, c := range present {
		if err := ipt.ClearAndDeleteChain(c.Table, c.Name); err != nil {
			errs = append(errs, fmt.Errorf("deleting obsolete chain %s/%s: %w", c.Table, c.Name, err))
		}
	}
	return errors.Join(errs...)
}

// guards refuse all sandbox traffic while Apply refills the chains.
func (rs RuleSet) guards() []Rule {
	var out []Rule
	for _, j := range rs.Jumps {
		if j.Table == "filter" {
			spec := append(append([]string{}, j.Spec[:2]...), "-m", "comment", "--comment", "interceptd: reloading rules", "-j", "REJECT")
			out = append(out, Rule{j.Table, j.Chain, spec})
		}
	}
	return out
}

// Teardown removes the jumps and the daemon's chains. Anything already gone
// counts as removed, so it is safe to run at any point.
func (rs RuleSet) Teardown(ipt IPTables, sets IPSets, nft NFT) error {
	var errs []error
	if err := nft.Run(nftReplace("")); err != nil {
		errs = append(errs, fmt.Errorf("removing the tproxy table: %w", err))
	}
	if err := rs.removeObsolete(ipt); err != nil {
		errs = append(errs, err)
	}
	for _, r := range rs.Jumps {
		// A jump to a chain that is gone is gone too, and iptables cannot
		// even look for one (a second cleanup, or one after a crash).
		if ok, err := ipt.ChainExists(r.Table, r.Spec[len(r.Spec)-1]); err == nil && !ok {
			continue
		}
		if err := ipt.DeleteIfExists(r.Table, r.Chain, r.Spec...); err != nil {
			errs = append(errs, fmt.Errorf("deleting jump %s: %w", r, err))
		}
	}
	// Flush every chain before deleting any: our chains jump to each other.
	var present []Chain
	for _, c := range rs.Chains {
		ok, err := ipt.ChainExists(c.Table, c.Name)
		if err != nil {
			errs = append(errs, fmt.Errorf("checking chain %s/%s: %w", c.Table, c.Name, err))
			continue
		}
		if ok {
			present = append(present, c)
			if err := ipt.ClearChain(c.Table, c.Name); err != nil {
				errs = append(errs, fmt.Errorf("flushing chain %s/%s: %w", c.Table, c.Name, err))
			}
		}
	}
	for _, c := range present {
		if err := ipt.DeleteChain(c.Table, c.Name); err != nil {
			errs = append(errs, fmt.Errorf("deleting chain %s/%s: %w", c.Table, c.Name, err))
		}
	}
	// Sets last: a set cannot go while a rule refers to it.
	for _, st := range rs.Sets {
		if err := sets.Destroy(st.Name); err != nil {
			errs = append(errs, fmt.Errorf("destroying ipset %s: %w", st.Name, err))
		}
	}
	return errors.Join(errs...)
}

// policyRule and policyRoute send TProxyMark-ed packets to the local table.
func policyRule() *netlink.Rule {
	r := netlink.NewRule()
	r.Family = unix.AF_INET
	r.Priority = TProxyRulePriority
	r.Mark = TProxyMark
	m := uint32(TProxyMask)
	r.Mask = &m
	r.Table = TProxyTable
	return r
}

func policyRoute(lo netlink.Link) *netlink.Route {
	_, all, _ := net.ParseCIDR("0.0.0.0/0")
	return &netlink.Route{
		LinkIndex: lo.Attrs().Index,
		Dst:       all,
		Table:     TProxyTable,
		Type:      unix.RTN_LOCAL,
		Scope:     netlink.SCOPE_HOST,
	}
}

// ApplyRouting installs the policy rule and local route; both idempotent.
func ApplyRouting(h *netlink.Handle) error {
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("finding lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("setting lo up: %w", err)
	}
	if err := h.RouteReplace(policyRoute(lo)); err != nil {
		return fmt.Errorf("adding tproxy route to table %d: %w", TProxyTable, err)
	}
	rules, err := h.RuleList(unix.AF_INET)
	if err != nil {
		return fmt.Errorf("listing ip rules: %w", err)
	}
	for _, r := range rules {
		if r.Priority == TProxyRulePriority && r.Table == TProxyTable && r.Mark == TProxyMark {
			return nil
		}
	}
	if err := h.RuleAdd(policyRule()); err != nil {
		return fmt.Errorf("adding tproxy rule for fwmark 0x%x: %w", TProxyMark, err)
	}
	return nil
}

// TeardownRouting removes the policy rule and local route; already gone is fine.
func TeardownRouting(h *netlink.Handle) error {
	var errs []error
	for {
		err := h.RuleDel(policyRule())
		if err == nil {
			continue
		}
		if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("deleting tproxy rule: %w", err))
		}
		break
	}
	if lo, err := h.LinkByName("lo"); err == nil {
		if err := h.RouteDel(policyRoute(lo)); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("deleting tproxy route: %w", err))
		}
	}
	return errors.Join(errs...)
}
