package dnsshim

import (
	"context"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/interceptd/interceptd/metrics"
	"github.com/interceptd/interceptd/policy"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"
)

// loopShim answers my.kv itself and forwards the rest to up, with metrics,
// for loopback sources and 10.213.0.2 (the sandbox "loop"); with, on top,
// whatever tweak changes.
func loopShim(up string, tweak ...func(*Config)) *Shim {
	caller := policy.Caller{Sandbox: "loop", Policy: policy.MustCompile(policy.Policy{Internet: true})}
	cfg := Config{
		Names:     map[string]netip.Addr{"my.kv": netip.MustParseAddr("198.18.213.1")},
		Upstreams: []string{up}, Timeout: time.Second, TTL: 30,
		Identify: func(a netip.Addr) (policy.Caller, bool) {
			return caller, a.IsLoopback() || a == netip.MustParseAddr("10.213.0.2")
		},
		Metrics: NewMetrics(prometheus.NewRegistry(), metrics.NewSandboxLabels(10)),
	}
	for _, f := range tweak {
		f(&cfg)
	}
	return New(cfg)
}

func TestTheUDPServerAnswersOverARealSocket(t *testing.T) {
	s := loopShim(fakeUpstream(t))
	srv, err := Listen("127.0.0.1:0", s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(t.Context()) })
	addr := srv.UDPAddr().String()
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}

	tests := []struct {
		name   string
		qname  string
		qtype  uint16
		rcode  int
		answer string
	}{
		{"a handler name is answered from the fast path", "My.KV.", dns.TypeA, dns.RcodeSuccess, "198.18.213.1"},
		{"AAAA for a handler name is empty NOERROR", "my.kv.", dns.TypeAAAA, dns.RcodeSuccess, ""},
		{"another name is forwarded on the full path", "example.test.", dns.TypeA, dns.RcodeSuccess, "192.0.2.10"},
		{"an unknown name gets the upstream's NXDOMAIN", "nope.test.", dns.TypeA, dns.RcodeNameError, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := new(dns.Msg)
			q.SetQuestion(tt.qname, tt.qtype)
			resp, _, err := c.Exchange(q, addr)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Id != q.Id || resp.Rcode != tt.rcode || resp.Question[0].Name != tt.qname {
				t.Fatalf("got %v", resp)
			}
			got := ""
			if len(resp.Answer) > 0 {
				got = resp.Answer[0].(*dns.A).A.String()
			}
			if got != tt.answer {
				t.Errorf("answer %q, want %q", got, tt.answer)
			}
		})
	}

	t.Run("a packet that is not a query gets FORMERR or nothing, and the server goes on", func(t *testing.T) {
		conn, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Write([]byte{0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xff}) // a cut question
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		b := make([]byte, 512)
		n, err := conn.Read(b)
		if err != nil {
			t.Fatal(err)
		}
		m := new(dns.Msg)
		if err := m.Unpack(b[:n]); err != nil || m.Id != 0xabcd || m.Rcode != dns.RcodeFormatError {
			t.Fatalf("got %v, %v", m, err)
		}
		q := new(dns.Msg)
		q.SetQuestion("my.kv.", dns.TypeA)
		if _, _, err := c.Exchange(q, addr); err != nil {
			t.Fatal(err)
		}
	})
}

func TestOneSourceCannotHoldEverySlowPathSlot(t *testing.T) {
	u := &udpServer{slow: make(chan struct{}, maxSlow), slowPer: map[netip.Addr]int{}}
	flood, other := netip.MustParseAddr("10.213.0.2"), netip.MustParseAddr("10.213.0.6")
	n := 0
	for u.takeSlot(flood) {
		n++
	}
	if n != maxSlowPerSource {
		t.Fatalf("one source took %d slots, want %d", n, maxSlowPerSource)
	}
	if !u.takeSlot(other) {
		t.Fatal("another source found no slot")
	}
	u.releaseSlot(flood)
	if !u.takeSlot(flood) {
		t.Fatal("a released slot was not free again")
	}
}

func TestTheSocketBufferIsDeepEvenWhereTheHostCapsIt(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SO_RCVBUFFORCE needs CAP_NET_ADMIN")
	}
	s, err := Listen("127.0.0.1:0", dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	rc, err := s.udp.conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	rc.Control(func(fd uintptr) { got, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) })
	if err != nil || got < 4<<20 {
		t.Fatalf("receive buffer %d bytes (%v), want at least 4 MiB", got, err)
	}
}

func TestAShimShutDownRightAfterItStartedStops(t *testing.T) {
	for range 50 {
		s, err := Listen("127.0.0.1:0", dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {}))
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Shutdown(context.Background()) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("shutdown: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Shutdown right after Listen still waits after 5 s")
		}
	}
}

func TestTheFullPathReusesItsWorkersAndNeverQueuesBehindASlowQuery(t *testing.T) {
	release := make(chan struct{})
	s, err := Listen("127.0.0.1:0", dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		if r.Question[0].Name == "slow.test." {
			<-release
		}
		m := new(dns.Msg)
		m.SetReply(r)
		w.WriteMsg(m)
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	addr := s.UDPAddr().String()
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	ask := func(name string) error {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		_, _, err := c.Exchange(q, addr)
		return err
	}

	slow := make(chan error, 1)
	go func() { slow <- ask("slow.test.") }()
	for i := range 50 {
		if err := ask("fast.test."); err != nil {
			t.Fatalf("query %d behind a slow one: %v", i, err)
		}
	}
	// One worker waits on the slow query; the fast ones were served in
	// turn by one or two more (the next query can come before the worker
	// that answered the last is back waiting), not by fifty.
	if n := workers(); n > 4 {
		t.Errorf("%d workers after 50 queries one after the other, want at most 4", n)
	}
	close(release)
	if err := <-slow; err != nil {
		t.Fatalf("the slow query: %v", err)
	}
	s.Shutdown(context.Background())
	deadline := time.Now().Add(2 * time.Second)
	for workers() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := workers(); n > 0 {
		t.Errorf("%d workers stayed after shutdown", n)
	}
}

// workers counts the goroutines running udpServer.worker.
func workers() int {
	buf := make([]byte, 1<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "(*udpServer).worker(")
}

// In the daemon a kernel limit of the same rate drops most of a flood
// before it reaches the shim, so whether the shim itself ever refuses there
// is down to timing; here nothing stands in front of it.
func TestASandboxOverItsQueryRateIsRefusedOnBothPathsAndAnotherIsNot(t *testing.T) {
	const rate = 50 // burst 100
	flooder, quiet := netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")
	s := loopShim(fakeUpstream(t), func(c *Config) {
		c.MaxQPSPerSandbox = rate
		open := policy.MustCompile(policy.Policy{Internet: true})
		c.Identify = func(a netip.Addr) (policy.Caller, bool) {
			sandbox := "quiet"
			if a == flooder {
				sandbox = "flooder"
			}
			return policy.Caller{Sandbox: sandbox, Policy: open}, a == flooder || a == quiet
		}
	})
	srv, err := Listen("127.0.0.1:0", s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(t.Context()) })
	ask := func(from netip.Addr, name string) int {
		t.Helper()
		c := &dns.Client{Net: "udp", Timeout: 2 * time.Second, Dialer: &net.Dialer{LocalAddr: net.UDPAddrFromAddrPort(netip.AddrPortFrom(from, 0))}}
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		r, _, err := c.Exchange(q, srv.UDPAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		return r.Rcode
	}

	tests := []struct {
		name string
		path string // which names the flood asks for
	}{
		{"a handler name, on the fast path", "my.kv."},
		{"a forwarded name, on the full path", "example.test."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.Forget("flooder") // a full bucket for each case
			start := time.Now()
			answered, refused := 0, 0
			for range 4 * rate {
				if ask(flooder, tt.path) == dns.RcodeRefused {
					refused++
				} else {
					answered++
				}
			}
			// The burst, what the rate earned meanwhile, and one for rounding.
			if most := 2*rate + int(time.Since(start).Seconds()*rate) + 1; answered > most || refused == 0 {
				t.Errorf("%d answered and %d refused of %d; want at most %d answered", answered, refused, 4*rate, most)
			}
			if rc := ask(quiet, tt.path); rc != dns.RcodeSuccess {
				t.Errorf("the quiet sandbox got %s", dns.RcodeToString[rc])
			}
		})
	}
	if got := testutil.ToFloat64(s.cfg.Metrics.queries.WithLabelValues(AnswerLimited, "REFUSED", "flooder")); got == 0 {
		t.Error("refused queries are not counted as limited")
	}
}
