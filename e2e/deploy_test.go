package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// need returns the path of a tool CI installs; outside CI a missing one skips.
func need(t *testing.T, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed: .ci/run must install it", tool)
		}
		t.Skipf("%s is not installed", tool)
	}
	return p
}

func TestTheSystemdUnitVerifies(t *testing.T) {
	requireRoot(t)
	analyze := need(t, "systemd-analyze")
	unit, err := os.ReadFile("../deploy/systemd/interceptd.service")
	if err != nil {
		t.Fatal(err)
	}
	// verify checks that ExecStart exists: point it at the test build.
	path := filepath.Join(t.TempDir(), "interceptd.service")
	os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/interceptd", binary)), 0o644)
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, want := range []string{"Type=notify", "WatchdogSec=", "Restart=on-failure", "CapabilityBoundingSet=", "ProtectSystem=", "StateDirectory=interceptd", "RuntimeDirectory=interceptd", "ConfigurationDirectory=interceptd"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the unit lacks %s", want)
		}
	}
}

func TestTheDaemonSpeaksSdNotify(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	e := NewEnv(t, Options{Env: []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=200000"}})
	expect := func(want string) {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case m := <-msgs:
				if strings.Contains(m, want) {
					return
				}
			case <-deadline:
				t.Fatalf("no %s from the daemon", want)
			}
		}
	}
	expect("READY=1")
	expect("WATCHDOG=1")
	e.daemon.Process.Signal(syscall.SIGHUP)
	expect("RELOADING=1")
	expect("READY=1")
	e.Stop()
	expect("STOPPING=1")
}

func TestStatusSummarisesTheDaemon(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.CreateWith("s1", "--internet", "off")
	e.MustIn(sb, "curl", "-sS", "-X", "PUT", "--data", "v", "http://my.kv/k")
	e.In(sb, "curl", "-sS", "http://"+upstreamIP+"/")
	out, errOut, code := e.CLI("status")
	if code != 0 {
		t.Fatalf("status: %s", errOut)
	}
	for _, want := range []string{"version", "uptime", "sandboxes    1", "requests     2", "denials      1", "store size"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	out, _, _ = e.CLI("status", "--json")
	if !strings.Contains(out, `"sandboxes": 1`) {
		t.Errorf("status --json:\n%s", out)
	}
	// The totals are since the start: a deleted sandbox's requests and
	// denials stay counted (the metrics drop its series).
	if _, errOut, code := e.CLI("sandbox", "delete", "s1"); code != 0 {
		t.Fatal(errOut)
	}
	out, _, _ = e.CLI("status")
	for _, want := range []string{"sandboxes    0", "requests     2", "denials      1"} {
		if !strings.Contains(out, want) {
			t.Errorf("status after the sandbox's delete lacks %q:\n%s", want, out)
		}
	}
}
