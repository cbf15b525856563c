package dnsshim

import (
	"net"
	"testing"

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
		if w.msg == nil {
			t.Fatal("no response written")
		}
		if w.msg.Id != r.Id {
			t.Fatalf("response id %d for query id %d", w.msg.Id, r.Id)
		}
	})
}
