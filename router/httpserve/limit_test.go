package httpserve

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestAConnectionOverASandboxsCapIsCountedAsRejected(t *testing.T) {
	inner, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics(prometheus.NewRegistry())
	ln := LimitPerSource(inner, 1, m)
	defer ln.Close()
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	for range 3 {
		c, err := net.DialTimeout("tcp4", inner.Addr().String(), time.Second)
		if errors.Is(err, syscall.ECONNRESET) {
			continue // reset before the dial returned: over the cap
		}
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	first := <-accepted
	defer first.Close()
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(m.rejected) != 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := testutil.ToFloat64(m.rejected); got != 2 {
		t.Errorf("interceptd_router_connections_rejected_total = %v, want 2", got)
	}
	if len(accepted) != 0 {
		t.Error("a connection over the cap was accepted")
	}
}
