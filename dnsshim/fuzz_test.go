package dnsshim

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"testing"

	"github.com/interceptd/interceptd/policy"
	"github.com/miekg/dns"
)

// FuzzServeDNS feeds arbitrary packets to the shim as a sandbox: it must
// answer every one it can parse with exactly one response, and never panic.
func FuzzServeDNS(f *testing.F) {
	for _, q := range []struct {
		name string
		t    uint16
	}{{"my.kv.", dns.TypeA}, {"MY.KV.", dns.TypeAAAA}, {"x.denied.test.", dns.TypeA}, {"example.test.", dns.TypeTXT}} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.t)
		b, _ := m.Pack()
		f.Add(b)
	}
	f.Add([]byte{0, 1, 2})
	s, _ := newShim(nil) // no upstreams: forwarded names are a fast SERVFAIL
	f.Fuzz(func(t *testing.T, pkt []byte) {
		r := new(dns.Msg)
		if err := r.Unpack(pkt); err != nil {
			return // the server drops what it cannot parse
		}
		w := &recorder{remote: &net.UDPAddr{IP: net.IPv4(10, 213, 0, 2), Port: 5353}}
		s.ServeDNS(w, r)
		if w.writes != 1 {
			t.Fatalf("%d responses written, want exactly one", w.writes)
		}
		if w.msg.Id != r.Id {
			t.Fatalf("response id %d for query id %d", w.msg.Id, r.Id)
		}
	})
}

// FuzzFastAnswerMatchesServeDNS holds the fast path to the full one: for any
// packet the fast path answers, miekg/dns must parse the query too, and
// ServeDNS must give the same answer (header bits, rcode, question and
// records).
func FuzzFastAnswerMatchesServeDNS(f *testing.F) {
	for _, q := range []struct {
		name string
		t    uint16
		edns bool
	}{
		{"my.kv.", dns.TypeA, false}, {"MY.Kv.", dns.TypeAAAA, false}, {"my.kv.", dns.TypeANY, true},
		{"blocked.kv.", dns.TypeA, true}, {"my.kv.", dns.TypeMX, false}, {"example.test.", dns.TypeA, false},
	} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.t)
		m.CheckingDisabled = q.edns
		if q.edns {
			m.SetEdns0(1232, false)
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"})
		}
		b, _ := m.Pack()
		f.Add(b)
	}
	s := New(Config{
		Names: map[string]netip.Addr{"my.kv": netip.MustParseAddr("198.18.213.1"), "blocked.kv": netip.MustParseAddr("198.18.213.2")},
		TTL:   30,
		Identify: func(a netip.Addr) (policy.Caller, bool) {
			return policy.Caller{Sandbox: "web1", Policy: policy.MustCompile(policy.Policy{Internet: true, DeniedHosts: []string{"blocked.kv"}})}, true
		},
		Logger: slog.New(slog.DiscardHandler),
	})
	src := netip.MustParseAddr("10.213.0.2")
	f.Fuzz(func(t *testing.T, pkt []byte) {
		fast, ok := s.fastAnswer(pkt, src, nil, new(querySeries))
		if !ok {
			return
		}
		got := new(dns.Msg)
		if err := got.Unpack(fast); err != nil {
			t.Fatalf("the fast answer does not parse: %v", err)
		}
		r := new(dns.Msg)
		if err := r.Unpack(pkt); err != nil {
			t.Fatalf("fast path answered a query miekg/dns rejects: %v", err)
		}
		w := &recorder{remote: &net.UDPAddr{IP: src.AsSlice(), Port: 5353}}
		s.ServeDNS(w, r)
		want := w.msg
		if got.MsgHdr != want.MsgHdr {
			t.Errorf("header\n got %+v\nwant %+v", got.MsgHdr, want.MsgHdr)
		}
		if fmt.Sprint(got.Question, got.Answer, got.Ns, got.Extra) != fmt.Sprint(want.Question, want.Answer, want.Ns, want.Extra) {
			t.Errorf("sections\n got %v\nwant %v", got, want)
		}
	})
}
