package dnsshim

import (
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/interceptd/interceptd/policy"
	"github.com/miekg/dns"
)

func TestAForwardedAnswerNeverPointsAtWhatThePolicyProtects(t *testing.T) {
	s := New(Config{Logger: slog.New(slog.DiscardHandler), Verdicts: policy.Verdicts{Protected: func(a netip.Addr) string {
		if a.IsLinkLocalUnicast() || a.IsLoopback() {
			return "protected"
		}
		return ""
	}}})
	open := policy.Caller{Sandbox: "s", Policy: policy.MustCompile(policy.Policy{Internet: true, DeniedHosts: []string{"*.evil.test"}})}
	lan := policy.Caller{Sandbox: "s", Policy: policy.MustCompile(policy.Policy{Internet: true, AllowedHosts: []string{"*.good.test", "192.168.0.0/16"}})}
	tests := []struct {
		name       string
		caller     policy.Caller
		records    []string
		wantReason string // "" when the answer passes
		wantKept   int
	}{
		{"a public address passes", open, []string{"a.test. 60 IN A 192.0.2.2"}, "", 1},
		{"the metadata address is refused", open, []string{"a.test. 60 IN A 169.254.169.254"}, policy.ReasonProtected, 0},
		{"loopback is refused", open, []string{"a.test. 60 IN A 127.0.0.1"}, policy.ReasonProtected, 0},
		{"a LAN address is refused", open, []string{"a.test. 60 IN A 192.168.1.10"}, policy.ReasonPrivate, 0},
		{"an IPv6 unique-local address is refused", open, []string{"a.test. 60 IN AAAA fd00::1"}, policy.ReasonPrivate, 0},
		{"a mixed answer loses only the protected record", open, []string{"a.test. 60 IN A 169.254.169.254", "a.test. 60 IN A 192.0.2.2"}, "", 1},
		{"an explicit CIDR entry lets the LAN through", lan, []string{"a.good.test. 60 IN A 192.168.1.10"}, "", 1},
		{"a CNAME into a denied zone is refused", open, []string{"a.test. 60 IN CNAME x.evil.test.", "x.evil.test. 60 IN A 192.0.2.3"}, policy.ReasonDenied, 2},
		{"a CNAME elsewhere passes", open, []string{"a.test. 60 IN CNAME b.test.", "b.test. 60 IN A 192.0.2.3"}, "", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := new(dns.Msg)
			for _, r := range tt.records {
				rr, err := dns.NewRR(r)
				if err != nil {
					t.Fatal(err)
				}
				resp.Answer = append(resp.Answer, rr)
			}
			names := chain("a.test.", resp)
			d, detail := s.screen(tt.caller, names, resp)
			if d.Reason != tt.wantReason || d.Allowed() != (tt.wantReason == "") {
				t.Fatalf("decision %+v (%s), want reason %q", d, detail, tt.wantReason)
			}
			if d.Allowed() && len(resp.Answer) != tt.wantKept {
				t.Errorf("kept %d records, want %d: %v", len(resp.Answer), tt.wantKept, resp.Answer)
			}
			for _, rr := range resp.Answer {
				if d.Allowed() && strings.Contains(rr.String(), "169.254") {
					t.Errorf("a protected record was kept: %s", rr)
				}
			}
		})
	}
}
