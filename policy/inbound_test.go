package policy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseInbound(t *testing.T) {
	tests := []struct {
		name, in string
		want     Inbound // raw aside
		err      string  // a part of the error; "" for none
	}{
		{"a CIDR alone opens every port", "10.244.0.0/16", Inbound{Source: netip.MustParsePrefix("10.244.0.0/16")}, ""},
		{"an address alone is a /32", "192.0.2.7", Inbound{Source: netip.MustParsePrefix("192.0.2.7/32")}, ""},
		{"a port without protocol is tcp and udp", "10.0.0.0/8:8080", Inbound{Source: netip.MustParsePrefix("10.0.0.0/8"), PortFrom: 8080, PortTo: 8080}, ""},
		{"a port with tcp is tcp only", "10.96.0.0/12:8080/tcp", Inbound{Source: netip.MustParsePrefix("10.96.0.0/12"), PortFrom: 8080, PortTo: 8080, Proto: "tcp"}, ""},
		{"a port range with udp", "192.0.2.7:5000-5010/udp", Inbound{Source: netip.MustParsePrefix("192.0.2.7/32"), PortFrom: 5000, PortTo: 5010, Proto: "udp"}, ""},
		{"surrounding spaces are ignored", " 10.0.0.0/8:80 ", Inbound{Source: netip.MustParsePrefix("10.0.0.0/8"), PortFrom: 80, PortTo: 80}, ""},
		{"an empty entry is refused", "", Inbound{}, "empty"},
		{"a bad CIDR is refused", "10.0.0.0/33", Inbound{}, "not an IPv4 address or CIDR"},
		{"a hostname is refused", "pods.example:80", Inbound{}, "not an IPv4 address or CIDR"},
		{"host bits in a CIDR are refused rather than widened", "10.1.2.3/16", Inbound{}, "write 10.1.0.0/16"},
		{"IPv6 is refused", "[2001:db8::1]:80", Inbound{}, "IPv6"},
		{"a bare IPv6 address is refused", "2001:db8::/32", Inbound{}, "IPv6"},
		{"port 0 is refused", "10.0.0.0/8:0", Inbound{}, "not 1-65535"},
		{"a port above 65535 is refused", "10.0.0.0/8:65536", Inbound{}, "not 1-65535"},
		{"a missing port is refused", "10.0.0.0/8:/tcp", Inbound{}, "not 1-65535"},
		{"an unknown protocol is refused", "10.0.0.0/8:80/sctp", Inbound{}, `protocol "sctp"`},
		{"a protocol in capitals is refused", "10.0.0.0/8:80/TCP", Inbound{}, `protocol "TCP"`},
		{"a backwards range is refused", "10.0.0.0/8:90-80", Inbound{}, "backwards"},
		{"a range wider than the limit is refused", "10.0.0.0/8:1000-1256", Inbound{}, "more than 256"},
		{"a range at the limit is accepted", "10.0.0.0/8:1000-1255", Inbound{Source: netip.MustParsePrefix("10.0.0.0/8"), PortFrom: 1000, PortTo: 1255}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseInbound(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrInvalidInbound) {
					t.Fatalf("ParseInbound(%q) = %+v, %v; want an ErrInvalidInbound saying %q", tt.in, got, err, tt.err)
				}
				if !strings.Contains(err.Error(), tt.in) {
					t.Errorf("error %q does not name the entry", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseInbound(%q): %v", tt.in, err)
			}
			got.raw = ""
			if got != tt.want {
				t.Errorf("ParseInbound(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestInboundAdmitsExactlyWhatItNames(t *testing.T) {
	tests := []struct {
		name, entry, src, proto string
		port                    uint16
		want                    bool
	}{
		{"a source inside the CIDR on the port", "10.244.0.0/16:8080/tcp", "10.244.3.4", "tcp", 8080, true},
		{"a source outside the CIDR", "10.244.0.0/16:8080/tcp", "10.245.0.1", "tcp", 8080, false},
		{"another port", "10.244.0.0/16:8080/tcp", "10.244.3.4", "tcp", 8081, false},
		{"the other protocol", "10.244.0.0/16:8080/tcp", "10.244.3.4", "udp", 8080, false},
		{"both protocols without one named", "10.244.0.0/16:53", "10.244.3.4", "udp", 53, true},
		{"icmp is not a port's protocol", "10.244.0.0/16:53", "10.244.3.4", "icmp", 0, false},
		{"the ends of a range", "10.0.0.0/8:5000-5010", "10.0.0.1", "tcp", 5010, true},
		{"just past a range", "10.0.0.0/8:5000-5010", "10.0.0.1", "tcp", 5011, false},
		{"no port opens every port and protocol", "192.0.2.0/24", "192.0.2.9", "icmp", 0, true},
		{"a /32 opens that address only", "192.0.2.7", "192.0.2.8", "tcp", 80, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Policy{Inbound: []string{tt.entry}}.Compile()
			if err != nil {
				t.Fatal(err)
			}
			pattern, got := c.AdmitsInbound(netip.MustParseAddr(tt.src), tt.proto, tt.port)
			if got != tt.want {
				t.Errorf("%s admits %s %s/%d = %v, want %v", tt.entry, tt.src, tt.proto, tt.port, got, tt.want)
			}
			if got && pattern != tt.entry {
				t.Errorf("decided by %q, want %q", pattern, tt.entry)
			}
		})
	}
}

func TestCompileNamesEveryBadInboundEntryByIndex(t *testing.T) {
	_, err := Policy{Inbound: []string{"10.0.0.0/8", "10.0.0.0/8:http", "10.0.0.0/8:80/icmp"}}.Compile()
	if err == nil {
		t.Fatal("compiled")
	}
	for _, want := range []string{"inbound[1]", `"10.0.0.0/8:http"`, "inbound[2]", `protocol "icmp"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "inbound[0]") {
		t.Errorf("error %q blames the good entry", err)
	}
}

func TestAPolicyWithoutInboundAdmitsNothing(t *testing.T) {
	c := MustCompile(Policy{Internet: true})
	if p, ok := c.AdmitsInbound(netip.MustParseAddr("10.0.0.1"), "tcp", 80); ok {
		t.Errorf("admitted by %q", p)
	}
}

func TestAForwardToAnotherSandboxNeedsItsInboundEntryAsWellAsTheCallersAllow(t *testing.T) {
	v, _ := newTestVerdicts()
	server := netip.MustParseAddr("10.213.0.2")
	servers := map[netip.Addr]*Compiled{
		server: MustCompile(Policy{Inbound: []string{"10.213.0.4/30:8080/tcp", "10.213.0.4/30:53/udp"}}),
	}
	v.Sandbox = func(a netip.Addr) (*Compiled, bool) { c, ok := servers[a]; return c, ok }
	caller := func(addr string, allow ...string) Caller {
		return Caller{Sandbox: "c", Addr: netip.MustParseAddr(addr), Policy: MustCompile(Policy{AllowedHosts: allow})}
	}
	for _, tt := range []struct {
		name   string
		caller Caller
		port   uint16
		want   string
	}{
		{"the caller's allow and the server's entry: forwarded", caller("10.213.0.6", "10.213.0.2"), 8080, ReasonAllowed},
		{"the server's entry alone: the pool stays closed to the caller", caller("10.213.0.6", "example.test"), 8080, ReasonNotAllowed},
		{"the caller's allow alone, from an address no entry covers", caller("10.213.0.10", "10.213.0.2"), 8080, ReasonProtected},
		{"the caller's allow on a port no entry opens", caller("10.213.0.6", "10.213.0.2"), 8081, ReasonProtected},
		{"an entry for udp does not open tcp", caller("10.213.0.6", "10.213.0.2"), 53, ReasonProtected},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := v.HTTP(tt.caller, HTTPRequest{Host: server.String(), Dest: netip.AddrPortFrom(server, tt.port)})
			if d.Reason != tt.want {
				t.Errorf("HTTP to %s:%d from %s: %+v, want reason %s", server, tt.port, tt.caller.Addr, d, tt.want)
			}
			if tls := v.TLS(tt.caller, TLSHello{SNI: server.String(), Dest: netip.AddrPortFrom(server, tt.port)}); tls.Reason != tt.want {
				t.Errorf("TLS to %s:%d from %s: %+v, want reason %s", server, tt.port, tt.caller.Addr, tls, tt.want)
			}
		})
	}
}
