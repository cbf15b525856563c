package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	icdnetns "github.com/interceptd/interceptd/netns"
	"github.com/vishvananda/netlink"
)

// Addresses of the client network the inbound tests make: a link from the
// host namespace to a client namespace standing for other pods, Services
// or the node's network. The client holds two addresses, one inside the
// CIDR the tests open and one outside it.
const (
	clientGW    = "10.244.9.1"   // the host namespace's end
	clientIn    = "10.244.9.2"   // inside clientCIDR
	clientOut   = "10.244.9.200" // on the same link, outside clientCIDR
	clientCIDR  = "10.244.9.0/25"
	sandboxPool = "10.213.0.0/16" // the default sandbox.pool
)

// clientNS makes the client namespace, linked to the host namespace and
// routed to the sandbox pool (and to each of also) through it; it goes
// (with its link) in cleanup, before the Env's own teardown checks.
func (e *Env) clientNS(also ...string) string {
	e.t.Helper()
	ns := "ie2e-" + e.ID + "-cli"
	run(e.t, "ip", "netns", "add", ns)
	e.t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	run(e.t, "ip", "-n", ns, "link", "set", "lo", "up")
	run(e.t, "ip", "-n", e.HostNS, "link", "add", "cli0", "type", "veth", "peer", "name", "eth0", "netns", ns)
	run(e.t, "ip", "-n", e.HostNS, "addr", "add", clientGW+"/24", "dev", "cli0")
	run(e.t, "ip", "-n", e.HostNS, "link", "set", "cli0", "up")
	run(e.t, "ip", "-n", ns, "addr", "add", clientIn+"/24", "dev", "eth0")
	run(e.t, "ip", "-n", ns, "addr", "add", clientOut+"/24", "dev", "eth0")
	run(e.t, "ip", "-n", ns, "link", "set", "eth0", "up")
	for _, dst := range append([]string{sandboxPool}, also...) {
		run(e.t, "ip", "-n", ns, "route", "add", dst, "via", clientGW)
	}
	return "/run/netns/" + ns
}

// serveHello answers every TCP connection on each port inside the sandbox
// with "hello PORT".
func (e *Env) serveHello(sb Sandbox, ports ...int) {
	for _, port := range ports {
		ln := e.ListenIn(sb.NetnsPath, fmt.Sprintf("0.0.0.0:%d", port))
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(c, "hello %d\n", port)
				c.Close()
			}
		}()
	}
}

// dialFrom connects from src (an address of the namespace at nsPath) to
// dst and returns what the server said, or the error.
func dialFrom(nsPath, src, dst string) (string, error) {
	var line string
	err := inNetns(nsPath, func() error {
		d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp4", dst)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		line, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	return strings.TrimSpace(line), err
}

// inboundPasses fails t unless src in nsPath gets the server's hello from dst.
func inboundPasses(t *testing.T, nsPath, src, dst string) {
	t.Helper()
	_, port, _ := net.SplitHostPort(dst)
	if got, err := dialFrom(nsPath, src, dst); err != nil || got != "hello "+port {
		t.Errorf("from %s to %s: %q, %v; want hello %s", src, dst, got, err, port)
	}
}

// inboundRefused fails t unless the connection from src to dst is reset at
// once (the daemon's refusal), rather than answered or left hanging.
func inboundRefused(t *testing.T, nsPath, src, dst string) {
	t.Helper()
	start := time.Now()
	got, err := dialFrom(nsPath, src, dst)
	switch {
	case err == nil:
		t.Errorf("from %s to %s: connected, server said %q", src, dst, got)
	case !errors.Is(err, syscall.ECONNREFUSED):
		t.Errorf("from %s to %s: %v, want connection refused", src, dst, err)
	case time.Since(start) > atOnce:
		t.Errorf("from %s to %s: refused after %v, not at once", src, dst, time.Since(start))
	}
}

// recordUDP listens on the UDP port inside the sandbox; the function it
// returns waits d and gives what arrived, as "source payload" lines.
func (e *Env) recordUDP(sb Sandbox, port int) func(d time.Duration) []string {
	e.t.Helper()
	var pc net.PacketConn
	if err := inNetns(sb.NetnsPath, func() (err error) { pc, err = net.ListenPacket("udp4", fmt.Sprintf("0.0.0.0:%d", port)); return err }); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { pc.Close() })
	var mu sync.Mutex
	var got []string
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, from.(*net.UDPAddr).IP.String()+" "+string(buf[:n]))
			mu.Unlock()
		}
	}()
	return func(d time.Duration) []string {
		time.Sleep(d)
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// sendUDP sends one datagram from src (an address of the namespace at
// nsPath) to dst.
func sendUDP(t *testing.T, nsPath, src, dst, payload string) {
	t.Helper()
	err := inNetns(nsPath, func() error {
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(src)}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte(payload))
		return err
	})
	if err != nil {
		t.Fatalf("sending from %s to %s: %v", src, dst, err)
	}
}

func TestConnectionsIntoASandboxOpenOnlyAsItsInboundPolicySays(t *testing.T) {
	e := NewEnv(t, Options{})
	client := e.clientNS()
	server := e.Create("server")
	e.serveHello(server, 8080, 8081, 9000)
	at := func(port int) string { return fmt.Sprintf("%s:%d", server.Addr, port) }
	policy := func(t *testing.T, name string, flags ...string) {
		t.Helper()
		if _, errOut, code := e.CLI(append([]string{"sandbox", "policy", name}, flags...)...); code != 0 {
			t.Fatalf("sandbox policy %s %v: %s", name, flags, errOut)
		}
	}

	t.Run("without an entry nothing enters", func(t *testing.T) {
		inboundRefused(t, client, clientIn, at(8080))
		inboundRefused(t, client, clientOut, at(9000))
	})
	t.Run("an entry for the client's CIDR and port lets it in on that port only", func(t *testing.T) {
		policy(t, "server", "--inbound", clientCIDR+":8080/tcp", "--inbound", sandboxPool+":9000/tcp")
		inboundPasses(t, client, clientIn, at(8080))
		inboundRefused(t, client, clientIn, at(8081))
		inboundRefused(t, client, clientIn, at(9000))
	})
	t.Run("a source outside the CIDR stays out, logged for the sandbox it knocked at", func(t *testing.T) {
		inboundRefused(t, client, clientOut, at(8080))
		e.waitLog(t, `msg="refused inbound flow" sandbox=server proto=tcp src=`+clientOut+` dest=`+at(8080)+` decision=deny reason=protected_destination`)
	})
	t.Run("the sandbox's own egress is unchanged", func(t *testing.T) {
		e.tcpPasses(t, server, otherIP+":2222")
		// Its own flow is logged as one, and (logged in order, before it)
		// its replies to the client that came in are not flows of its own.
		e.waitLog(t, `msg="routed flow" sandbox=server proto=tcp dest=`+otherIP+`:2222 decision=allow`)
		if strings.Contains(e.Log(), `msg="routed flow" sandbox=server proto=tcp dest=`+clientIn) {
			t.Errorf("the server's replies to an inbound connection were logged as its own flow")
		}
		closed := e.CreateWith("closedout", "--internet", "off", "--inbound", clientCIDR)
		e.tcpRefused(t, closed, otherIP+":2222")
	})
	t.Run("another sandbox gets in only with an entry for it and its own egress open", func(t *testing.T) {
		peer := e.CreateWith("peer", "--internet", "off", "--allow", at(9000), "--allow", at(8080), "--allow", at(80))
		open := e.CreateWith("open") // internet on, which never opens another sandbox
		inboundPasses(t, peer.NetnsPath, peer.Addr, at(9000))
		inboundRefused(t, open.NetnsPath, open.Addr, at(9000))
		// A port no entry opens to it: refused at the inbound rule,
		// whatever its egress allows.
		inboundRefused(t, peer.NetnsPath, peer.Addr, at(8080))
	})
	t.Run("HTTP from another sandbox, which the daemon forwards, is held to the same entries", func(t *testing.T) {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "served\n") })}
		go srv.Serve(e.ListenIn(server.NetnsPath, "0.0.0.0:80"))
		t.Cleanup(func() { srv.Close() })
		peer := Sandbox{Name: "peer", Netns: e.Prefix + "peer"}
		get := func() string {
			return e.MustIn(peer, "curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code} %header{x-interceptd-error}", "http://"+server.Addr+"/")
		}
		if got := get(); got != "403 protected_destination" {
			t.Errorf("without an entry for port 80: %q, want 403 protected_destination", got)
		}
		policy(t, "server", "--inbound", clientCIDR+":8080/tcp", "--inbound", sandboxPool+":9000/tcp", "--inbound", sandboxPool+":80/tcp")
		if got := get(); got != "200 " {
			t.Errorf("with an entry for port 80: %q, want 200", got)
		}
	})
	t.Run("a sandbox spoofing a covered source address does not get in", func(t *testing.T) {
		policy(t, "server", "--inbound", clientCIDR+":8080/tcp", "--inbound", sandboxPool+":9000/tcp", "--inbound", clientCIDR+":5353/udp", "--inbound", sandboxPool+":5353/udp")
		heard := e.recordUDP(server, 5353)
		// Its egress opens the server's address on every port, matched by
		// its link: past the inbound rule, only anti-spoofing stands
		// between a forged source and the server. A forged TCP handshake
		// could not complete (the answer goes to the address's owner), so
		// one datagram is the test.
		spoofer := e.CreateWith("spoofer", "--allow", server.Addr)
		e.MustIn(spoofer, "ip", "addr", "add", "10.244.9.50/32", "dev", "eth0")
		sendUDP(t, spoofer.NetnsPath, "10.244.9.50", at(5353), "forged")
		sendUDP(t, client, clientOut, at(5353), "outside")
		// A pool address sent from outside the sandboxes: what the entry
		// for the pool means is the sandboxes, not whoever claims to be one.
		run(t, "ip", "-n", filepath.Base(client), "addr", "add", "10.213.0.250/32", "dev", "eth0")
		sendUDP(t, client, "10.213.0.250", at(5353), "borrowed")
		sendUDP(t, client, clientIn, at(5353), "inside") // the control: it must arrive
		if got := heard(2 * time.Second); !slices.Equal(got, []string{clientIn + " inside"}) {
			t.Errorf("the server heard %q, want only %q", got, clientIn+" inside")
		}
	})
	t.Run("the entries survive a restart, kept in the sandbox's record", func(t *testing.T) {
		e.Stop()
		// The kernel forgets them, as a reboot's rules would: only the
		// record can bring them back.
		if err := inNetns("/run/netns/"+e.HostNS, func() error {
			return errors.Join(netlink.IpsetFlush(icdnetns.SetInbound), netlink.IpsetFlush(icdnetns.SetInboundAll))
		}); err != nil {
			t.Fatal(err)
		}
		inboundRefused(t, client, clientIn, at(8080))
		e.Start()
		inboundPasses(t, client, clientIn, at(8080))
		inboundRefused(t, client, clientIn, at(8081))
		inboundRefused(t, client, clientOut, at(8080))
	})
	t.Run("an entry removed closes the sandbox again, and the connections it let in", func(t *testing.T) {
		policy(t, "server", "--inbound", clientCIDR+":7000/tcp")
		echoIn(e.ListenIn(server.NetnsPath, "0.0.0.0:7000"))
		var conn net.Conn
		if err := inNetns(client, func() (err error) {
			d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(clientIn)}}
			conn, err = d.Dial("tcp4", at(7000))
			return err
		}); err != nil {
			t.Fatalf("connecting to the echo: %v", err)
		}
		defer conn.Close()
		r := bufio.NewReader(conn)
		echo := func(line string) (string, error) {
			conn.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err := io.WriteString(conn, line+"\n"); err != nil {
				return "", err
			}
			got, err := r.ReadString('\n')
			return strings.TrimSpace(got), err
		}
		if got, err := echo("before"); err != nil || got != "before" {
			t.Fatalf("echo before the change: %q, %v", got, err)
		}
		policy(t, "server", "--inbound", "")
		inboundRefused(t, client, clientIn, at(8080))
		if got, err := echo("after"); err == nil {
			t.Errorf("the connection the removed entry let in still echoes: %q", got)
		} else if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("the connection the removed entry let in: %v, want it reset", err)
		}
	})
	t.Run("an entry without a port opens every port to its source", func(t *testing.T) {
		policy(t, "server", "--inbound", clientIn)
		inboundPasses(t, client, clientIn, at(8081))
		inboundPasses(t, client, clientIn, at(9000))
		inboundRefused(t, client, clientOut, at(8081))
	})
}

func TestAChainedPodTakesTheDefaultPolicysInboundEntriesAndTheirReload(t *testing.T) {
	const v1 = "policy:\n  internet: true\n  inbound: [\"" + clientCIDR + ":8080/tcp\"]\n"
	const v2 = "policy:\n  internet: true\n  inbound: [\"" + clientCIDR + ":8081/tcp\"]\n"
	c := newChainWith(t, Options{ExtraConfig: v1})
	client := c.clientNS(c.subnet)
	nsName := "ie2einb-" + c.ID
	p := c.runtimeNetns(nsName)
	res := c.add(t, c.rt("ctr-"+c.ID, p, "team-a/api-0"))
	pod := c.container(t, nsName, res)
	pod.Name = "team-a.api-0"
	addr := res.IPs[0].Address.IP.String()
	c.serveHello(pod, 8080, 8081)
	at := func(port int) string { return fmt.Sprintf("%s:%d", addr, port) }

	t.Run("the default policy's entry lets the client in on its port only", func(t *testing.T) {
		inboundPasses(t, client, clientIn, at(8080))
		inboundRefused(t, client, clientIn, at(8081))
		inboundRefused(t, client, clientOut, at(8080))
	})
	t.Run("a reload of the default policy moves the pod's opening", func(t *testing.T) {
		if line := c.reload(v1, v2); !strings.Contains(line, "config reloaded") {
			t.Fatalf("the reload was refused: %s", line)
		}
		inboundRefused(t, client, clientIn, at(8080))
		inboundPasses(t, client, clientIn, at(8081))
	})
	t.Run("a bad entry in a reload is refused naming its field and line, and the running one stays", func(t *testing.T) {
		bad := "policy:\n  internet: true\n  inbound: [\"" + clientCIDR + ":8081/sctp\"]\n"
		line := c.reload(v2, bad)
		if !strings.Contains(line, "reload refused") || !strings.Contains(line, "policy.inbound[0]") || !strings.Contains(line, "line ") {
			t.Errorf("reload: %s", line)
		}
		inboundPasses(t, client, clientIn, at(8081))
		// A good config again, for the next reload and for the cleanup.
		if line := c.reload(bad, v2); !strings.Contains(line, "config reloaded") {
			t.Fatalf("the reload back was refused: %s", line)
		}
	})
}
