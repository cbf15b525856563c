package e2e

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// atOnce bounds what the docs call "at once" in these tests. Whether a flow
// was refused or left to time out is told by the client's answer (curl's
// exit 7, not 28; dig's "connection refused"), never by the clock alone:
// the time includes `ip netns exec` start-up on a shared, loaded machine, so
// it is logged and only bounded generously, well under every client's own
// timeout.
const atOnce = 3 * time.Second

// hostIface returns the host side of sb's link, found by its gateway
// address in the host namespace.
func (e *Env) hostIface(sb Sandbox) string {
	e.t.Helper()
	out := run(e.t, "ip", "-n", e.HostNS, "-o", "-4", "addr", "show", "to", sb.Gateway+"/32")
	f := strings.Fields(out)
	if len(f) < 2 {
		e.t.Fatalf("no host interface holds %s:\n%s", sb.Gateway, out)
	}
	name, _, _ := strings.Cut(f[1], "@")
	return name
}

// hostMAC returns the hardware address of a link in the host namespace.
func (e *Env) hostMAC(dev string) string {
	e.t.Helper()
	out := run(e.t, "ip", "-n", e.HostNS, "-o", "link", "show", "dev", dev)
	m := regexp.MustCompile(`link/ether ([0-9a-f:]{17})`).FindStringSubmatch(out)
	if m == nil {
		e.t.Fatalf("no MAC for %s:\n%s", dev, out)
	}
	return m[1]
}

// ruleCounter returns the packet counter of the one rule of table/chain, in
// the daemon's host namespace, whose listing contains match; the test fails
// if there is no such rule.
func (e *Env) ruleCounter(table, chain, match string) int64 {
	e.t.Helper()
	out := run(e.t, "ip", "netns", "exec", e.HostNS, "iptables", "-t", table, "-L", chain, "-v", "-x", "-n")
	var found []int64
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 2 && strings.Contains(l, match) {
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err == nil {
				found = append(found, n)
			}
		}
	}
	if len(found) != 1 {
		e.t.Fatalf("want one rule matching %q in %s/%s, found %d:\n%s", match, table, chain, len(found), out)
	}
	return found[0]
}

// series reads one series that must be in the metrics (a renamed or
// vanished series fails the test instead of reading 0).
func (e *Env) series(metrics, name string) float64 {
	e.t.Helper()
	v, ok := sample(metrics, name)
	if !ok {
		e.t.Fatalf("no %s in the metrics", name)
	}
	return v
}

// forge sends, from inside sb, udp DNS queries to a captured server and tcp
// connection attempts to a handler's address, all from src (an address the
// test has put on sb's eth0), and fails t if anything answers. Each attempt
// sends one SYN: the dial gives up before the first retransmission (1 s).
func (e *Env) forge(t *testing.T, sb Sandbox, src string, udp, tcp int) {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion("my.kv.", dns.TypeA)
	pkt, _ := q.Pack()
	err := inNetns(sb.NetnsPath, func() error {
		c, err := net.ListenPacket("udp4", src+":0")
		if err != nil {
			return err
		}
		defer c.Close()
		to := &net.UDPAddr{IP: net.ParseIP(nowhereIP), Port: 53}
		for range udp {
			if _, err := c.WriteTo(pkt, to); err != nil {
				return fmt.Errorf("sending a query from %s: %w", src, err)
			}
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		if n, from, err := c.ReadFrom(make([]byte, 512)); err == nil {
			return fmt.Errorf("a query forged from %s was answered by %v (%d bytes)", src, from, n)
		}
		for range tcp {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 300 * time.Millisecond}
			if c, err := d.Dial("tcp4", virtualKV+":80"); err == nil {
				c.Close()
				return fmt.Errorf("a connection forged from %s was accepted", src)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The forged packets really leave the forging sandbox and reach the host
// (a static neighbour entry for the gateway: without it the sandbox's ARP
// request, sent from the forged address, fails the host's rp_filter and is
// never answered, so nothing would leave), where the anti-spoofing rule
// counts and drops every one of them, before the DNS shim or the router
// could see, count or answer them.
func TestAForgedSourceGetsNoAnswer(t *testing.T) {
	e := NewEnv(t, Options{})
	a, b := e.Create("victim-a"), e.Create("attacker-b")
	e.MustIn(b, "ip", "neigh", "replace", b.Gateway, "lladdr", e.hostMAC(e.hostIface(b)), "dev", "eth0", "nud", "permanent")
	const udp, tcp = 20, 3
	forged := []struct{ what, addr string }{
		{"another sandbox's address", a.Addr},
		{"a host address (the other sandbox's gateway)", a.Gateway},
		{"the upstream resolver's address", upstreamIP},
		{"an address nobody has", "192.0.2.200"},
	}
	m := e.Scrape()
	dropsBefore := e.ruleCounter("raw", "INTERCEPTD-ANTISPOOF", "anti-spoofing")
	queriesBefore := dnsQueries(m)
	connsBefore := e.series(m, "interceptd_router_connections_total")
	for _, f := range forged {
		t.Run(f.what, func(t *testing.T) {
			before := e.ruleCounter("raw", "INTERCEPTD-ANTISPOOF", "anti-spoofing")
			e.MustIn(b, "ip", "addr", "add", f.addr+"/32", "dev", "eth0")
			defer e.MustIn(b, "ip", "addr", "del", f.addr+"/32", "dev", "eth0")
			e.forge(t, b, f.addr, udp, tcp)
			dropped := e.ruleCounter("raw", "INTERCEPTD-ANTISPOOF", "anti-spoofing") - before
			t.Logf("from %s: %d packets sent, the anti-spoofing rule counted %d", f.addr, udp+tcp, dropped)
			if dropped < udp+tcp {
				t.Errorf("%d packets forged from %s, the anti-spoofing rule counted %d", udp+tcp, f.addr, dropped)
			}
		})
	}
	m = e.Scrape()
	dropped := e.ruleCounter("raw", "INTERCEPTD-ANTISPOOF", "anti-spoofing") - dropsBefore
	t.Logf("%d forged packets sent, %d counted by the anti-spoofing rule", len(forged)*(udp+tcp), dropped)
	if q := dnsQueries(m) - queriesBefore; q != 0 {
		t.Errorf("the DNS shim counted %v forged queries", q)
	}
	if c := e.series(m, "interceptd_router_connections_total") - connsBefore; c != 0 {
		t.Errorf("the router accepted %v forged connections", c)
	}
	if strings.Contains(m, `sandbox="victim-a"`) {
		t.Errorf("something was counted for the victim, which sent nothing:\n%s", grepLines(m, `sandbox="victim-a"`))
	}
	// The forger, sending from its own address again, and the victim are
	// both answered: the drops were for the forged sources only.
	if got := e.MustIn(b, "dig", "+short", "+time=2", "+tries=1", "@"+nowhereIP, "my.kv"); got != virtualKV+"\n" {
		t.Errorf("b's own query: %q", got)
	}
	if got := e.MustIn(a, "dig", "+short", "+time=2", "+tries=1", "@"+nowhereIP, "my.kv"); got != virtualKV+"\n" {
		t.Errorf("a's query: %q", got)
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
