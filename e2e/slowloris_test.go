package e2e

import (
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestASandboxHoldingManyIdleConnectionsDoesNotStarveAnother(t *testing.T) {
	const limit = 50
	e := NewEnv(t, Options{Listen: "  max_connections_per_sandbox: 50"})
	attacker, victim := e.Create("attacker"), e.Create("victim")
	e.MustIn(victim, "curl", "-sS", "-f", "-X", "PUT", "--data", "ok", "http://my.kv/k")

	// The attacker opens 1000 connections and sends nothing (or a trickle).
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	reset := 0
	err := inNetns(attacker.NetnsPath, func() error {
		for i := 0; i < 1000; i++ {
			c, err := net.DialTimeout("tcp4", virtualKV+":80", 2*time.Second)
			if errors.Is(err, syscall.ECONNRESET) {
				reset++ // reset before the dial even returned
				continue
			}
			if err != nil {
				return err
			}
			conns = append(conns, c)
			if i%2 == 0 {
				c.Write([]byte("GET /k HTTP/1.1\r\nHo")) // a trickle, never finished
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Those over the cap were reset at once.
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) && !errors.Is(err, os.ErrDeadlineExceeded) {
			reset++
		}
	}
	if reset < 1000-limit {
		t.Errorf("%d of 1000 connections were reset, want at least %d (cap %d)", reset, 1000-limit, limit)
	}
	// The victim is served as usual meanwhile.
	var worst time.Duration
	for i := 0; i < 20; i++ {
		start := time.Now()
		if got := e.MustIn(victim, "curl", "-sS", "-m", "5", "http://my.kv/k"); got != "ok" {
			t.Fatalf("victim got %q", got)
		}
		worst = max(worst, time.Since(start))
	}
	t.Logf("1000 connections from one sandbox, %d reset at once; the other sandbox's slowest of 20 requests: %v", reset, worst.Round(time.Millisecond))
	if worst > 2*time.Second {
		t.Errorf("the victim waited %v", worst)
	}
	if m := e.Scrape(); !strings.Contains(m, "interceptd_router_connections_rejected_total") {
		t.Error("rejections are not counted")
	}
}
