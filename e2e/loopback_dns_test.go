package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An image whose resolv.conf names a loopback resolver (127.0.0.53 copied
// from a systemd-resolved host, Docker's 127.0.0.11) gets its answers from
// the daemon, as the sandbox, under its policy; and the capture opens
// nothing else on loopback.
func TestALoopbackResolverInASandboxIsAnsweredByTheDaemonAsThatSandbox(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.CreateWith("loop", "--deny", "secret.api")
	// What `ip netns exec` (and podman's ns: mode) mounts as the
	// container's /etc/resolv.conf, as such an image has it.
	conf := filepath.Join("/etc/netns", sb.Netns, "resolv.conf")
	if err := os.WriteFile(conf, []byte("nameserver 127.0.0.53\noptions edns0 trust-ad\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := e.MustIn(sb, "cat", "/etc/resolv.conf"); !strings.Contains(got, "127.0.0.53") {
		t.Fatalf("the sandbox's resolv.conf: %q", got)
	}

	for _, tc := range []struct{ name, flag string }{
		{"over UDP", "+notcp"},
		{"over TCP", "+tcp"},
	} {
		t.Run("dig with the resolv.conf's 127.0.0.53 resolves a handler name "+tc.name, func(t *testing.T) {
			if got := e.MustIn(sb, "dig", "+short", "+time=2", "+tries=1", tc.flag, "my.kv"); got != virtualKV+"\n" {
				t.Errorf("got %q, want %s", got, virtualKV)
			}
		})
	}
	t.Run("any loopback address on port 53 is the daemon too (127.0.0.11)", func(t *testing.T) {
		if got := e.MustIn(sb, "dig", "+short", "+time=2", "+tries=1", "@127.0.0.11", "my.kv"); got != virtualKV+"\n" {
			t.Errorf("got %q", got)
		}
	})
	t.Run("busybox wget resolves through it and reaches the handler", func(t *testing.T) {
		if _, err := os.Stat("/bin/busybox"); err != nil {
			t.Skip("busybox is not installed: run .ci/test, or apt-get install busybox-static")
		}
		e.MustIn(sb, "busybox", "wget", "-qO-", "--post-data", "via loopback dns", "http://my.kv/lo")
		if got := e.MustIn(sb, "busybox", "wget", "-qO-", "http://my.kv/lo"); got != "via loopback dns" {
			t.Errorf("busybox wget: %q", got)
		}
	})
	t.Run("the daemon sees the query as the sandbox's: its policy denies, and says whose", func(t *testing.T) {
		out, _ := e.In(sb, "dig", "+time=2", "+tries=1", "secret.api")
		if !strings.Contains(out, "status: NXDOMAIN") {
			t.Errorf("a name the sandbox's policy denies, asked on 127.0.0.53:\n%s", out)
		}
		if log := e.Log(); !strings.Contains(log, `msg="dns denied" sandbox=loop`) {
			t.Errorf("the daemon did not log the denial as the sandbox's:\n%s", log)
		}
	})
	t.Run("no other loopback port is sent anywhere", func(t *testing.T) {
		// The daemon's own DNS listener (dns_port, 0.0.0.0 in the host's
		// namespace) is not reachable as 127.0.0.1 from inside: only port
		// 53 is captured.
		if out, code := e.In(sb, "dig", "+short", "+time=1", "+tries=1", "@127.0.0.1", "-p", "15353", "my.kv"); code == 0 && strings.Contains(out, virtualKV) {
			t.Errorf("loopback port 15353 reached the daemon: %q", out)
		}
		// Nor is the host's metrics listener (127.0.0.1:9780 there).
		if out, code := e.In(sb, "curl", "-sS", "-m", "2", "http://127.0.0.1:9780/metrics"); code == 0 {
			t.Errorf("the host's loopback metrics answered the sandbox: %.200s", out)
		}
		// A loopback source never leaves the sandbox but as captured DNS:
		// a query from 127.0.0.1 straight to the gateway goes nowhere.
		// (The host's anti-spoofing would drop it too: its counter shows
		// that the sandbox's own guard kept it in.)
		spoofed := e.ruleCounter("raw", "INTERCEPTD-ANTISPOOF", "anti-spoofing")
		if out, code := e.In(sb, "dig", "+short", "+time=1", "+tries=1", "-b", "127.0.0.1", "@"+sb.Gateway, "my.kv"); code == 0 && strings.Contains(out, virtualKV) {
			t.Errorf("a loopback-sourced query reached the daemon: %q", out)
		}
		if n := e.ruleCounter("raw", "INTERCEPTD-ANTISPOOF", "anti-spoofing") - spoofed; n != 0 {
			t.Errorf("%d packets with a loopback source left the sandbox", n)
		}
	})
	t.Run("a restarted daemon sets it up again in the sandboxes it re-adopts", func(t *testing.T) {
		e.MustIn(sb, "nft", "delete", "table", "ip", "interceptd-sandbox") // as in a sandbox of an older version
		e.Stop()
		e.Start()
		if got := e.MustIn(sb, "dig", "+short", "+time=2", "+tries=1", "my.kv"); got != virtualKV+"\n" {
			t.Errorf("after the restart: %q", got)
		}
	})
}
