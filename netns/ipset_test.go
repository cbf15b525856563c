package netns

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/interceptd/interceptd/policy"
	"github.com/vishvananda/netlink"
)

// testManager is a Manager over fake sets, with the rules' sets created, and
// without netlink: enough for the per-sandbox set handling.
func testManager(t *testing.T) (*Manager, fakeSets) {
	t.Helper()
	sets := fakeSets{}
	p := testParams()
	for _, st := range Rules(p).Sets {
		sets.Create(st.Name, st.Type)
	}
	m := &Manager{
		cfg: Config{Rules: p, IPSets: sets}, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		k:          newFakeKernel(),
		closedNets: closedNets(p),
		byName:     map[string]*Sandbox{}, byAddr: map[netip.Addr]*Sandbox{},
		reapq: make(chan reapItem, 16),
	}
	return m, sets
}

// addSandbox registers an (external, so never touched on disk) sandbox on
// slot with pol and fills its sets as Create does.
func (m *Manager) addTestSandbox(t *testing.T, name string, slot int, pol policy.Policy) *Sandbox {
	t.Helper()
	sb := &Sandbox{Name: name, Slot: slot, External: true,
		HostInterface: fmt.Sprintf("icd%x", slot), Addr: netip.AddrFrom4([4]byte{10, 213, byte(slot >> 6), byte(slot<<2 | 2)}),
		Policy: pol, Compiled: policy.MustCompile(pol)}
	sb.Policy = sb.Compiled.Policy
	if err := m.syncSets(nil, sb); err != nil {
		t.Fatal(err)
	}
	m.register(sb)
	return sb
}

// packet is a new routed flow from a sandbox, or (from nil) from src
// outside the sandboxes; to a sandbox (to) or out of the uplink.
type packet struct {
	from  *Sandbox
	proto string // tcp, udp or icmp
	dst   string // address:port (port 0 for icmp)
	to    *Sandbox
	src   string // the source address when from is nil
}

func (p packet) source() netip.Addr {
	if p.from != nil {
		return p.from.Addr
	}
	return netip.MustParseAddr(p.src)
}

func (p packet) in() string {
	if p.from != nil {
		return p.from.HostInterface
	}
	return "eth0"
}

func (p packet) out() string {
	if p.to != nil {
		return p.to.HostInterface
	}
	return "up0"
}

func (p packet) name() string {
	if p.from != nil {
		return p.from.Name
	}
	return p.src
}

// verdict walks the FORWARD chain of the rendered rules for p against the
// fake sets, as the kernel would for the first packet of a flow: "accept",
// or the refusal reason of the chain it is sent to.
func verdict(t *testing.T, rs RuleSet, sets fakeSets, p packet) string {
	t.Helper()
	if v, done := walk(rs, sets, p, ChainForward); done {
		return v
	}
	return "fell through"
}

// walk runs one of the daemon's chains for p: done with a verdict, or not
// (the chain returned or ran out) for the caller to go on.
func walk(rs RuleSet, sets fakeSets, p packet, chain string) (string, bool) {
	dst := netip.MustParseAddrPort(p.dst)
	reasons := map[string]string{}
	for _, r := range rs.Rules {
		if i := slices.Index(r.Spec, "--nflog-prefix"); i >= 0 {
			reasons[r.Chain] = r.Spec[i+1]
		}
	}
	for _, r := range rs.Rules {
		if r.Chain != chain {
			continue
		}
		match, target, neg := true, "", false
		// is folds one match in, inverted after a "!".
		is := func(ok bool) {
			match = match && ok != neg
			neg = false
		}
		for i := 0; i < len(r.Spec); i++ {
			arg := func() string { i++; return r.Spec[i] }
			switch r.Spec[i] {
			case "!":
				neg = true
			case "-i":
				is(strings.HasPrefix(p.in(), strings.TrimSuffix(arg(), "+")))
			case "-o":
				is(strings.HasPrefix(p.out(), strings.TrimSuffix(arg(), "+")))
			case "-p":
				is(p.proto == arg())
			case "--dport":
				is(fmt.Sprint(dst.Port()) == arg())
			case "--ctstate":
				arg()
				is(false) // a new flow
			case "-s":
				is(netip.MustParsePrefix(arg()).Contains(p.source()))
			case "-d":
				in := false
				for _, s := range strings.Split(arg(), ",") {
					in = in || netip.MustParsePrefix(s).Contains(dst.Addr())
				}
				is(in)
			case "--match-set":
				is(inSet(sets, arg(), arg(), p, dst))
			case "--comment", "-m":
				arg()
			case "-j":
				target = arg()
			}
		}
		if !match {
			continue
		}
		switch reason, ok := reasons[target]; {
		case target == "ACCEPT":
			return "accept", true
		case target == "RETURN":
			return "", false
		case ok:
			return reason, true
		case slices.ContainsFunc(rs.Chains, func(c Chain) bool { return c.Name == target }):
			if v, done := walk(rs, sets, p, target); done {
				return v, true
			}
			continue
		}
		return target, true
	}
	return "", false
}

// inSet matches p against one of the fake sets as the set match would.
func inSet(sets fakeSets, name, dims string, p packet, dst netip.AddrPort) bool {
	src := p.source()
	typ := sets[name].typ
	for _, e := range sets[name].entries {
		ip, _ := netip.AddrFromSlice(e.IP.To4())
		ip2, _ := netip.AddrFromSlice(e.IP2.To4())
		proto := ""
		if e.Protocol != nil {
			proto = map[uint8]string{6: "tcp", 17: "udp"}[*e.Protocol]
		}
		switch typ + " " + dims {
		case "hash:net,iface dst,src": // the destination, the interface it came in by
			if netip.PrefixFrom(ip, int(e.CIDR)).Contains(dst.Addr()) && e.IFace == p.in() {
				return true
			}
		case "hash:net,iface src,dst": // the source, the interface it leaves by
			if netip.PrefixFrom(ip, int(e.CIDR)).Contains(src) && e.IFace == p.out() {
				return true
			}
		case "hash:net,iface dst,dst":
			if netip.PrefixFrom(ip, int(e.CIDR)).Contains(dst.Addr()) && e.IFace == p.out() {
				return true
			}
		case "hash:ip,port,net src,dst,dst":
			if ip == src && proto == p.proto && *e.Port == dst.Port() && netip.PrefixFrom(ip2, int(e.CIDR2)).Contains(dst.Addr()) {
				return true
			}
		case "hash:ip,port,net dst,dst,src":
			if ip == dst.Addr() && proto == p.proto && *e.Port == dst.Port() && netip.PrefixFrom(ip2, int(e.CIDR2)).Contains(src) {
				return true
			}
		case "hash:ip src":
			if ip == src {
				return true
			}
		default:
			panic("unknown set type and dimensions " + typ + " " + dims)
		}
	}
	return false
}

func TestRoutedTrafficFollowsThePolicyTheSetsHold(t *testing.T) {
	m, sets := testManager(t)
	rs := Rules(m.cfg.Rules)
	open := m.addTestSandbox(t, "open", 1, policy.Policy{Internet: true})
	off := m.addTestSandbox(t, "off", 2, policy.Policy{})
	listed := m.addTestSandbox(t, "listed", 3, policy.Policy{Internet: true,
		AllowedHosts: []string{"*.good.test", "db.good.test:5432", "192.168.77.0/24", "169.254.169.254:8443"}})
	denier := m.addTestSandbox(t, "denier", 4, policy.Policy{Internet: true, DeniedHosts: []string{"bad.test"}})
	ttl := time.Minute
	m.AllowLearned("listed", []netip.Addr{netip.MustParseAddr("192.0.2.10")}, ttl, nil)
	m.AllowLearned("listed", []netip.Addr{netip.MustParseAddr("192.0.2.20")}, ttl, []uint16{5432})
	m.AllowLearned("listed", []netip.Addr{netip.MustParseAddr("169.254.169.254"), netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("10.213.0.6")}, ttl, nil)
	m.DenyLearned("denier", []netip.Addr{netip.MustParseAddr("192.0.2.30")}, ttl)
	m.DenyLearned("listed", []netip.Addr{netip.MustParseAddr("192.0.2.10")}, ttl)
	// What AllowLearned refuses to add, put there anyway: the rule order
	// alone must keep these closed.
	for _, a := range []string{"169.254.169.253", "192.168.1.2"} {
		sets.Add(SetLearnedAll, &netlink.IPSetEntry{IP: netip.MustParseAddr(a).AsSlice(), CIDR: 32, IFace: listed.HostInterface})
	}

	for _, tt := range []struct {
		name string
		p    packet
		want string
	}{
		{"internet on without an allowlist reaches the internet", packet{from: open, proto: "udp", dst: "192.0.2.99:8443"}, "accept"},
		{"QUIC is refused, internet on", packet{from: open, proto: "udp", dst: "192.0.2.99:443"}, policy.ReasonQUIC},
		{"QUIC is refused to an allowed name's address", packet{from: listed, proto: "udp", dst: "192.0.2.20:443"}, policy.ReasonQUIC},
		{"QUIC passes to what an IP/CIDR entry opens", packet{from: listed, proto: "udp", dst: "192.168.77.9:443"}, "accept"},
		{"TCP 443 that no listener took (the daemon is down) is reset", packet{from: open, proto: "tcp", dst: "192.0.2.99:443"}, "REJECT"},
		{"internet on does not reach a private network", packet{from: open, proto: "tcp", dst: "192.168.1.1:22"}, policy.ReasonPrivate},
		{"internet on does not reach carrier-grade NAT", packet{from: open, proto: "icmp", dst: "100.64.0.1:0"}, policy.ReasonPrivate},
		{"internet on does not reach the metadata address", packet{from: open, proto: "tcp", dst: "169.254.169.254:2222"}, policy.ReasonProtected},
		{"internet off reaches nothing", packet{from: off, proto: "tcp", dst: "192.0.2.99:8443"}, policy.ReasonOff},
		{"an allowlist refuses what it does not open, internet on", packet{from: listed, proto: "tcp", dst: "192.0.2.99:8443"}, policy.ReasonNotAllowed},
		{"an allowlist refuses ICMP it does not open", packet{from: listed, proto: "icmp", dst: "192.0.2.99:0"}, policy.ReasonNotAllowed},
		{"a learned address denied since is refused", packet{from: listed, proto: "udp", dst: "192.0.2.10:1234"}, policy.ReasonDenied},
		{"a learned address with ports passes on its port", packet{from: listed, proto: "tcp", dst: "192.0.2.20:5432"}, "accept"},
		{"a learned address with ports passes UDP on its port", packet{from: listed, proto: "udp", dst: "192.0.2.20:5432"}, "accept"},
		{"a learned address with ports is refused another port", packet{from: listed, proto: "tcp", dst: "192.0.2.20:22"}, policy.ReasonNotAllowed},
		{"a learned address with ports is refused ICMP", packet{from: listed, proto: "icmp", dst: "192.0.2.20:0"}, policy.ReasonNotAllowed},
		{"a learned protected address stays protected", packet{from: listed, proto: "tcp", dst: "169.254.169.254:22"}, policy.ReasonProtected},
		{"a learned private address stays private", packet{from: listed, proto: "tcp", dst: "10.1.2.3:22"}, policy.ReasonPrivate},
		{"a learned sandbox address stays protected", packet{from: listed, proto: "tcp", dst: "10.213.0.6:22"}, policy.ReasonProtected},
		{"a protected address in the learned set stays protected", packet{from: listed, proto: "udp", dst: "169.254.169.253:53"}, policy.ReasonProtected},
		{"a private address in the learned set stays private", packet{from: listed, proto: "tcp", dst: "192.168.1.2:22"}, policy.ReasonPrivate},
		{"an explicit CIDR opens a private network", packet{from: listed, proto: "tcp", dst: "192.168.77.9:22"}, "accept"},
		{"an explicit address:port opens a protected destination on that port", packet{from: listed, proto: "tcp", dst: "169.254.169.254:8443"}, "accept"},
		{"another sandbox's learned address opens nothing for this one", packet{from: off, proto: "tcp", dst: "192.0.2.20:5432"}, policy.ReasonOff},
		{"another sandbox's learned deny does not apply to this one", packet{from: denier, proto: "tcp", dst: "192.0.2.10:1"}, "accept"},
		{"an address of a denied name is refused", packet{from: denier, proto: "icmp", dst: "192.0.2.30:0"}, policy.ReasonDenied},
		{"an address of a denied name is refused only to that sandbox", packet{from: open, proto: "tcp", dst: "192.0.2.30:22"}, "accept"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := verdict(t, rs, sets, tt.p); got != tt.want {
				t.Errorf("%s %s from %s: %s, want %s", tt.p.proto, tt.p.dst, tt.p.name(), got, tt.want)
			}
		})
	}
}

func TestTheLearnedSetsNeverHoldAProtectedOrPrivateAddress(t *testing.T) {
	m, sets := testManager(t)
	m.addTestSandbox(t, "listed", 3, policy.Policy{Internet: true, AllowedHosts: []string{"*.good.test"}})
	for _, ports := range [][]uint16{nil, {443}} {
		m.AllowLearned("listed", []netip.Addr{
			netip.MustParseAddr("169.254.169.254"), netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.213.0.6"),
			netip.MustParseAddr("198.18.213.1"), netip.MustParseAddr("192.168.1.1"), netip.MustParseAddr("172.16.0.1"),
			netip.MustParseAddr("100.64.0.1"), netip.MustParseAddr("198.19.0.1"), netip.MustParseAddr("::ffff:10.0.0.1"),
		}, time.Minute, ports)
	}
	for _, set := range []string{SetLearnedAll, SetLearned, SetAllowAll, SetAllow} {
		if n := len(sets[set].entries); n != 0 {
			t.Errorf("%s holds %d entries: %v", set, n, sets[set].entries)
		}
	}
}

func TestLearnedEntriesTimeOutWithTheAnswer(t *testing.T) {
	m, sets := testManager(t)
	sb := m.addTestSandbox(t, "listed", 3, policy.Policy{AllowedHosts: []string{"a.test", "b.test:5432"}})
	a := netip.MustParseAddr("192.0.2.10")
	m.AllowLearned("listed", []netip.Addr{a}, 90*time.Second, nil)
	m.AllowLearned("listed", []netip.Addr{a}, 30*time.Second, []uint16{5432, 6543})
	m.DenyLearned("listed", []netip.Addr{a}, 200*time.Millisecond)
	m.AllowLearned("gone", []netip.Addr{a}, time.Minute, nil)
	for _, tt := range []struct {
		set     string
		entries int
		timeout uint32
	}{
		{SetLearnedAll, 1, 90},
		{SetLearned, 4, 30}, // tcp and udp on each port
		{SetDenyLearned, 1, 1},
	} {
		es := sets[tt.set].entries
		if len(es) != tt.entries {
			t.Errorf("%s: %d entries, want %d: %v", tt.set, len(es), tt.entries, es)
		}
		for _, e := range es {
			if e.Timeout == nil || *e.Timeout != tt.timeout {
				t.Errorf("%s: entry %s has timeout %v, want %d s", tt.set, entryKey(&e), e.Timeout, tt.timeout)
			}
			if e.IFace != "" && e.IFace != sb.HostInterface || e.IFace == "" && !e.IP.Equal(sb.Addr.AsSlice()) {
				t.Errorf("%s: entry %s is not the sandbox's", tt.set, entryKey(&e))
			}
		}
	}
}

func TestAPolicyChangeOrADeleteTakesAllTheSandboxHadAndNothingElse(t *testing.T) {
	for _, change := range []string{"policy change", "delete"} {
		t.Run(change, func(t *testing.T) {
			m, sets := testManager(t)
			pol := policy.Policy{Internet: true, AllowedHosts: []string{"*.good.test", "192.0.2.0/24:22"}, DeniedHosts: []string{"bad.test", "198.51.100.1"},
				Inbound: []string{"10.244.0.0/16:8080/tcp", "192.0.2.0/24"}}
			m.addTestSandbox(t, "a", 1, pol)
			m.addTestSandbox(t, "b", 2, pol)
			for _, name := range []string{"a", "b"} {
				m.AllowLearned(name, []netip.Addr{netip.MustParseAddr("203.0.113.1")}, time.Minute, nil)
				m.AllowLearned(name, []netip.Addr{netip.MustParseAddr("203.0.113.2")}, time.Minute, []uint16{443})
				m.DenyLearned(name, []netip.Addr{netip.MustParseAddr("203.0.113.3")}, time.Minute)
			}
			before := setSizes(sets)
			// An entry an earlier version put in the explicit set.
			sets.Add(SetAllowAll, &netlink.IPSetEntry{IP: netip.MustParseAddr("203.0.113.9").AsSlice(), CIDR: 32, IFace: "icd1", Timeout: ptr(uint32(60))})
			switch change {
			case "policy change":
				if _, err := m.SetPolicy("a", policy.Policy{}); err != nil {
					t.Fatal(err)
				}
			case "delete":
				if err := m.Delete("a"); err != nil {
					t.Fatal(err)
				}
			}
			after := setSizes(sets)
			// Every set the rules use, not only those clearSets knows of:
			// a set it forgets must fail here.
			for _, st := range Rules(m.cfg.Rules).Sets {
				if before[st.Name]%2 != 0 {
					t.Fatalf("%s: %d entries, not the same for both sandboxes", st.Name, before[st.Name])
				}
				want := before[st.Name] / 2 // a's new policy (internet off, no lists) has no entries
				if after[st.Name] != want {
					t.Errorf("%s: %d entries after the %s, want %d (b's only): %v", st.Name, after[st.Name], change, want, sets[st.Name].entries)
				}
			}
		})
	}
}

func setSizes(sets fakeSets) map[string]int {
	out := map[string]int{}
	for name, st := range sets {
		out[name] = len(st.entries)
	}
	return out
}

func TestConnectionsIntoASandboxFollowItsInboundPolicy(t *testing.T) {
	m, sets := testManager(t)
	rs := Rules(m.cfg.Rules)
	closed := m.addTestSandbox(t, "closed", 1, policy.Policy{Internet: true})
	server := m.addTestSandbox(t, "server", 2, policy.Policy{Inbound: []string{
		"10.244.0.0/16:8080/tcp", "192.0.2.7:5000-5002", "198.51.100.0/24", "10.213.0.0/16:9000/tcp",
	}})
	// A client sandbox whose egress opens the server's address on 9000,
	// one whose egress does not, and one with internet on (which never
	// opens a protected destination such as another sandbox).
	allows := m.addTestSandbox(t, "allows", 3, policy.Policy{AllowedHosts: []string{server.Addr.String() + ":9000"}})
	other := m.addTestSandbox(t, "other", 4, policy.Policy{Internet: true})
	allowsAddr := allows.Addr.String()
	all := func(proto, dst string, to *Sandbox, src string) packet {
		return packet{proto: proto, dst: dst, to: to, src: src}
	}
	at := func(sb *Sandbox, port int) string { return fmt.Sprintf("%s:%d", sb.Addr, port) }
	for _, tt := range []struct {
		name string
		p    packet
		want string
	}{
		{"a sandbox without inbound entries takes no connection", all("tcp", at(closed, 8080), closed, "10.244.1.1"), policy.ReasonProtected},
		{"a source inside the CIDR on the entry's port and protocol gets in", all("tcp", at(server, 8080), server, "10.244.1.1"), "accept"},
		{"a source inside the CIDR on another port is refused", all("tcp", at(server, 8081), server, "10.244.1.1"), policy.ReasonProtected},
		{"a source inside the CIDR over the other protocol is refused", all("udp", at(server, 8080), server, "10.244.1.1"), policy.ReasonProtected},
		{"a source outside the CIDR is refused", all("tcp", at(server, 8080), server, "10.245.0.1"), policy.ReasonProtected},
		{"an entry opens its own sandbox only", all("tcp", at(closed, 8080), closed, "10.244.1.1"), policy.ReasonProtected},
		{"both ends of a port range get in, over udp too", all("udp", at(server, 5002), server, "192.0.2.7"), "accept"},
		{"just past a port range is refused", all("tcp", at(server, 5003), server, "192.0.2.7"), policy.ReasonProtected},
		{"a neighbour of a /32 source is refused", all("tcp", at(server, 5000), server, "192.0.2.8"), policy.ReasonProtected},
		{"an entry without a port opens every port", all("tcp", at(server, 22), server, "198.51.100.9"), "accept"},
		{"an entry without a port opens icmp", all("icmp", at(server, 0), server, "198.51.100.9"), "accept"},
		{"an entry to the sandbox's address does not open another address behind its link", all("tcp", "10.213.0.9:8080", server, "10.244.1.1"), policy.ReasonProtected},
		{"an entry without a port does not open another address behind the sandbox's link", all("tcp", "10.213.0.9:22", server, "198.51.100.9"), policy.ReasonProtected},
		{"an entry without a port opens its own sandbox only", all("tcp", at(closed, 22), closed, "198.51.100.9"), policy.ReasonProtected},
		{"a sandbox's address from outside the sandboxes is forged and dropped", all("tcp", at(server, 9000), server, allowsAddr), "DROP"},
		{"an unassigned pool address from outside is forged too", all("tcp", at(server, 9000), server, "10.213.200.1"), "DROP"},
		{"another sandbox an entry covers, whose egress opens the server, gets in", packet{from: allows, proto: "tcp", dst: at(server, 9000), to: server}, "accept"},
		{"another sandbox an entry covers is still held to its own egress", packet{from: other, proto: "tcp", dst: at(server, 9000), to: server}, policy.ReasonProtected},
		{"another sandbox whose egress opens the server is refused a port no entry opens", packet{from: allows, proto: "tcp", dst: at(server, 8080), to: server}, policy.ReasonProtected},
		{"the server's own egress is unchanged", packet{from: server, proto: "tcp", dst: "192.0.2.99:8080"}, policy.ReasonOff},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := verdict(t, rs, sets, tt.p); got != tt.want {
				t.Errorf("%s %s from %s: %s, want %s", tt.p.proto, tt.p.dst, tt.p.name(), got, tt.want)
			}
		})
	}
}

func TestAPolicyTheSetsCannotTakeLeavesTheOldEntriesAndNothingOfTheNew(t *testing.T) {
	m, sets := testManager(t)
	old := policy.Policy{Internet: true, Inbound: []string{"10.244.0.0/16"}}
	sb := m.addTestSandbox(t, "a", 1, old)
	before := inSets(sets, sb)
	// A set that refuses every entry, as a full one does: the new policy's
	// inbound port entries cannot go in, but its other entries could.
	delete(sets, SetInbound)
	_, err := m.SetPolicy("a", policy.Policy{AllowedHosts: []string{"192.0.2.0/24"}, Inbound: []string{"0.0.0.0/0:22/tcp", "192.0.2.0/24"}})
	if err == nil {
		t.Fatal("the policy was taken")
	}
	sets.Create(SetInbound, "hash:ip,port,net")
	if after := inSets(sets, sb); !slices.Equal(after, before) {
		t.Errorf("entries after the refused change:\n  %s\nwant the old policy's:\n  %s", strings.Join(after, "\n  "), strings.Join(before, "\n  "))
	}
	if got, _ := m.byName["a"]; !slices.Equal(got.Policy.Inbound, old.Inbound) {
		t.Errorf("policy in force %+v, want the old one", got.Policy)
	}
}
