package netns

import (
	"net"
	"net/netip"
	"testing"

	"github.com/interceptd/interceptd/policy"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestAnInboundCutTakesOnlyConnectionsIntoTheSandboxThatItsPolicyNoLongerAdmits(t *testing.T) {
	sb := netip.MustParseAddr("10.213.0.2")
	c := policy.MustCompile(policy.Policy{Inbound: []string{"10.244.0.0/16:8080/tcp"}})
	cut := inboundCut{addr: sb, local: map[netip.Addr]bool{netip.MustParseAddr("10.213.0.1"): true},
		admits: func(src netip.Addr, proto string, port uint16) bool {
			_, ok := c.AdmitsInbound(src, proto, port)
			return ok
		}}
	flow := func(src, dst string, proto uint8, port uint16) *netlink.ConntrackFlow {
		return &netlink.ConntrackFlow{
			Forward: netlink.IPTuple{SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst), Protocol: proto, SrcPort: 40000, DstPort: port},
			Reverse: netlink.IPTuple{SrcIP: net.ParseIP(dst), DstIP: net.ParseIP(src), Protocol: proto, SrcPort: port, DstPort: 40000},
		}
	}
	// dnat is a connection to dst:port that the host DNATed to to:toPort
	// (a hostPort, a Service).
	dnat := func(src, dst string, port uint16, to string, toPort uint16) *netlink.ConntrackFlow {
		f := flow(src, dst, unix.IPPROTO_TCP, port)
		f.Reverse.SrcIP, f.Reverse.SrcPort = net.ParseIP(to), toPort
		return f
	}
	for _, tt := range []struct {
		name string
		f    *netlink.ConntrackFlow
		want bool
	}{
		{"a connection in that an entry still admits stays", flow("10.244.1.1", "10.213.0.2", unix.IPPROTO_TCP, 8080), false},
		{"a connection in on a port no entry opens now goes", flow("10.244.1.1", "10.213.0.2", unix.IPPROTO_TCP, 9000), true},
		{"a connection in from a source no entry covers now goes", flow("10.245.0.1", "10.213.0.2", unix.IPPROTO_TCP, 8080), true},
		{"a connection in over the other protocol goes", flow("10.244.1.1", "10.213.0.2", unix.IPPROTO_UDP, 8080), true},
		{"the host's own connection (a probe, a forward) stays", flow("10.213.0.1", "10.213.0.2", unix.IPPROTO_TCP, 9000), false},
		{"the sandbox's own connection out stays", flow("10.213.0.2", "192.0.2.9", unix.IPPROTO_TCP, 9000), false},
		{"a connection into another sandbox stays", flow("10.245.0.1", "10.213.0.6", unix.IPPROTO_TCP, 9000), false},
		{"a connection DNATed into the sandbox on a port no entry opens now goes", dnat("10.244.1.1", "10.96.0.10", 8080, "10.213.0.2", 9000), true},
		{"a connection DNATed into the sandbox on a port an entry opens stays", dnat("10.244.1.1", "10.96.0.10", 80, "10.213.0.2", 8080), false},
		{"a connection to the sandbox's address DNATed elsewhere stays", dnat("10.245.0.1", "10.213.0.2", 9000, "10.213.0.6", 9000), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := cut.MatchConntrackFlow(tt.f); got != tt.want {
				t.Errorf("cut %v: %v, want %v", tt.f.Forward, got, tt.want)
			}
		})
	}
}

func TestAPolicyChangeCutsTheConnectionsInThatTheNewPolicyRefuses(t *testing.T) {
	m, _ := testManager(t)
	k := m.k.(*fakeKernel)
	sb := m.addTestSandbox(t, "a", 1, policy.Policy{Inbound: []string{"10.244.0.0/16"}})
	if _, err := m.SetPolicy("a", policy.Policy{Inbound: []string{"10.244.0.0/16:8080/tcp"}}); err != nil {
		t.Fatal(err)
	}
	if len(k.cuts) != 1 || k.cuts[0].addr != sb.Addr {
		t.Fatalf("cuts %+v, want one for %s", k.cuts, sb.Addr)
	}
	src := netip.MustParseAddr("10.244.1.1")
	if !k.cuts[0].admits(src, "tcp", 8080) || k.cuts[0].admits(src, "tcp", 22) {
		t.Error("the cut was not made with the new policy")
	}
}

func TestAPolicyChangeThatKeepsTheInboundListCutsNothing(t *testing.T) {
	m, _ := testManager(t)
	k := m.k.(*fakeKernel)
	m.addTestSandbox(t, "a", 1, policy.Policy{Inbound: []string{"10.244.0.0/16"}})
	if _, err := m.SetPolicy("a", policy.Policy{Internet: true, Inbound: []string{"10.244.0.0/16"}}); err != nil {
		t.Fatal(err)
	}
	if len(k.cuts) != 0 {
		t.Errorf("%d cuts (each a dump of conntrack) for an egress change", len(k.cuts))
	}
}

func TestADeletedSandboxsConnectionsGoWithIt(t *testing.T) {
	m, _ := testManager(t)
	k := m.k.(*fakeKernel)
	sb := m.addTestSandbox(t, "a", 1, policy.Policy{Inbound: []string{"10.244.0.0/16:5000/udp"}})
	if err := m.Delete("a"); err != nil {
		t.Fatal(err)
	}
	if len(k.forgot) != 1 || k.forgot[0] != sb.Addr {
		t.Errorf("connections forgotten for %v, want %s", k.forgot, sb.Addr)
	}
}

func TestForgettingAnAddressTakesEveryConnectionFromOrIntoIt(t *testing.T) {
	f := addrFlows(netip.MustParseAddr("10.213.0.2"))
	flow := func(src, dst, replySrc string) *netlink.ConntrackFlow {
		return &netlink.ConntrackFlow{Forward: netlink.IPTuple{SrcIP: net.ParseIP(src), DstIP: net.ParseIP(dst)}, Reverse: netlink.IPTuple{SrcIP: net.ParseIP(replySrc), DstIP: net.ParseIP(src)}}
	}
	for _, tt := range []struct {
		name string
		f    *netlink.ConntrackFlow
		want bool
	}{
		{"its own flow out", flow("10.213.0.2", "192.0.2.9", "192.0.2.9"), true},
		{"a flow into it", flow("10.244.1.1", "10.213.0.2", "10.213.0.2"), true},
		{"a flow DNATed into it", flow("10.244.1.1", "10.96.0.10", "10.213.0.2"), true},
		{"another sandbox's flow", flow("10.213.0.6", "192.0.2.9", "192.0.2.9"), false},
	} {
		if got := f.MatchConntrackFlow(tt.f); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}
