package e2e

import (
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

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
// connection attempts to a handler's address on port 80 and as many to the
// second upstream on port 443 (the TLS front's), all from src (an address
// the test has put on sb's eth0), and fails t if anything answers. Each attempt
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
			for _, to := range []string{virtualKV + ":80", otherIP + ":443"} {
				if c, err := d.Dial("tcp4", to); err == nil {
					c.Close()
					return fmt.Errorf("a connection to %s forged from %s was accepted", to, src)
				}
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
	const sent = udp + 2*tcp // tcp to port 80 and tcp to port 443
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
	tlsBefore := sumSeries(m, "interceptd_tls_connections_total")
	for _, f := range forged {
		t.Run(f.what, func(t *testing.T) {
			before := e.ruleCounter("raw", "INTERCEPTD-ANTISPOOF", "anti-spoofing")
			e.MustIn(b, "ip", "addr", "add", f.addr+"/32", "dev", "eth0")
			defer e.MustIn(b, "ip", "addr", "del", f.addr+"/32", "dev", "eth0")
			e.forge(t, b, f.addr, udp, tcp)
			dropped := e.ruleCounter("raw", "INTERCEPTD-ANTISPOOF", "anti-spoofing") - before
			t.Logf("from %s: %d packets sent, the anti-spoofing rule counted %d", f.addr, sent, dropped)
			if dropped < sent {
				t.Errorf("%d packets forged from %s, the anti-spoofing rule counted %d", sent, f.addr, dropped)
			}
		})
	}
	m = e.Scrape()
	dropped := e.ruleCounter("raw", "INTERCEPTD-ANTISPOOF", "anti-spoofing") - dropsBefore
	t.Logf("%d forged packets sent, %d counted by the anti-spoofing rule", len(forged)*sent, dropped)
	if q := dnsQueries(m) - queriesBefore; q != 0 {
		t.Errorf("the DNS shim counted %v forged queries", q)
	}
	if c := e.series(m, "interceptd_router_connections_total") - connsBefore; c != 0 {
		t.Errorf("the router accepted %v forged connections", c)
	}
	if c := sumSeries(m, "interceptd_tls_connections_total") - tlsBefore; c != 0 {
		t.Errorf("the TLS front took %v forged connections", c)
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

// sumSeries adds up every series of a metric (0 when it has none yet).
func sumSeries(metrics, name string) float64 {
	var sum float64
	for _, l := range strings.Split(metrics, "\n") {
		if !strings.HasPrefix(l, name+"{") && !strings.HasPrefix(l, name+" ") {
			continue
		}
		f := strings.Fields(l)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
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

// Headers must arrive within 10 s, however slowly they trickle in: the lean
// loop's deadline for a head that did not come in one piece, and net/http's
// ReadHeaderTimeout for a head too large for the lean loop (over 8 KiB),
// which is handed to net/http. The connection is cut then, and the test
// waits for that event (at most 20 s) rather than a fixed time.
func TestHeadersMustArriveWithinTenSeconds(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.Create("trickle")
	tests := []struct {
		name, first string
	}{
		{"a head trickled a byte at a time", "GET /k HTTP/1.1\r\nX-Slow: "},
		{"a head over 8 KiB, handed to net/http, then trickled", "GET /k HTTP/1.1\r\nHost: my.kv\r\nX-Pad: " + strings.Repeat("a", 9000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var c net.Conn
			if err := inNetns(sb.NetnsPath, func() (err error) { c, err = net.Dial("tcp4", virtualKV+":80"); return }); err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			if _, err := c.Write([]byte(tt.first)); err != nil {
				t.Fatal(err)
			}
			cut := make(chan error, 1)
			go func() {
				c.SetReadDeadline(time.Now().Add(20 * time.Second))
				_, err := c.Read(make([]byte, 512))
				cut <- err
			}()
			tick := time.NewTicker(500 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case err := <-cut:
					took := time.Since(start)
					t.Logf("cut after %v (%v)", took.Round(100*time.Millisecond), err)
					if errors.Is(err, os.ErrDeadlineExceeded) {
						t.Fatalf("a trickling head still held its connection after %v", took.Round(time.Second))
					}
					if took < 9*time.Second || took > 15*time.Second {
						t.Errorf("a trickling head was cut after %v, want about 10 s", took.Round(100*time.Millisecond))
					}
					return
				case <-tick.C:
					c.Write([]byte("a")) // fails once the router has cut it
				}
			}
		})
	}
}

// The host side of each sandbox link has no IPv6: a sandbox that turns
// IPv6 on in its own namespace finds no address of the host's there (a
// link-local address would be a path to the host's services that the IPv4
// rules never see). The host's service listens on [::]:2222.
func TestIPv6IsOffOnTheHostSideOfEachLink(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.Create("six")
	hostIf := e.hostIface(sb)
	var ln net.Listener
	if err := inNetns("/run/netns/"+e.HostNS, func() (err error) { ln, err = net.Listen("tcp6", "[::]:2222"); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := countAccepts(ln)

	// The sandbox owns its namespace: it turns IPv6 on for its side.
	e.MustIn(sb, "sh", "-c", "for k in all default eth0; do echo 0 > /proc/sys/net/ipv6/conf/$k/accept_dad; done; for k in all default eth0; do echo 0 > /proc/sys/net/ipv6/conf/$k/disable_ipv6; done")
	deadline := time.Now().Add(5 * time.Second)
	for {
		out := e.MustIn(sb, "ip", "-6", "addr", "show", "dev", "eth0", "scope", "link")
		if strings.Contains(out, "inet6 fe80::") && !strings.Contains(out, "tentative") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sandbox has no usable IPv6 link-local address on eth0 after 5 s: the test proves nothing\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Whatever addresses the host side holds, and the one it would take
	// from its MAC.
	targets := []string{eui64LinkLocal(e.hostMAC(hostIf))}
	held := run(t, "ip", "-n", e.HostNS, "-6", "-o", "addr", "show", "dev", hostIf)
	for _, m := range regexp.MustCompile(`inet6 ([0-9a-f:]+)/`).FindAllStringSubmatch(held, -1) {
		targets = append(targets, m[1])
	}
	if strings.TrimSpace(held) != "" {
		t.Errorf("the host side of the link holds IPv6 addresses:\n%s", held)
	}
	if strings.Contains(held, "tentative") {
		time.Sleep(3 * time.Second) // let duplicate address detection end, so the address answers
	}
	for _, a := range slices.Compact(targets) {
		target := net.JoinHostPort(a+"%eth0", "2222")
		err := inNetns(sb.NetnsPath, func() error {
			c, err := net.DialTimeout("tcp6", target, 3*time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		t.Logf("TCP to %s: %v", target, err)
		if err == nil {
			t.Errorf("the sandbox reached the host over IPv6 at %s", target)
		}
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("the host's IPv6 service accepted %d connections from the sandbox", n)
	}
}

// eui64LinkLocal is the link-local address the kernel forms from a MAC.
func eui64LinkLocal(mac string) string {
	hw, _ := net.ParseMAC(mac)
	b := []byte{hw[0] ^ 2, hw[1], hw[2], 0xff, 0xfe, hw[3], hw[4], hw[5]}
	return fmt.Sprintf("fe80::%x:%x:%x:%x", uint16(b[0])<<8|uint16(b[1]), uint16(b[2])<<8|uint16(b[3]), uint16(b[4])<<8|uint16(b[5]), uint16(b[6])<<8|uint16(b[7]))
}

// Refused flows reach the daemon's log through NFLOG at most 100 a second,
// in bursts of 200: a flood of refused flows is refused whole (the refusing
// rule's counter takes every packet), while the log records and the
// decisions counted stay within the limit.
func TestRefusedFlowsAreLoggedAtMost100ASecond(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.CreateWith("flood", "--internet", "off")
	const n = 3000
	refusedBefore := e.ruleCounter("filter", "INTERCEPTD-DENY-OFF", "INTERCEPTD-REJECT")
	start := time.Now()
	err := inNetns(sb.NetnsPath, func() error {
		c, err := net.ListenPacket("udp4", ":0")
		if err != nil {
			return err
		}
		defer c.Close()
		to := &net.UDPAddr{IP: net.ParseIP(upstreamIP), Port: 9999}
		for range n {
			if _, err := c.WriteTo([]byte("x"), to); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	refused := e.ruleCounter("filter", "INTERCEPTD-DENY-OFF", "INTERCEPTD-REJECT") - refusedBefore
	if refused < n {
		t.Errorf("%d flows sent, the refusing rule counted %d", n, refused)
	}
	// The log is read asynchronously: wait until it stops growing.
	count := func() int { return strings.Count(e.Log(), `msg="refused flow" sandbox=flood`) }
	logged := count()
	for {
		time.Sleep(500 * time.Millisecond)
		if now := count(); now != logged {
			logged = now
			continue
		}
		break
	}
	decisions, _ := sample(e.Scrape(), `interceptd_policy_decisions_total{protocol="udp",reason="internet_off",result="deny",sandbox="flood"}`)
	// The burst, the rate over the flood's time and a second more, slack.
	most := 200 + int(100*(took.Seconds()+1)) + 20
	t.Logf("%d refused flows sent in %v, %d refused by the rule; %d logged, %v counted as decisions (at most %d)", n, took.Round(time.Millisecond), refused, logged, decisions, most)
	if logged == 0 {
		t.Error("no refused flow was logged: the test proves nothing")
	}
	if logged > most || int(decisions) > most {
		t.Errorf("%d refused flows logged, %v decisions counted: want at most %d", logged, decisions, most)
	}
}
