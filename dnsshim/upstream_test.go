package dnsshim

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// scriptedUpstream is a resolver on 127.0.0.1 that answers each query with
// the packets reply gives, and records where queries came from.
type scriptedUpstream struct {
	addr string
	mu   sync.Mutex
	seen []seenQuery
}

type seenQuery struct {
	port int
	id   uint16
}

func newScriptedUpstream(t *testing.T, reply func(q *dns.Msg) [][]byte) *scriptedUpstream {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	u := &scriptedUpstream{addr: pc.LocalAddr().String()}
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil {
				continue
			}
			u.mu.Lock()
			u.seen = append(u.seen, seenQuery{from.(*net.UDPAddr).Port, q.Id})
			u.mu.Unlock()
			go func() {
				for _, p := range reply(q) {
					pc.WriteTo(p, from)
				}
			}()
		}
	}()
	return u
}

func (u *scriptedUpstream) queries() []seenQuery {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seenQuery(nil), u.seen...)
}

// answerA answers q with n A records, the first 192.0.2.1.
func answerA(q *dns.Msg, n int) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(q)
	for i := range n {
		m.Answer = append(m.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
			A:   net.IPv4(192, 0, 2, byte(1+i%250)),
		})
	}
	return m
}

func pack(m *dns.Msg) []byte {
	b, err := m.Pack()
	if err != nil {
		panic(err)
	}
	return b
}

func askUpstream(u *udpUpstream, name string, edns uint16) (*dns.Msg, error) {
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeA)
	q.Id = 4242
	if edns > 0 {
		q.SetEdns0(edns, false)
	}
	return u.exchange(q, time.Now().Add(500*time.Millisecond))
}

func TestForwardedQueriesShareASocketUntilItIsRetired(t *testing.T) {
	up := newScriptedUpstream(t, func(q *dns.Msg) [][]byte { return [][]byte{pack(answerA(q, 1))} })
	u := newUDPUpstream(up.addr)
	defer u.close()
	// Every other draw is the sandbox's own ID: the exchange must draw again.
	u.draw = drawsTheSandboxsIDFirst(u.draw, 4242)
	for i := range sockUses + 1 {
		m, err := askUpstream(u, "example.test.", 0)
		if err != nil {
			t.Fatalf("query %d: %v", i, err)
		}
		if m.Id != 4242 {
			t.Fatalf("query %d: answer ID %d, want the query's 4242", i, m.Id)
		}
	}
	seen := up.queries()
	ids := map[uint16]bool{}
	for i, q := range seen {
		ids[q.id] = true
		if i < sockUses && q.port != seen[0].port {
			t.Fatalf("query %d came from port %d, the first from %d: the socket was not kept", i, q.port, seen[0].port)
		}
	}
	if last := seen[sockUses]; last.port == seen[0].port {
		t.Errorf("query %d still came from port %d: the socket was not retired after %d", sockUses, last.port, sockUses)
	}
	if ids[4242] || len(ids) < sockUses/2 {
		t.Errorf("the upstream saw IDs %v: want random ones, never the sandbox's", ids)
	}
}

// drawsTheSandboxsIDFirst scripts an upstream's ID draws: the first draw of
// each pair is id (the sandbox's), the second comes from draw. An exchange
// that took its first draw would go out under the sandbox's ID, every time.
func drawsTheSandboxsIDFirst(draw func() uint16, id uint16) func() uint16 {
	var n int
	return func() uint16 {
		n++
		if n%2 == 1 {
			return id
		}
		return draw()
	}
}

func TestAForwardedQueryTakesOnlyItsOwnAnswer(t *testing.T) {
	tests := []struct {
		name  string
		reply func(q *dns.Msg) [][]byte
		ok    bool
		// kept: the socket serves the next query (else it was closed).
		kept bool
	}{
		{
			name: "an answer with another ID is skipped, and the query's taken",
			reply: func(q *dns.Msg) [][]byte {
				other := answerA(q, 1)
				other.Id++
				return [][]byte{pack(other), pack(answerA(q, 1))}
			},
			ok: true, kept: true,
		},
		{
			name: "the query echoed back (no answer bit) is skipped",
			reply: func(q *dns.Msg) [][]byte {
				return [][]byte{pack(q), pack(answerA(q, 1))}
			},
			ok: true, kept: true,
		},
		{
			name: "a runt datagram is skipped",
			reply: func(q *dns.Msg) [][]byte {
				return [][]byte{{1, 2, 3}, pack(answerA(q, 1))}
			},
			ok: true, kept: true,
		},
		{
			name: "an answer to another question is skipped",
			reply: func(q *dns.Msg) [][]byte {
				m := answerA(q, 1)
				m.Question[0].Name = "elsewhere.test."
				return [][]byte{pack(m), pack(answerA(q, 1))}
			},
			ok: true, kept: true,
		},
		{
			name: "an answer without the question, but with records, is skipped",
			reply: func(q *dns.Msg) [][]byte {
				m := answerA(q, 1)
				m.Question = nil
				return [][]byte{pack(m), pack(answerA(q, 1))}
			},
			ok: true, kept: true,
		},
		{
			name: "an answer that does not unpack is skipped",
			reply: func(q *dns.Msg) [][]byte {
				b := pack(answerA(q, 1))
				return [][]byte{b[:len(b)-3], pack(answerA(q, 1))}
			},
			ok: true, kept: true,
		},
		{
			name: "only an answer to another question: the exchange times out",
			reply: func(q *dns.Msg) [][]byte {
				m := answerA(q, 1)
				m.Question[0].Name = "elsewhere.test."
				return [][]byte{pack(m)}
			},
		},
		{
			name:  "an upstream that never answers times out",
			reply: func(q *dns.Msg) [][]byte { return nil },
		},
		{
			name: "an error answer without the question is the answer",
			reply: func(q *dns.Msg) [][]byte {
				m := new(dns.Msg)
				m.SetRcode(q, dns.RcodeRefused)
				m.Question = nil
				return [][]byte{pack(m)}
			},
			ok: true, kept: true,
		},
		{
			name:  "an answer larger than the query allows fails the exchange",
			reply: func(q *dns.Msg) [][]byte { return [][]byte{pack(answerA(q, 400))} },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var answered atomic.Bool
			up := newScriptedUpstream(t, func(q *dns.Msg) [][]byte {
				if !answered.Swap(true) {
					return tt.reply(q)
				}
				return [][]byte{pack(answerA(q, 1))}
			})
			u := newUDPUpstream(up.addr)
			defer u.close()
			m, err := askUpstream(u, "example.test.", 0)
			if ok := err == nil; ok != tt.ok {
				t.Fatalf("exchange: %v (answer %v), want ok=%v", err, m, tt.ok)
			}
			if tt.ok && m.Rcode == dns.RcodeSuccess && (len(m.Answer) != 1 || m.Question[0].Name != "example.test.") {
				t.Fatalf("answer %v", m)
			}
			if _, err := askUpstream(u, "example.test.", 0); err != nil {
				t.Fatalf("the next query: %v", err)
			}
			seen := up.queries()
			if kept := seen[0].port == seen[1].port; kept != tt.kept {
				t.Errorf("socket kept for the next query: %v, want %v", kept, tt.kept)
			}
		})
	}
}

func TestConcurrentForwardedQueriesEachGetTheirOwnAnswer(t *testing.T) {
	up := newScriptedUpstream(t, func(q *dns.Msg) [][]byte {
		var i int
		fmt.Sscanf(q.Question[0].Name, "n%d.test.", &i)
		time.Sleep(time.Duration(i%5) * time.Millisecond) // out of order
		return [][]byte{pack(answerA(q, 1+i%7))}
	})
	u := newUDPUpstream(up.addr)
	defer u.close()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Go(func() {
			name := fmt.Sprintf("n%d.test.", i)
			m, err := askUpstream(u, name, 0)
			switch {
			case err != nil:
				errs <- fmt.Errorf("%s: %w", name, err)
			case m.Question[0].Name != name || len(m.Answer) != 1+i%7:
				errs <- fmt.Errorf("%s: got the answer %v", name, m)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(u.idle); n > maxIdleSocks {
		t.Errorf("%d idle sockets kept, at most %d", n, maxIdleSocks)
	}
}

func TestAnAnswerAsLargeAsTheQueryAdvertisesComesWhole(t *testing.T) {
	tests := []struct {
		name    string
		edns    uint16
		records int
	}{
		{"no EDNS: an answer of 512 bytes at most", 0, 20},
		{"EDNS 4096: an answer of about 1.6 KB", 4096, 100},
		{"EDNS 16384: an answer larger than the pooled buffer", 16384, 600},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newScriptedUpstream(t, func(q *dns.Msg) [][]byte { return [][]byte{pack(answerA(q, tt.records))} })
			u := newUDPUpstream(up.addr)
			defer u.close()
			m, err := askUpstream(u, "big.test.", tt.edns)
			if err != nil {
				t.Fatal(err)
			}
			if len(m.Answer) != tt.records {
				t.Errorf("%d records, want %d", len(m.Answer), tt.records)
			}
		})
	}
}

func TestTheShimGivesTheSandboxItsOwnIDBack(t *testing.T) {
	up := newScriptedUpstream(t, func(q *dns.Msg) [][]byte { return [][]byte{pack(answerA(q, 1))} })
	s, _ := newShim(t, up.addr)
	defer s.Close()
	s.udp[0].draw = drawsTheSandboxsIDFirst(s.udp[0].draw, 777)
	r := new(dns.Msg)
	r.SetQuestion("example.test.", dns.TypeA)
	r.Id = 777
	w := &recorder{remote: sandboxAddr}
	s.ServeDNS(w, r)
	if w.msg == nil || w.msg.Rcode != dns.RcodeSuccess || w.msg.Id != 777 || len(w.msg.Answer) != 1 {
		t.Fatalf("answer %v, want NOERROR with one record and ID 777", w.msg)
	}
	if seen := up.queries(); len(seen) != 1 || seen[0].id == 777 {
		t.Errorf("the upstream saw %v: want one query, not under the sandbox's ID", seen)
	}
}

func TestUpstreamExchangesAreCountedByResult(t *testing.T) {
	tests := []struct {
		name     string
		upstream func(t *testing.T) string
		result   string
	}{
		{"an answer", func(t *testing.T) string {
			return newScriptedUpstream(t, func(q *dns.Msg) [][]byte { return [][]byte{pack(answerA(q, 1))} }).addr
		}, "ok"},
		{"no answer within the timeout", deadUpstream, "timeout"},
		{"a port nothing listens on", func(*testing.T) string { return "127.0.0.1:1" }, "refused"},
		{"only an answer to another question", func(t *testing.T) string {
			return newScriptedUpstream(t, func(q *dns.Msg) [][]byte {
				m := answerA(q, 1)
				m.Question[0].Name = "elsewhere.test."
				return [][]byte{pack(m)}
			}).addr
		}, "timeout"},
		{"an answer larger than the query allows", func(t *testing.T) string {
			return newScriptedUpstream(t, func(q *dns.Msg) [][]byte { return [][]byte{pack(answerA(q, 400))} }).addr
		}, "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newShim(t, tt.upstream(t))
			defer s.Close()
			query(s, sandboxAddr, "example.test.", dns.TypeA)
			if got := testutil.ToFloat64(s.cfg.Metrics.upstreams.WithLabelValues(tt.result)); got != 1 {
				t.Errorf("upstream requests with result %q: %v, want 1", tt.result, got)
			}
		})
	}
}

func TestKeptSocketsCloseWhenOldOrWhenTheShimCloses(t *testing.T) {
	up := newScriptedUpstream(t, func(q *dns.Msg) [][]byte { return [][]byte{pack(answerA(q, 1))} })
	u := newUDPUpstream(up.addr)
	if _, err := askUpstream(u, "example.test.", 0); err != nil {
		t.Fatal(err)
	}
	u.mu.Lock()
	if len(u.idle) != 1 || u.janitor == nil {
		t.Fatalf("%d idle sockets, sweeping %v: want one, and a sweep due", len(u.idle), u.janitor != nil)
	}
	old := u.idle[0]
	old.born = time.Now().Add(-sockLife) // as if no query had come since
	u.mu.Unlock()
	u.sweep()
	u.mu.Lock()
	idle, sweeping := len(u.idle), u.janitor != nil
	u.mu.Unlock()
	if idle != 0 || sweeping {
		t.Errorf("after the sweep: %d idle sockets, sweeping %v: want none", idle, sweeping)
	}
	if _, err := old.c.Write([]byte{0}); err == nil {
		t.Error("the old socket is still open")
	}

	// An exchange under way when the shim closes: its socket is closed as
	// it comes back, not kept.
	s, err := u.get()
	if err != nil {
		t.Fatal(err)
	}
	u.close()
	u.put(s, true)
	if len(u.idle) != 0 {
		t.Errorf("%d sockets kept after close", len(u.idle))
	}
	if _, err := s.c.Write([]byte{0}); err == nil {
		t.Error("a socket that came back after close is still open")
	}
}
