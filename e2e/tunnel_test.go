package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/interceptd/interceptd/router/routertest"
)

// More addresses of the upstream namespace, added by the tests that need
// them: each serves a protocol upgrade on port 80.
const (
	tunnelIP = "192.0.2.4"
	keptIP   = "192.0.2.5"
)

// upgradeEcho serves a protocol upgrade on addr inside the upstream
// namespace (which must have the address): a request asking to upgrade to
// "echo" gets 101 Switching Protocols, then the connection echoes what
// comes. The end of each upgraded connection (the daemon closed its side)
// is sent on the channel returned.
func (e *Env) upgradeEcho(addr string) <-chan struct{} {
	ended := make(chan struct{}, 8)
	ln := e.ListenIn("/run/netns/"+e.UpNS, addr)
	go routertest.ServeEach(ln, func(c net.Conn) {
		br := bufio.NewReader(c)
		r, err := http.ReadRequest(br)
		if err != nil || r.Header.Get("Upgrade") != "echo" {
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		io.Copy(c, br)
		ended <- struct{}{}
	})
	return ended
}

// tunnel is a sandbox's upgraded connection.
type tunnel struct {
	net.Conn
	br *bufio.Reader
}

// openTunnel upgrades a connection from inside sb to dest (through the
// daemon, as every port-80 connection goes) and returns it switched.
func (e *Env) openTunnel(sb Sandbox, dest string) *tunnel {
	e.t.Helper()
	c := e.dialFrom(sb, dest)
	e.t.Cleanup(func() { c.Close() })
	host, _, _ := net.SplitHostPort(dest)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /tunnel HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n", host)
	tn := &tunnel{Conn: c, br: bufio.NewReader(c)}
	resp, err := http.ReadResponse(tn.br, &http.Request{Method: "GET"})
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		e.t.Fatalf("upgrading to %s from %s: %v %v", dest, sb.Name, resp, err)
	}
	c.SetDeadline(time.Time{})
	return tn
}

// echo sends a line through the tunnel and reads it back within 2 s.
func (tn *tunnel) echo(msg string) error {
	tn.SetDeadline(time.Now().Add(2 * time.Second))
	defer tn.SetDeadline(time.Time{})
	if _, err := io.WriteString(tn, msg+"\n"); err != nil {
		return err
	}
	got, err := tn.br.ReadString('\n')
	if err != nil {
		return err
	}
	if got != msg+"\n" {
		return fmt.Errorf("echoed %q, want %q", got, msg)
	}
	return nil
}

// cutWithin reports how the tunnel ended within d: nil when the daemon
// closed it (EOF or reset), an error when it still stood.
func (tn *tunnel) cutWithin(d time.Duration) error {
	tn.SetReadDeadline(time.Now().Add(d))
	defer tn.SetReadDeadline(time.Time{})
	b, err := tn.br.ReadByte()
	switch {
	case err == nil:
		return fmt.Errorf("read %q: the tunnel still carries bytes", b)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("still open after %v", d)
	}
	return nil // io.EOF or a reset: cut
}

func TestAPolicyChangeCutsTheOpenTunnelsItNowDenies(t *testing.T) {
	e := NewEnv(t, Options{})
	for _, a := range []string{tunnelIP, keptIP} {
		run(t, "ip", "-n", e.UpNS, "addr", "add", a+"/24", "dev", "eth0")
	}
	cutEnded, keptEnded := e.upgradeEcho(tunnelIP+":80"), e.upgradeEcho(keptIP+":80")
	sb := e.Create("tun")
	bystander := e.Create("bystander")
	cut, kept, others := e.openTunnel(sb, tunnelIP+":80"), e.openTunnel(sb, keptIP+":80"), e.openTunnel(bystander, tunnelIP+":80")
	for name, tn := range map[string]*tunnel{"cut": cut, "kept": kept, "bystander's": others} {
		if err := tn.echo("before"); err != nil {
			t.Fatalf("the %s tunnel before any change: %v", name, err)
		}
	}
	policy := func(flags ...string) {
		t.Helper()
		if out, errOut, code := e.CLI(append([]string{"sandbox", "policy", "tun"}, flags...)...); code != 0 {
			t.Fatalf("sandbox policy %v: %s %s", flags, out, errOut)
		}
	}

	t.Run("a deny of something unrelated cuts nothing", func(t *testing.T) {
		policy("--deny", "other.test")
		for name, tn := range map[string]*tunnel{"cut": cut, "kept": kept} {
			if err := tn.echo("unrelated"); err != nil {
				t.Errorf("the %s tunnel: %v", name, err)
			}
		}
	})
	t.Run("a deny of the tunnel's address cuts both of its sides at once", func(t *testing.T) {
		policy("--deny", tunnelIP)
		if err := cut.cutWithin(2 * time.Second); err != nil {
			t.Errorf("the sandbox's side: %v", err)
		}
		select {
		case <-cutEnded:
		case <-time.After(2 * time.Second):
			t.Errorf("the upstream's side is still open 2s after the change")
		}
	})
	t.Run("a tunnel whose host is still allowed keeps flowing", func(t *testing.T) {
		if err := kept.echo("after"); err != nil {
			t.Error(err)
		}
	})
	t.Run("another sandbox's tunnel to the same address keeps flowing", func(t *testing.T) {
		if err := others.echo("after"); err != nil {
			t.Error(err)
		}
	})
	t.Run("the cut is counted and logged with its reason", func(t *testing.T) {
		m := e.Scrape()
		for series, want := range map[string]float64{
			`interceptd_router_tunnels_cut_total{reason="denied_host"}`: 1,
			`interceptd_router_tunnels_open`:                            2,
		} {
			if v, ok := sample(m, series); !ok || v != want {
				t.Errorf("%s = %v (present %v), want %v", series, v, ok, want)
			}
		}
		var cuts []string
		for _, l := range strings.Split(e.Log(), "\n") {
			if strings.Contains(l, `msg="tunnel cut"`) {
				cuts = append(cuts, l)
			}
		}
		if len(cuts) != 1 {
			t.Fatalf("%d tunnel cut records, want 1:\n%s", len(cuts), strings.Join(cuts, "\n"))
		}
		for _, want := range []string{"sandbox=tun", "host=" + tunnelIP, "dest=" + tunnelIP + ":80", "reason=denied_host"} {
			if !strings.Contains(cuts[0], want) {
				t.Errorf("the record lacks %s: %s", want, cuts[0])
			}
		}
	})
	t.Run("deleting the sandbox cuts its remaining tunnels", func(t *testing.T) {
		if _, errOut, code := e.CLI("sandbox", "delete", "tun"); code != 0 {
			t.Fatalf("sandbox delete: %s", errOut)
		}
		select {
		case <-keptEnded:
		case <-time.After(2 * time.Second):
			t.Errorf("the deleted sandbox's tunnel is still open upstream 2s after the delete")
		}
		if err := others.echo("after the delete"); err != nil {
			t.Errorf("the bystander's tunnel: %v", err)
		}
		if v, ok := sample(e.Scrape(), `interceptd_router_tunnels_cut_total{reason="sandbox_deleted"}`); v != 1 {
			t.Errorf("cuts for the delete: %v (present %v), want 1", v, ok)
		}
	})
}
