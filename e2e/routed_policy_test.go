package e2e

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// routedPolicyNames are the names the harness's DNS server answers for the
// tests of this file: under an allowed wildcard, each points at a protected
// or a private destination, as a hostile or rebinding name would.
var routedPolicyNames = map[string]string{
	"meta.rules.test.":  "169.254.169.254",
	"lan.rules.test.":   "192.168.77.2",
	"cgnat.rules.test.": "100.64.7.2",
}

// routedTCP opens http://target/ from sb with curl: routed TCP unless the
// port is 80.
func (e *Env) routedTCP(sb Sandbox, target string) (string, int, time.Duration) {
	e.t.Helper()
	r := e.curlTimed(sb, "-m", "5", "http://"+target+"/")
	return r.Out, r.Exit, r.Took
}

// tcpPasses fails t unless TCP from sb reaches target's echo server.
func (e *Env) tcpPasses(t *testing.T, sb Sandbox, target string) {
	t.Helper()
	if out, code, _ := e.routedTCP(sb, target); code != 0 || !strings.Contains(out, `"Host":"`) {
		t.Errorf("%s: TCP to %s did not pass (curl exit %d): %s", sb.Name, target, code, out)
	}
}

// tcpRefused fails t unless TCP from sb to target is reset at once.
func (e *Env) tcpRefused(t *testing.T, sb Sandbox, target string) {
	t.Helper()
	out, code, d := e.routedTCP(sb, target)
	if code != 7 {
		t.Errorf("%s: TCP to %s: curl exit %d, want 7 (refused at once): %s", sb.Name, target, code, out)
	} else if d > atOnce {
		t.Errorf("%s: TCP to %s refused after %v (curl's own time), not at once", sb.Name, target, d)
	}
}

// udpPasses reports whether a UDP DNS query from sb to server (a routed
// port, not 53) is answered; a refusal must come at once.
func (e *Env) udpPasses(t *testing.T, sb Sandbox, server string, want bool) {
	t.Helper()
	host, port, _ := net.SplitHostPort(server)
	start := time.Now()
	out, code := e.In(sb, "dig", "+time=10", "+tries=1", "-p", port, "@"+host, "example.test")
	d := time.Since(start)
	if !want {
		t.Logf("%s: UDP to %s failed after %v (dig run included)", sb.Name, server, d)
	}
	switch {
	case want && code != 0:
		t.Errorf("%s: UDP to %s was not answered (dig exit %d):\n%s", sb.Name, server, code, out)
	case !want && code == 0:
		t.Errorf("%s: UDP to %s was answered:\n%s", sb.Name, server, out)
	case !want && !strings.Contains(out, "unreachable"):
		t.Errorf("%s: UDP to %s was not refused (dig exit %d after %v):\n%s", sb.Name, server, code, d, out)
	case !want && d > digAtOnce:
		t.Errorf("%s: UDP to %s refused after %v, not at once (want at most %v):\n%s", sb.Name, server, d, digAtOnce, out)
	}
}

// pingPasses reports whether sb's ICMP echo to addr is answered as want.
func (e *Env) pingPasses(t *testing.T, sb Sandbox, addr string, want bool) {
	t.Helper()
	out, code := e.In(sb, "busybox", "ping", "-c", "1", "-W", "1", addr)
	if (code == 0) != want {
		t.Errorf("%s: ping %s answered %v, want %v:\n%s", sb.Name, addr, code == 0, want, out)
	}
}

// waitLog waits up to 5 s for the daemon's log to contain each of want.
func (e *Env) waitLog(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, w := range want {
		for !strings.Contains(e.Log(), w) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if !strings.Contains(e.Log(), w) {
			t.Errorf("the log lacks %s", w)
		}
	}
}

// refusal is the log line of one refused routed flow.
func refusal(sandbox, proto, dest, reason string) string {
	return `msg="refused flow" sandbox=` + sandbox + ` proto=` + proto + ` dest=` + dest + ` decision=deny reason=` + reason
}

// serveEchoAt serves the harness's echo over HTTP on each TCP address, in
// the upstream namespace.
func (e *Env) serveEchoAt(addrs ...string) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(Echo{Method: r.Method, Host: r.Host, URI: r.RequestURI})
	})}
	for _, a := range addrs {
		go srv.Serve(e.ListenIn("/run/netns/"+e.UpNS, a))
	}
	e.t.Cleanup(func() { srv.Close() })
}

// serveUDPDNSAt answers every query with an A record, over UDP on addr in
// the upstream namespace.
func (e *Env) serveUDPDNSAt(addr string) {
	var pc net.PacketConn
	if err := inNetns("/run/netns/"+e.UpNS, func() (err error) { pc, err = net.ListenPacket("udp4", addr); return err }); err != nil {
		e.t.Fatal(err)
	}
	s := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		rr, _ := dns.NewRR(r.Question[0].Name + " 60 IN A " + otherIP)
		m.Answer = append(m.Answer, rr)
		w.WriteMsg(m)
	})}
	go s.ActivateAndServe()
	e.t.Cleanup(func() { s.Shutdown() })
}

// upstreamAddr puts addr (a prefix) on the upstream namespace's link and
// routes dst to it from the host namespace: a network behind the host, as
// its LAN or VPC would be.
func (e *Env) upstreamAddr(addr, dst string) {
	run(e.t, "ip", "-n", e.UpNS, "addr", "add", addr, "dev", "eth0")
	run(e.t, "ip", "-n", e.HostNS, "route", "add", dst, "via", upstreamIP)
}

func TestWithInternetOnAnAllowlistBindsEveryProtocol(t *testing.T) {
	e := NewEnv(t, Options{})
	e.serveUDPDNSAt(otherIP + ":5300")
	e.serveEchoAt(upstreamIP + ":5432")
	listed := e.CreateWith("listed", "--allow", "example.test")
	open := e.Create("open")

	t.Run("before any lookup nothing goes out but what the allowlist opens", func(t *testing.T) {
		for _, dst := range []string{otherIP, upstreamIP} {
			e.tcpRefused(t, listed, dst+":2222")
			e.pingPasses(t, listed, dst, false)
		}
		e.udpPasses(t, listed, otherIP+":5300", false)
		e.udpPasses(t, listed, upstreamIP+":5300", false)
	})
	t.Run("without an allowlist the same traffic goes out", func(t *testing.T) {
		e.tcpPasses(t, open, otherIP+":2222")
		e.udpPasses(t, open, otherIP+":5300", true)
		e.pingPasses(t, open, otherIP, true)
	})
	t.Run("the allowed name's address opens on every protocol once looked up", func(t *testing.T) {
		if out := e.MustIn(listed, "dig", "+short", "example.test"); out != upstreamIP+"\n" {
			t.Fatalf("dig example.test: %q", out)
		}
		e.tcpPasses(t, listed, upstreamIP+":2222")
		e.udpPasses(t, listed, upstreamIP+":5300", true)
		e.pingPasses(t, listed, upstreamIP, true)
		e.tcpRefused(t, listed, otherIP+":2222")
		e.udpPasses(t, listed, otherIP+":5300", false)
		e.pingPasses(t, listed, otherIP, false)
	})
	t.Run("the refusals are logged as not_allowed", func(t *testing.T) {
		e.waitLog(t,
			refusal("listed", "tcp", otherIP+":2222", "not_allowed"),
			refusal("listed", "udp", otherIP+":5300", "not_allowed"),
			refusal("listed", "icmp", otherIP+":0", "not_allowed"))
	})
	t.Run("a port on an allowed name keeps its addresses to that port", func(t *testing.T) {
		for _, sb := range []Sandbox{
			e.CreateWith("ported", "--allow", "example.test:2222"),
			e.CreateWith("portedoff", "--internet", "off", "--allow", "example.test:2222"),
		} {
			if out := e.MustIn(sb, "dig", "+short", "example.test"); out != upstreamIP+"\n" {
				t.Fatalf("%s: dig example.test: %q", sb.Name, out)
			}
			e.tcpPasses(t, sb, upstreamIP+":2222")
			e.tcpRefused(t, sb, upstreamIP+":5432")
			e.udpPasses(t, sb, upstreamIP+":5300", false)
			e.pingPasses(t, sb, upstreamIP, false)
		}
	})
	t.Run("a policy change takes the learned addresses away", func(t *testing.T) {
		if _, errOut, code := e.CLI("sandbox", "policy", "listed", "--allow", "other.test"); code != 0 {
			t.Fatalf("sandbox policy: %s", errOut)
		}
		e.tcpRefused(t, listed, upstreamIP+":2222")
	})
}

func TestPrivateAndProtectedDestinationsOpenOnlyToAnExplicitEntry(t *testing.T) {
	e := NewEnv(t, Options{})
	e.upstreamAddr("192.168.77.2/24", "192.168.77.0/24")
	e.upstreamAddr("100.64.7.2/24", "100.64.7.0/24")
	e.upstreamAddr("169.254.169.254/32", "169.254.169.254/32")
	lanIP, cgnatIP, metaIP := "192.168.77.2", "100.64.7.2", "169.254.169.254"
	e.serveEchoAt(lanIP+":2222", cgnatIP+":2222", metaIP+":2222")
	open := e.Create("open")
	wild := e.CreateWith("wild", "--allow", "*.rules.test")
	lan := e.CreateWith("lan", "--allow", "192.168.77.0/24")
	meta := e.CreateWith("meta", "--allow", metaIP)

	t.Run("with internet on private networks are refused", func(t *testing.T) {
		e.tcpRefused(t, open, lanIP+":2222")
		e.tcpRefused(t, open, cgnatIP+":2222")
		e.pingPasses(t, open, lanIP, false)
		e.tcpPasses(t, open, upstreamIP+":2222")
		e.waitLog(t, refusal("open", "tcp", lanIP+":2222", "private_destination"),
			refusal("open", "tcp", cgnatIP+":2222", "private_destination"))
	})
	t.Run("an explicit IP or CIDR entry opens a private network or a protected destination", func(t *testing.T) {
		e.tcpPasses(t, lan, lanIP+":2222")
		e.tcpRefused(t, lan, cgnatIP+":2222")
		e.tcpPasses(t, meta, metaIP+":2222")
	})
	t.Run("an allowed name answered with a protected or private address opens neither", func(t *testing.T) {
		for name := range routedPolicyNames {
			e.In(wild, "dig", "+short", strings.TrimSuffix(name, "."))
		}
		e.tcpRefused(t, wild, metaIP+":2222")
		e.pingPasses(t, wild, metaIP, false)
		e.tcpRefused(t, wild, lanIP+":2222")
		e.tcpRefused(t, wild, cgnatIP+":2222")
		e.waitLog(t, refusal("wild", "tcp", metaIP+":2222", "protected_destination"),
			refusal("wild", "tcp", lanIP+":2222", "private_destination"),
			refusal("wild", "tcp", cgnatIP+":2222", "private_destination"))
	})
}

func TestARestartRefillsTheRoutedPolicyAndADeadSandboxsSlotInheritsNothing(t *testing.T) {
	e := NewEnv(t, Options{})
	gone := e.CreateWith("gone", "--allow", "example.test")
	keep := e.CreateWith("keep", "--allow", "example.test")
	for _, sb := range []Sandbox{gone, keep} {
		e.MustIn(sb, "dig", "+short", "example.test")
		e.tcpPasses(t, sb, upstreamIP+":2222")
	}
	e.Stop()
	run(t, "ip", "netns", "del", gone.Netns) // gone does not survive the restart
	e.Start()

	heir := e.CreateWith("heir", "--internet", "off")
	if heir.Addr != gone.Addr {
		t.Fatalf("the new sandbox got %s, not the dead one's %s: this test needs its slot", heir.Addr, gone.Addr)
	}
	t.Run("a new sandbox on a dead one's slot inherits none of its entries", func(t *testing.T) {
		e.tcpRefused(t, heir, upstreamIP+":2222")
		e.pingPasses(t, heir, upstreamIP, false)
		e.waitLog(t, refusal("heir", "tcp", upstreamIP+":2222", "internet_off"))
	})
	t.Run("a re-adopted sandbox keeps its allowlist and learns again", func(t *testing.T) {
		e.tcpRefused(t, keep, otherIP+":2222")
		e.MustIn(keep, "dig", "+short", "example.test")
		e.tcpPasses(t, keep, upstreamIP+":2222")
		e.waitLog(t, refusal("keep", "tcp", otherIP+":2222", "not_allowed"))
	})
}
