package dnsshim

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func packQuery(b *testing.B, name string) []byte {
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeA)
	pkt, err := q.Pack()
	if err != nil {
		b.Fatal(err)
	}
	return pkt
}

// BenchmarkDNSAnswer measures answering a handler name: the fast path's
// answer from the packet, and the full path's (miekg's unpacking, ServeDNS
// and packing) for comparison, without sockets.
func BenchmarkDNSAnswer(b *testing.B) {
	s := loopShim("127.0.0.1:1")
	pkt := packQuery(b, "my.kv.")
	src := netip.MustParseAddr("10.213.0.2")
	b.Run("the fast path", func(b *testing.B) {
		out := make([]byte, 0, 512)
		qs := new(querySeries)
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := s.fastAnswer(pkt, src, out[:0], qs); !ok {
				b.Fatal("not answered on the fast path")
			}
		}
	})
	b.Run("the full path", func(b *testing.B) {
		w := &recorder{remote: &net.UDPAddr{IP: src.AsSlice(), Port: 40000}}
		b.ReportAllocs()
		for b.Loop() {
			r := new(dns.Msg)
			if err := r.Unpack(pkt); err != nil {
				b.Fatal(err)
			}
			s.ServeDNS(w, r)
			if _, err := w.msg.Pack(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDNSOverLoopback asks the shim's UDP server over loopback, from
// parallel clients, one query at a time each: a handler name, and a
// forwarded name with an upstream of the test's on loopback.
func BenchmarkDNSOverLoopback(b *testing.B) {
	srv, err := Listen("127.0.0.1:0", loopShim(fakeUpstream(b)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Shutdown(b.Context()) })
	for _, tt := range []struct{ name, qname string }{
		{"a handler name", "my.kv."},
		{"a forwarded name", "example.test."},
	} {
		b.Run(tt.name, func(b *testing.B) {
			pkt := packQuery(b, tt.qname)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				c, err := net.Dial("udp", srv.UDPAddr().String())
				if err != nil {
					b.Error(err)
					return
				}
				defer c.Close()
				buf := make([]byte, 512)
				for pb.Next() {
					c.Write(pkt)
					c.SetReadDeadline(time.Now().Add(2 * time.Second))
					n, err := c.Read(buf)
					if err != nil {
						b.Error(err)
						return
					}
					if n < 12 || buf[3]&0xF != dns.RcodeSuccess {
						b.Errorf("answer %x", buf[:n])
						return
					}
				}
			})
		})
	}
}
