package dnsshim

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/interceptd/interceptd/metrics"
	"github.com/interceptd/interceptd/policy"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// recorder is a dns.ResponseWriter that keeps the last message written,
// and counts them all.
type recorder struct {
	remote net.Addr
	msg    *dns.Msg
	writes int
}

func (r *recorder) LocalAddr() net.Addr       { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (r *recorder) RemoteAddr() net.Addr      { return r.remote }
func (r *recorder) WriteMsg(m *dns.Msg) error { r.msg = m; r.writes++; return nil }
func (r *recorder) Write(b []byte) (int, error) {
	r.msg = new(dns.Msg)
	r.writes++
	return len(b), r.msg.Unpack(b)
}
func (r *recorder) Close() error        { return nil }
func (r *recorder) TsigStatus() error   { return nil }
func (r *recorder) TsigTimersOnly(bool) {}
func (r *recorder) Hijack()             {}
func (r *recorder) Network() string     { return "udp" }

var sandboxAddr = &net.UDPAddr{IP: net.IPv4(10, 213, 0, 2), Port: 40000}

// fakeUpstream serves example.test. A 192.0.2.10 on 127.0.0.1:0.
func fakeUpstream(t testing.TB) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if r.Question[0].Name == "example.test." && r.Question[0].Qtype == dns.TypeA {
			rr, _ := dns.NewRR("example.test. 60 IN A 192.0.2.10")
			m.Answer = append(m.Answer, rr)
		} else {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// deadUpstream returns an address where nothing answers: a bound UDP socket
// that never reads (the kernel queues what comes), so queries time out
// rather than being refused.
func deadUpstream(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

func newShim(t testing.TB, upstreams ...string) (*Shim, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	s := New(Config{
		Names:     map[string]netip.Addr{"my.kv": netip.MustParseAddr("198.18.213.1")},
		Upstreams: upstreams, Timeout: 300 * time.Millisecond, TTL: 30,
		Identify: func(a netip.Addr) (policy.Caller, bool) {
			return policy.Caller{Sandbox: "web1", Policy: policy.MustCompile(policy.Policy{Internet: true, DeniedHosts: []string{"*.denied.test"}})}, a == netip.MustParseAddr("10.213.0.2")
		},
		Metrics: NewMetrics(reg, metrics.NewSandboxLabels(10)),
	})
	return s, reg
}

func query(s *Shim, from net.Addr, name string, qtype uint16) *dns.Msg {
	r := new(dns.Msg)
	r.SetQuestion(name, qtype)
	w := &recorder{remote: from}
	s.ServeDNS(w, r)
	return w.msg
}

func TestShimAnswers(t *testing.T) {
	up := fakeUpstream(t)
	s, reg := newShim(t, up)
	tests := []struct {
		name    string
		from    net.Addr
		qname   string
		qtype   uint16
		rcode   int
		answers int
		answer  string
	}{
		{"a handler name gets its virtual address", sandboxAddr, "my.kv.", dns.TypeA, dns.RcodeSuccess, 1, "198.18.213.1"},
		{"a handler name matches in any case", sandboxAddr, "MY.Kv.", dns.TypeA, dns.RcodeSuccess, 1, "198.18.213.1"},
		{"AAAA for a handler name is an empty NOERROR", sandboxAddr, "my.kv.", dns.TypeAAAA, dns.RcodeSuccess, 0, ""},
		{"other names are forwarded upstream", sandboxAddr, "example.test.", dns.TypeA, dns.RcodeSuccess, 1, "192.0.2.10"},
		{"upstream NXDOMAIN comes back as it is", sandboxAddr, "nope.test.", dns.TypeA, dns.RcodeNameError, 0, ""},
		{"a name under a handler name is not the handler", sandboxAddr, "x.my.kv.", dns.TypeA, dns.RcodeNameError, 0, ""},
		{"a denied name is NXDOMAIN at once", sandboxAddr, "x.denied.test.", dns.TypeA, dns.RcodeNameError, 0, ""},
		{"a source that is not a sandbox is refused", &net.UDPAddr{IP: net.IPv4(192, 0, 2, 99), Port: 5}, "my.kv.", dns.TypeA, dns.RcodeRefused, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := query(s, tt.from, tt.qname, tt.qtype)
			if m == nil {
				t.Fatal("no response written")
			}
			if m.Rcode != tt.rcode || len(m.Answer) != tt.answers {
				t.Fatalf("rcode %s with %d answers, want %s with %d", dns.RcodeToString[m.Rcode], len(m.Answer), dns.RcodeToString[tt.rcode], tt.answers)
			}
			if tt.answer != "" && m.Answer[0].(*dns.A).A.String() != tt.answer {
				t.Errorf("answer %s, want %s", m.Answer[0], tt.answer)
			}
		})
	}
	if got := testutil.ToFloat64(s.cfg.Metrics.queries.WithLabelValues(AnswerHandler, "NOERROR", "web1")); got != 3 {
		t.Errorf("handler NOERROR count = %v, want 3", got)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n == 0 {
		t.Errorf("gather: %d %v", n, err)
	}
}

func TestAFailedUpstreamIsAServfailWithinTheTimeout(t *testing.T) {
	tests := []struct {
		name      string
		upstreams []string
		waits     bool // until the timeout (300ms), rather than failing at once
	}{
		{"an upstream that never answers", []string{deadUpstream(t)}, true},
		{"an upstream that refuses", []string{"127.0.0.1:1"}, false},
		{"no upstream at all", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newShim(t, tt.upstreams...)
			start := time.Now()
			m := query(s, sandboxAddr, "example.test.", dns.TypeA)
			d := time.Since(start)
			t.Logf("SERVFAIL after %v (timeout %v)", d, s.cfg.Timeout)
			if m.Rcode != dns.RcodeServerFailure {
				t.Fatalf("rcode %s, want SERVFAIL", dns.RcodeToString[m.Rcode])
			}
			// The lower bound shows the shim did wait for the silent
			// upstream (the clock starts before the shim's); the upper one
			// is generous (a busy machine): the point is that it is bounded.
			if tt.waits && d < s.cfg.Timeout*9/10 {
				t.Errorf("SERVFAIL after %v, before the timeout %v: the upstream was not waited for", d, s.cfg.Timeout)
			}
			if !tt.waits && d >= s.cfg.Timeout {
				t.Errorf("SERVFAIL after %v: the timeout %v was waited out, with nothing to wait for", d, s.cfg.Timeout)
			}
			if d > 5*time.Second {
				t.Errorf("took %v with a %v timeout", d, s.cfg.Timeout)
			}
		})
	}
}

func TestAMalformedQueryIsAFormatError(t *testing.T) {
	s, _ := newShim(t)
	r := new(dns.Msg)
	r.Id = 7
	w := &recorder{remote: sandboxAddr}
	s.ServeDNS(w, r) // no question
	if w.msg == nil || w.msg.Rcode != dns.RcodeFormatError {
		t.Fatalf("got %v, want FORMERR", w.msg)
	}
}

func TestDeniedNamesGetTheConfiguredRcode(t *testing.T) {
	up := newScriptedUpstream(t, func(q *dns.Msg) [][]byte {
		m := answerA(q, 1)
		if q.Question[0].Name == "meta.test." {
			m.Answer[0].(*dns.A).A = net.IPv4(169, 254, 169, 254)
		}
		return [][]byte{pack(m)}
	})
	shim := func(rcode int) *Shim {
		return New(Config{
			Names:     map[string]netip.Addr{"my.kv": netip.MustParseAddr("198.18.213.1")},
			Upstreams: []string{up.addr}, Timeout: time.Second, TTL: 30,
			DeniedRcode: rcode,
			Identify: func(a netip.Addr) (policy.Caller, bool) {
				return policy.Caller{Sandbox: "web1", Policy: policy.MustCompile(policy.Policy{Internet: true, DeniedHosts: []string{"*.denied.test", "my.kv"}})}, true
			},
			Verdicts: policy.Verdicts{Protected: func(a netip.Addr) string {
				if a.IsLinkLocalUnicast() {
					return "link-local"
				}
				return ""
			}},
			Logger: slog.New(slog.DiscardHandler),
		})
	}
	viaServeDNS := func(s *Shim, name string) int {
		return query(s, sandboxAddr, name, dns.TypeA).Rcode
	}
	viaFastPath := func(s *Shim, name string) int {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		out, ok := s.fastAnswer(pack(q), netip.MustParseAddr("10.213.0.2"), nil, new(querySeries))
		if !ok {
			t.Fatalf("the fast path did not answer %s", name)
		}
		m := new(dns.Msg)
		if err := m.Unpack(out); err != nil {
			t.Fatal(err)
		}
		return m.Rcode
	}
	paths := []struct {
		name string
		ask  func(*Shim, string) int
		q    string
	}{
		{"a denied name", viaServeDNS, "x.denied.test."},
		{"a denied handler name", viaServeDNS, "my.kv."},
		{"a denied handler name on the fast path", viaFastPath, "my.kv."},
		{"an answer left with no address once screened", viaServeDNS, "meta.test."},
	}
	for _, rc := range []struct {
		configured string
		rcode      int // Config.DeniedRcode
		want       int
	}{{"nothing", 0, dns.RcodeNameError}, {"NXDOMAIN", dns.RcodeNameError, dns.RcodeNameError}, {"REFUSED", dns.RcodeRefused, dns.RcodeRefused}} {
		s := shim(rc.rcode)
		defer s.Close()
		for _, p := range paths {
			t.Run(fmt.Sprintf("%s is %s when %s is configured", p.name, dns.RcodeToString[rc.want], rc.configured), func(t *testing.T) {
				if got := p.ask(s, p.q); got != rc.want {
					t.Errorf("rcode %s, want %s", dns.RcodeToString[got], dns.RcodeToString[rc.want])
				}
			})
		}
	}
	t.Run("an allowed name is answered whatever the configured rcode", func(t *testing.T) {
		s := shim(dns.RcodeRefused)
		defer s.Close()
		if got := viaServeDNS(s, "example.test."); got != dns.RcodeSuccess {
			t.Errorf("rcode %s, want NOERROR", dns.RcodeToString[got])
		}
	})
}
