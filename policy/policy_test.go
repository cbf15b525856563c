package policy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestPatterns(t *testing.T) {
	tests := []struct {
		name    string
		pattern string
		host    string
		port    uint16
		want    bool
	}{
		{"an exact host matches itself", "api.github.com", "api.github.com", 80, true},
		{"matching ignores case", "API.GitHub.com", "api.github.COM", 80, true},
		{"a trailing dot is ignored on both sides", "api.github.com.", "api.github.com.", 80, true},
		{"an exact host does not match a subdomain", "github.com", "api.github.com", 80, false},
		{"a star matches a run of characters across dots", "*.github.com", "a.b.github.com", 80, true},
		{"a star needs the dot before the suffix", "*.github.com", "github.com", 80, false},
		{"a star in the middle", "api-*.example.com", "api-eu.example.com", 80, true},
		{"a lone star matches everything", "*", "anything.at.all", 80, true},
		{"a port limits the match", "example.com:443", "example.com", 80, false},
		{"a matching port matches", "example.com:80", "example.com", 80, true},
		{"a port pattern matches a DNS name (no port)", "example.com:443", "example.com", 0, true},
		{"an IP matches an IP literal host", "192.0.2.1", "192.0.2.1", 80, true},
		{"a CIDR matches an address inside", "10.0.0.0/8", "10.1.2.3", 80, true},
		{"a CIDR does not match a name", "10.0.0.0/8", "example.com", 80, false},
		{"a CIDR with a port", "10.0.0.0/8:8080", "10.1.2.3", 80, false},
		{"an IPv6 address with a port", "[2001:db8::1]:443", "2001:db8::1", 443, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePattern(tt.pattern)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.MatchHost(tt.host, tt.port); got != tt.want {
				t.Errorf("%q matches %q:%d = %v", tt.pattern, tt.host, tt.port, got)
			}
		})
	}
}

func TestInvalidPatternsAreRejectedByName(t *testing.T) {
	for _, s := range []string{"", "exa mple.com", "10.0.0.0/33", "host:0", "host:99999", "[::1", "a..b", "-bad.com", "ex@mple.com"} {
		_, err := ParsePattern(s)
		if !errors.Is(err, ErrInvalidPattern) || !strings.Contains(err.Error(), `"`+s+`"`) {
			t.Errorf("ParsePattern(%q) = %v, want an error naming it", s, err)
		}
	}
	_, err := Policy{AllowedHosts: []string{"ok.com", "bad host"}, DeniedHosts: []string{"1.2.3.4/99"}}.Compile()
	if err == nil || !strings.Contains(err.Error(), "allowed_hosts") || !strings.Contains(err.Error(), `"bad host"`) {
		t.Errorf("Compile error %v does not name the list and pattern", err)
	}
}

func TestHTTPPrecedence(t *testing.T) {
	dest := netip.MustParseAddr("192.0.2.10")
	tests := []struct {
		name       string
		policy     Policy
		host       string
		handler    bool
		catchAll   bool
		wantResult Result
		wantReason string
	}{
		{"a denied host is denied even with internet on", Policy{Internet: true, DeniedHosts: []string{"evil.com"}}, "evil.com", false, false, Deny, ReasonDenied},
		{"a denied host is denied even when it has a handler", Policy{DeniedHosts: []string{"my.kv"}}, "my.kv", true, false, Deny, ReasonDenied},
		{"a denied address is denied whatever the Host", Policy{Internet: true, DeniedHosts: []string{"192.0.2.0/24"}}, "fine.com", false, false, Deny, ReasonDenied},
		{"a per-host handler beats an allowlist without it", Policy{AllowedHosts: []string{"github.com"}}, "my.kv", true, false, Handler, ReasonHandler},
		{"a per-host handler works with internet off", Policy{}, "my.kv", true, false, Handler, ReasonHandler},
		{"a per-host handler beats the catch-all", Policy{}, "my.kv", true, true, Handler, ReasonHandler},
		{"an allowlist miss is denied even with internet on", Policy{Internet: true, AllowedHosts: []string{"github.com"}}, "other.com", false, false, Deny, ReasonNotAllowed},
		{"an allowlist miss is denied before the catch-all", Policy{AllowedHosts: []string{"github.com"}}, "other.com", false, true, Deny, ReasonNotAllowed},
		{"the catch-all takes what is not denied", Policy{}, "other.com", false, true, CatchAll, ReasonCatchAll},
		{"the catch-all takes an allowed host too", Policy{AllowedHosts: []string{"github.com"}}, "github.com", false, true, CatchAll, ReasonCatchAll},
		{"an allowed host is forwarded with internet off", Policy{AllowedHosts: []string{"*.github.com"}}, "api.github.com", false, false, Forward, ReasonAllowed},
		{"internet on forwards the rest", Policy{Internet: true}, "other.com", false, false, Forward, ReasonInternet},
		{"internet off denies the rest", Policy{}, "other.com", false, false, Deny, ReasonOff},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			caller := Caller{Sandbox: "s", Policy: MustCompile(tt.policy)}
			d := (&Verdicts{}).HTTP(caller, HTTPRequest{Host: tt.host, Dest: netip.AddrPortFrom(dest, 80), HasHandler: tt.handler, HasCatchAll: tt.catchAll})
			if d.Result != tt.wantResult || d.Reason != tt.wantReason {
				t.Errorf("decision %+v, want %s/%s", d, tt.wantResult, tt.wantReason)
			}
		})
	}
}

func TestDNSFollowsThePolicy(t *testing.T) {
	tests := []struct {
		name    string
		policy  Policy
		qname   string
		handler bool
		allowed bool
	}{
		{"a handler name is answered with internet off", Policy{}, "my.kv", true, true},
		{"a denied handler name is not", Policy{DeniedHosts: []string{"my.kv"}}, "my.kv", true, false},
		{"a denied name is not answered with internet on", Policy{Internet: true, DeniedHosts: []string{"*.evil.com"}}, "x.evil.com", false, false},
		{"an allowed name is answered with internet off", Policy{AllowedHosts: []string{"api.github.com:443"}}, "api.github.com", false, true},
		{"another name is not, with internet off", Policy{}, "example.com", false, false},
		{"another name is not, with an allowlist", Policy{Internet: true, AllowedHosts: []string{"github.com"}}, "example.com", false, false},
		{"any name is, with internet on", Policy{Internet: true}, "example.com", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			caller := Caller{Sandbox: "s", Policy: MustCompile(tt.policy)}
			if got := (&Verdicts{}).DNSQuery(caller, tt.qname, tt.handler).Allowed(); got != tt.allowed {
				t.Errorf("allowed = %v", got)
			}
		})
	}
}

func TestOnlyAnAddressEntryOpensAProtectedDestination(t *testing.T) {
	c := MustCompile(Policy{Internet: true, AllowedHosts: []string{"169.254.169.254:80", "metadata.*"}})
	if !c.AllowsAddress(netip.MustParseAddr("169.254.169.254"), 80) {
		t.Error("an explicit IP entry did not open the address")
	}
	if c.AllowsAddress(netip.MustParseAddr("169.254.169.254"), 8080) {
		t.Error("the entry opened another port")
	}
	if c.AllowsAddress(netip.MustParseAddr("127.0.0.1"), 80) {
		t.Error("a hostname glob opened loopback")
	}
}
