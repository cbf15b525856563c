package e2e

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// echoIn serves a line echo on ln: each connection gets back what it sends.
func echoIn(ln net.Listener) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
}

// echoer sends a line on conn and reads it back.
// echoesUntil checks that conn echoes a line, runs change, and returns the
// error of echoing another (nil: it still echoes).
func echoesUntil(t *testing.T, conn net.Conn, change func()) error {
	t.Helper()
	echo := echoer(conn)
	if got, err := echo("before"); err != nil || got != "before" {
		t.Fatalf("echo before the change: %q, %v", got, err)
	}
	change()
	_, err := echo("after")
	return err
}

func echoer(conn net.Conn) func(line string) (string, error) {
	r := bufio.NewReader(conn)
	return func(line string) (string, error) {
		conn.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.WriteString(conn, line+"\n"); err != nil {
			return "", err
		}
		got, err := r.ReadString('\n')
		return strings.TrimSpace(got), err
	}
}

// selfSigned is a throwaway server certificate.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// An entry removed must close what it let in whatever way the connection
// came: through a DNAT on the host (a hostPort, a Service), where the
// conntrack entry's original destination is not the sandbox's address, and
// through the daemon (a spliced TLS connection from another sandbox), which
// the kernel's rules never see.
func TestRemovingAnInboundEntryClosesDNATedAndDaemonCarriedConnections(t *testing.T) {
	e := NewEnv(t, Options{})
	client := e.clientNS()
	server := e.Create("server")
	policy := func(t *testing.T, flags ...string) {
		t.Helper()
		if _, errOut, code := e.CLI(append([]string{"sandbox", "policy", "server"}, flags...)...); code != 0 {
			t.Fatalf("sandbox policy server %v: %s", flags, errOut)
		}
	}

	t.Run("a connection that came through a DNAT (a hostPort) is cut", func(t *testing.T) {
		echoIn(e.ListenIn(server.NetnsPath, "0.0.0.0:7000"))
		policy(t, "--inbound", clientCIDR+":7000/tcp")
		// The host publishes the sandbox's port 7000 on its own address,
		// as a hostPort or a Service does.
		run(t, "ip", "netns", "exec", e.HostNS, "iptables", "-t", "nat", "-A", "PREROUTING", "-i", "cli0", "-d", clientGW,
			"-p", "tcp", "--dport", "17000", "-j", "DNAT", "--to-destination", server.Addr+":7000")
		var conn net.Conn
		if err := inNetns(client, func() (err error) {
			d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(clientIn)}}
			conn, err = d.Dial("tcp4", clientGW+":17000")
			return err
		}); err != nil {
			t.Fatalf("connecting through the DNAT: %v", err)
		}
		defer conn.Close()
		if err := echoesUntil(t, conn, func() { policy(t, "--inbound", "") }); err == nil {
			t.Errorf("the DNATed connection the removed entry let in still echoes")
		} else if !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
			t.Errorf("the DNATed connection the removed entry let in: %v, want it reset", err)
		}
	})

	t.Run("a TLS connection from another sandbox, spliced by the daemon, is cut", func(t *testing.T) {
		ln := e.ListenIn(server.NetnsPath, "0.0.0.0:443")
		echoIn(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}))
		policy(t, "--inbound", sandboxPool+":443/tcp")
		peer := e.CreateWith("peer", "--internet", "off", "--allow", server.Addr+":443")
		var conn net.Conn
		if err := inNetns(peer.NetnsPath, func() (err error) {
			d := &net.Dialer{Timeout: 3 * time.Second}
			// An IP address: no SNI, so the address decides.
			conn, err = tls.DialWithDialer(d, "tcp4", fmt.Sprintf("%s:443", server.Addr), &tls.Config{InsecureSkipVerify: true})
			return err
		}); err != nil {
			t.Fatalf("connecting to the server's 443 from the peer: %v", err)
		}
		defer conn.Close()
		if err := echoesUntil(t, conn, func() { policy(t, "--inbound", "") }); err == nil {
			t.Errorf("the spliced connection the removed entry let in still echoes")
		}
		e.waitLog(t, `msg="tunnel cut"`)
	})
}

func TestADeletedSandboxLeavesNoConnectionForTheNextOneAtItsAddress(t *testing.T) {
	e := NewEnv(t, Options{})
	client := e.clientNS()
	gone := e.CreateWith("gone", "--inbound", clientCIDR+":5000/udp")
	heard := e.recordUDP(gone, 5000)
	sendUDP(t, client, clientIn, gone.Addr+":5000", "in")
	if got := heard(500 * time.Millisecond); len(got) != 1 {
		t.Fatalf("the sandbox heard %q, want the one datagram", got)
	}
	// The client's stream would keep that entry alive for as long as it
	// sends, and whoever gets the address next would take it in as
	// established, whatever its own inbound list says.
	flows := func() (n int) {
		t.Helper()
		if err := inNetns("/run/netns/"+e.HostNS, func() error {
			fs, err := netlink.ConntrackTableList(netlink.ConntrackTable, netlink.FAMILY_V4)
			for _, f := range fs {
				if f.Reverse.SrcIP.String() == gone.Addr || f.Forward.SrcIP.String() == gone.Addr {
					n++
				}
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if flows() == 0 {
		t.Fatal("no conntrack entry for the datagram that came in: the test sees nothing")
	}
	if _, errOut, code := e.CLI("sandbox", "delete", "gone"); code != 0 {
		t.Fatalf("sandbox delete: %s", errOut)
	}
	if n := flows(); n != 0 {
		t.Errorf("%d conntrack entries of the deleted sandbox's address remain", n)
	}
}

// An inbound entry opens nothing outward: the sandbox answers what came
// in, and a datagram it sends from the entry's port to a covered source
// that did not write to it first is refused as any egress it may not have.
func TestAnInboundEntryOpensNothingOutward(t *testing.T) {
	e := NewEnv(t, Options{})
	client := e.clientNS()
	server := e.CreateWith("server", "--internet", "off", "--inbound", clientCIDR+":5000/udp")
	var srv, cli net.PacketConn
	if err := inNetns(server.NetnsPath, func() (err error) { srv, err = net.ListenPacket("udp4", "0.0.0.0:5000"); return err }); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := inNetns(client, func() (err error) { cli, err = net.ListenPacket("udp4", clientIn+":9999"); return err }); err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	to := func(port int) net.Addr { return &net.UDPAddr{IP: net.ParseIP(clientIn), Port: port} }
	heard := func() string {
		buf := make([]byte, 64)
		cli.SetReadDeadline(time.Now().Add(time.Second))
		n, _, err := cli.ReadFrom(buf)
		if err != nil {
			return ""
		}
		return string(buf[:n])
	}
	srv.WriteTo([]byte("unasked"), to(9999))
	if got := heard(); got != "" {
		t.Errorf("the sandbox, internet off, reached the covered source unasked: %q", got)
	}
	// The client writes first: the answer is a reply, and passes.
	if _, err := cli.WriteTo([]byte("ping"), &net.UDPAddr{IP: net.ParseIP(server.Addr), Port: 5000}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	srv.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, from, err := srv.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("the sandbox did not hear the client: %q %v", buf[:n], err)
	}
	srv.WriteTo([]byte("pong"), from)
	if got := heard(); got != "pong" {
		t.Errorf("the answer to the client: %q, want pong", got)
	}
	// That flow opens no other port of the client's.
	var other net.PacketConn
	if err := inNetns(client, func() (err error) { other, err = net.ListenPacket("udp4", clientIn+":9998"); return err }); err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	srv.WriteTo([]byte("elsewhere"), to(9998))
	other.SetReadDeadline(time.Now().Add(time.Second))
	if n, _, err := other.ReadFrom(buf); err == nil {
		t.Errorf("the sandbox reached another port of the client: %q", buf[:n])
	}
}
