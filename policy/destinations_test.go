package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

func TestPrivateDestinations(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{"10.1.2.3", true},
		{"172.16.0.1", true},
		{"172.31.255.254", true},
		{"172.32.0.1", false},
		{"192.168.77.2", true},
		{"100.64.0.1", true},
		{"100.127.255.254", true},
		{"100.128.0.1", false},
		{"198.18.0.1", true},
		{"198.19.255.254", true},
		{"198.20.0.1", false},
		{"::ffff:192.168.1.1", true},
		{"fd00::1", true},
		{"192.0.2.2", false},
		{"8.8.8.8", false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s is private: %v", tt.addr, tt.want), func(t *testing.T) {
			if got := Private(netip.MustParseAddr(tt.addr)); got != tt.want {
				t.Errorf("Private(%s) = %v", tt.addr, got)
			}
		})
	}
}

func TestOnlyAnAddressEntryNamesAnAddress(t *testing.T) {
	c := MustCompile(Policy{AllowedHosts: []string{"192.168.77.0/24:5432", "*.good.test", "169.254.169.254"}})
	for addr, want := range map[string]bool{
		"192.168.77.9":        true, // on any port: a DNS answer has none
		"169.254.169.254":     true,
		"::ffff:192.168.77.9": true,
		"192.168.78.1":        false,
		"10.0.0.1":            false,
	} {
		if got := c.NamesAddress(netip.MustParseAddr(addr)); got != want {
			t.Errorf("NamesAddress(%s) = %v, want %v", addr, got, want)
		}
	}
}

func TestAllowedPortsAreTheMatchingEntriesPorts(t *testing.T) {
	c := MustCompile(Policy{AllowedHosts: []string{"db.example.com:5432", "*.example.com:443", "db.example.com:443", "10.0.0.0/8", "open.test"}})
	tests := []struct {
		name      string
		host      string
		wantPorts []uint16
		wantAny   bool
	}{
		{"a name with ported entries opens those ports once each", "db.example.com", []uint16{5432, 443}, false},
		{"a glob's port", "api.example.com", []uint16{443}, false},
		{"an entry without a port opens every port", "open.test", nil, true},
		{"an unmatched name opens nothing", "other.test", nil, false},
		{"an address entry opens nothing for a name", "10.1.1.1", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ports, any := c.AllowedPorts(tt.host)
			if any != tt.wantAny || !slices.Equal(ports, tt.wantPorts) {
				t.Errorf("AllowedPorts(%s) = %v, %v; want %v, %v", tt.host, ports, any, tt.wantPorts, tt.wantAny)
			}
		})
	}
}

func TestDeniesMatchesHostnameEntriesOnly(t *testing.T) {
	c := MustCompile(Policy{DeniedHosts: []string{"*.evil.test", "api.test:443", "192.0.2.3"}})
	tests := []struct {
		name string
		port uint16
		want bool
	}{
		{"x.evil.test.", 80, true},
		{"X.EVIL.test", 0, true},
		{"api.test", 443, true},
		{"api.test", 80, false},
		{"api.test", 0, true},
		{"192.0.2.3", 80, false}, // address entries are matched on the address itself
		{"good.test", 80, false},
	}
	for _, tt := range tests {
		if _, got := c.Denies(tt.name, tt.port); got != tt.want {
			t.Errorf("Denies(%s, %d) = %v, want %v", tt.name, tt.port, got, tt.want)
		}
	}
	if !c.DeniesNames() || MustCompile(Policy{DeniedHosts: []string{"192.0.2.3"}}).DeniesNames() {
		t.Error("DeniesNames must say whether hostname entries exist")
	}
}

func TestTheBookKnowsTheNamesOfAnAddress(t *testing.T) {
	var b AddrBook
	a := netip.MustParseAddr("192.0.2.3")
	b.Learn("s1", "X.evil.test.", []netip.Addr{a}, time.Minute)
	b.Learn("", "other.test", []netip.Addr{netip.MustParseAddr("::ffff:192.0.2.3")}, time.Minute)
	b.Learn("s2", "gone.test", []netip.Addr{a}, -time.Hour) // at least a second
	got := b.NamesOf(a)
	slices.Sort(got)
	if want := []string{"gone.test", "other.test", "x.evil.test"}; !slices.Equal(got, want) {
		t.Errorf("NamesOf = %v, want %v", got, want)
	}
	b.Forget("s1") // what a sandbox learned for itself goes; the index stays
	if !slices.Contains(b.NamesOf(a), "x.evil.test") {
		t.Error("the index lost a name when its sandbox was forgotten")
	}
	n := 0
	b.Indexed(func(netip.Addr, string, time.Duration) { n++ })
	if n != 3 {
		t.Errorf("Indexed visited %d entries, want 3", n)
	}
}

func TestAFullIndexKeepsWhatItHolds(t *testing.T) {
	var b AddrBook
	a := netip.MustParseAddr("192.0.2.3")
	b.Learn("", "x.evil.test", []netip.Addr{a}, time.Hour)
	for i := range maxNamesPerAddress + 10 {
		b.Learn("", fmt.Sprintf("n%d.flood.test", i), []netip.Addr{a}, time.Hour)
	}
	names := b.NamesOf(a)
	if len(names) != maxNamesPerAddress || !slices.Contains(names, "x.evil.test") {
		t.Errorf("%d names kept (want %d), x.evil.test kept: %v", len(names), maxNamesPerAddress, slices.Contains(names, "x.evil.test"))
	}
}

// The kernel rules (Prefixes) and the router's and DNS shim's check
// (Protected) are one definition: they agree on every address, 0.0.0.0/8
// included, and Protected says why.
func TestTheKernelListAndTheGoCheckProtectTheSameDestinations(t *testing.T) {
	d := NewDestinations(netip.MustParsePrefix("10.213.0.0/16"), netip.MustParsePrefix("198.18.213.0/24"))
	tests := []struct {
		addr string
		want string // what Protected says; "" for a destination it leaves alone
	}{
		{"0.0.0.0", "not a unicast address"},
		{"0.1.2.3", "not a unicast address"},
		{"0.255.255.255", "not a unicast address"},
		{"127.0.0.1", "loopback"},
		{"127.1.2.3", "loopback"},
		{"169.254.169.254", "link-local"},
		{"224.0.0.1", "multicast"},
		{"239.255.255.250", "multicast"},
		{"255.255.255.255", "not a unicast address"},
		{"10.213.0.6", "protected (10.213.0.0/16)"},
		{"198.18.213.9", "protected (198.18.213.0/24)"},
		{"::ffff:127.0.0.1", "loopback"},
		{"::ffff:0.1.2.3", "not a unicast address"},
		{"1.0.0.1", ""},
		{"10.214.0.1", ""}, // private, not protected: a reason of its own
		{"198.18.214.1", ""},
		{"192.0.2.10", ""},
		{"240.0.0.1", ""},
		{"255.255.255.254", ""},
		{"8.8.8.8", ""},
	}
	kernel := d.Prefixes()
	for _, tt := range tests {
		a := netip.MustParseAddr(tt.addr)
		inKernel := slices.ContainsFunc(kernel, func(p netip.Prefix) bool { return p.Contains(a.Unmap()) })
		t.Run(fmt.Sprintf("%s is protected (%q) in the kernel list and the Go check alike", tt.addr, tt.want), func(t *testing.T) {
			if got := d.Protected(a); got != tt.want {
				t.Errorf("Protected(%s) = %q, want %q", tt.addr, got, tt.want)
			}
			if inKernel != (tt.want != "") {
				t.Errorf("%s: in the kernel list %v, but Protected says %q", tt.addr, inKernel, d.Protected(a))
			}
		})
	}
}

func TestTheKernelListIsIPv4WithThePoolAndVirtualRangeFirst(t *testing.T) {
	d := NewDestinations(netip.MustParsePrefix("10.213.0.0/16"), netip.MustParsePrefix("198.18.213.5/24"))
	var got []string
	for _, p := range d.Prefixes() {
		got = append(got, p.String())
	}
	want := []string{"10.213.0.0/16", "198.18.213.0/24", "0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "255.255.255.255/32"}
	if !slices.Equal(got, want) {
		t.Errorf("Prefixes() = %v, want %v", got, want)
	}
}

// The IPv6 destinations the kernel rules (IPv4) never see are protected in
// Go as they were before there was one definition.
func TestIPv6ProtectedDestinations(t *testing.T) {
	d := NewDestinations(netip.MustParsePrefix("10.213.0.0/16"), netip.MustParsePrefix("198.18.213.0/24"))
	for addr, want := range map[string]string{
		"::": "not a unicast address", "::1": "loopback", "fe80::1": "link-local",
		"ff02::1": "multicast", "ff0e::1": "multicast", "2001:db8::1": "", "fd00::1": "",
	} {
		if got := d.Protected(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Protected(%s) = %q, want %q", addr, got, want)
		}
	}
}

func TestClosedNamesTheReasonProtectedFirst(t *testing.T) {
	protected := func(a netip.Addr) string {
		if a.IsLinkLocalUnicast() || a == netip.MustParseAddr("10.213.0.6") {
			return "protected"
		}
		return ""
	}
	for _, tt := range []struct {
		addr       string
		protected  func(netip.Addr) string
		wantReason string
	}{
		{"169.254.169.254", protected, ReasonProtected},
		{"10.213.0.6", protected, ReasonProtected}, // the pool is private too: protected wins
		{"192.168.1.1", protected, ReasonPrivate},
		{"169.254.169.254", nil, ""},
		{"192.0.2.2", protected, ""},
	} {
		if got, _ := Closed(tt.protected, netip.MustParseAddr(tt.addr)); got != tt.wantReason {
			t.Errorf("Closed(%s) = %q, want %q", tt.addr, got, tt.wantReason)
		}
	}
}
