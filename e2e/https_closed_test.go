package e2e

import (
	"crypto/tls"

	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// tlsCounter serves TLS on addr inside the namespace at nsPath and counts
// the connections it accepts: a refused connection must never arrive.
func (e *Env) tlsCounter(t *testing.T, nsPath, addr string, cert tls.Certificate) *atomic.Int32 {
	t.Helper()
	n := &atomic.Int32{}
	ln := e.ListenIn(nsPath, addr)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			go func() {
				defer c.Close()
				tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
				if tc.Handshake() == nil {
					tc.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nreached"))
				}
			}()
		}
	}()
	return n
}

// On port 443, as on port 80, an allowed name opens no closed destination:
// an answer (or a --resolve) pointing it at the metadata address or the
// LAN, the host's own address, its gateway on the sandbox's link, or
// another sandbox is refused before anything is dialled, with the SNI or
// without one; only an explicit CIDR entry opens the LAN.
func TestOnPort443AnAllowedNameOpensNoClosedDestinationOrOtherSandbox(t *testing.T) {
	e := NewEnv(t, Options{})
	e.withLAN()
	cert, _ := testCA(t, "lan.good.test", "x.good.test")
	g := e.CreateWith("g", "--allow", "*.good.test")
	open := e.Create("open")
	lan := e.CreateWith("lan", "--allow", "*.good.test", "--allow", "192.168.77.0/24")
	peer := e.Create("peer")

	lanHits := e.tlsCounter(t, "/run/netns/"+e.UpNS, lanIP+":443", cert)
	hostHits := e.tlsCounter(t, "/run/netns/"+e.HostNS, hostUpIP+":443", cert)
	peerHits := e.tlsCounter(t, peer.NetnsPath, peer.Addr+":443", cert)

	tests := []struct {
		name   string
		sb     Sandbox
		dest   string
		args   []string
		reason string
	}{
		{"an allowed name at the metadata address", g, "169.254.169.254", []string{"--resolve", "meta.good.test:443:169.254.169.254", "https://meta.good.test/"}, "protected_destination"},
		{"an allowed name rebound to the LAN", g, lanIP, []string{"--resolve", "lan.good.test:443:" + lanIP, "https://lan.good.test/"}, "private_destination"},
		{"the LAN with internet on and no SNI", open, lanIP, []string{"https://" + lanIP + "/"}, "private_destination"},
		{"an allowed name at the host's own address", g, hostUpIP, []string{"--resolve", "x.good.test:443:" + hostUpIP, "https://x.good.test/"}, "protected_destination"},
		{"the host's own address with internet on and no SNI", open, hostUpIP, []string{"https://" + hostUpIP + "/"}, "protected_destination"},
		{"the sandbox's gateway", open, open.Gateway, []string{"https://" + open.Gateway + "/"}, "protected_destination"},
		{"another sandbox under an allowed name", g, peer.Addr, []string{"--resolve", "x.good.test:443:" + peer.Addr, "https://x.good.test/"}, "protected_destination"},
		{"another sandbox with internet on and no SNI", open, peer.Addr, []string{"https://" + peer.Addr + "/"}, "protected_destination"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			refusals := func() int {
				n := 0
				for _, l := range strings.Split(e.Log(), "\n") {
					if strings.Contains(l, "msg=tls ") && strings.Contains(l, "sandbox="+tt.sb.Name+" ") &&
						strings.Contains(l, "dest="+tt.dest+":443 ") && strings.Contains(l, "reason="+tt.reason+" outcome=refused") {
						n++
					}
				}
				return n
			}
			before := refusals()
			r := e.curlTimed(tt.sb, append([]string{"-k", "-m", "5"}, tt.args...)...)
			if r.Exit != 35 && r.Exit != 56 || r.Took > atOnce || strings.Contains(r.Out, "reached") {
				t.Errorf("curl exit %d after %v, want a reset at once:\n%s", r.Exit, r.Took, r.Out)
			}
			deadline := time.Now().Add(3 * time.Second)
			for refusals() == before && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if refusals() != before+1 {
				t.Errorf("no new refusal record for %s with reason %s:\n%s", tt.dest, tt.reason, e.Log())
			}
		})
	}
	if n, h, p := lanHits.Load(), hostHits.Load(), peerHits.Load(); n+h+p != 0 {
		t.Errorf("refused connections arrived: LAN %d, host %d, other sandbox %d", n, h, p)
	}
	// The explicit entry opens the LAN, by name and by address: the
	// listener was there all along.
	for _, args := range [][]string{{"--resolve", "lan.good.test:443:" + lanIP, "https://lan.good.test/"}, {"https://" + lanIP + "/"}} {
		if out, code := e.In(lan, append([]string{"curl", "-sS", "-k", "-m", "5"}, args...)...); code != 0 || out != "reached" {
			t.Errorf("the LAN through its CIDR entry (%v): exit %d, %q", args, code, out)
		}
	}
	if n := lanHits.Load(); n != 2 {
		t.Errorf("the LAN listener saw %d connections, want 2", n)
	}
}
