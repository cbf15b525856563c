package dnsshim

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/interceptd/interceptd/metrics"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestASandboxAtItsTCPCapIsResetAndAnotherIsStillAnswered(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry(), metrics.NewSandboxLabels(10))
	srv, err := ListenConfig{MaxTCPConnsPerSandbox: 2, Metrics: m}.Listen("127.0.0.1:0", loopShim(fakeUpstream(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(t.Context()) })
	addr := srv.TCPAddr().String()
	dialFrom := func(src string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: time.Second}
		c, err := d.Dial("tcp4", addr)
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return c, err
	}
	// 127.0.0.1 holds two idle connections: its cap.
	for range 2 {
		if _, err := dialFrom("127.0.0.1"); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("a third from the same source is reset at once", func(t *testing.T) {
		c, err := dialFrom("127.0.0.1")
		if err == nil {
			c.SetReadDeadline(time.Now().Add(time.Second))
			_, err = c.Read(make([]byte, 1))
		}
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("got %v, want a reset", err)
		}
		if n := testutil.ToFloat64(m.rejected); n != 1 {
			t.Errorf("%v rejections counted, want 1", n)
		}
	})
	t.Run("another source's TCP lookup is answered meanwhile", func(t *testing.T) {
		c, err := dialFrom("127.0.0.2")
		if err != nil {
			t.Fatal(err)
		}
		q := new(dns.Msg)
		q.SetQuestion("my.kv.", dns.TypeA)
		resp, _, err := (&dns.Client{Net: "tcp", Timeout: 2 * time.Second}).ExchangeWithConn(q, &dns.Conn{Conn: c})
		if err != nil || len(resp.Answer) != 1 {
			t.Fatalf("got %v, %v; want the handler's address", resp, err)
		}
	})
	t.Run("UDP is not capped", func(t *testing.T) {
		for range 3 {
			q := new(dns.Msg)
			q.SetQuestion("my.kv.", dns.TypeA)
			if _, _, err := (&dns.Client{Net: "udp", Timeout: 2 * time.Second}).Exchange(q, srv.UDPAddr().String()); err != nil {
				t.Fatal(err)
			}
		}
	})
}
