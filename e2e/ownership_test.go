package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Two daemons on one machine with one namespace prefix (a staging daemon, a
// test instance, deploy/try.sh beside the service): neither ever removes the
// other's sandboxes, at start, at cleanup or at restart.
func TestTwoDaemonsOnOnePrefixNeverDestroyEachOthersSandboxes(t *testing.T) {
	e1 := NewEnv(t, Options{})
	sb1 := e1.Create("probe1")
	e1.MustIn(sb1, "curl", "-sS", "-m", "5", "-X", "PUT", "--data", "kept", "http://my.kv/k")
	works := func(when string) {
		t.Helper()
		if got, code := e1.In(sb1, "curl", "-sS", "-m", "5", "http://my.kv/k"); code != 0 || got != "kept" {
			t.Errorf("%s: the first daemon's sandbox answered %q (exit %d)", when, got, code)
		}
	}

	// While the first runs, the second refuses to start, naming it.
	e2 := NewEnv(t, Options{Prefix: e1.Prefix, NoStart: true})
	if e2.TryStart() {
		t.Fatalf("a second daemon started on a prefix in use:\n%s", e2.Log())
	}
	if log := e2.Log(); !strings.Contains(log, "is used by the running daemon of "+filepath.Join(e1.Dir, "data")) {
		t.Errorf("the refusal does not name the other daemon:\n%s", log)
	}
	works("after the second daemon's refused start")

	// The first stops (its sandboxes stay); the second starts on the same
	// prefix, makes one of its own, and leaves the first's alone.
	e1.Stop()
	if !e2.TryStart() {
		t.Fatalf("the second daemon did not start once the first stopped:\n%s", e2.Log())
	}
	if _, err := os.Stat(sb1.NetnsPath); err != nil {
		t.Fatalf("the second daemon's start removed the first's namespace: %v", err)
	}
	if !strings.Contains(e2.Log(), `msg="leaving a namespace this daemon cannot prove it made" netns=`+e1.Prefix+`probe1`) {
		t.Errorf("the second daemon did not say what it left:\n%s", e2.Log())
	}
	sb2 := e2.Create("probe2")
	// The second's cleanup removes its own and says it left the first's.
	e2.Stop()
	// In the second's host namespace, as the teardown runs it.
	raw, err := exec.Command("nsenter", "--net=/run/netns/"+e2.HostNS, binary, "cleanup", "--config", e2.Config).CombinedOutput()
	if out := string(raw); err != nil || !strings.Contains(out, "removed namespace "+sb2.Netns) || !strings.Contains(out, "left namespace "+sb1.Netns) {
		t.Errorf("the second's cleanup (%v): %s", err, out)
	}
	if _, err := os.Stat(sb1.NetnsPath); err != nil {
		t.Fatalf("the second daemon's cleanup removed the first's namespace: %v", err)
	}
	if _, err := os.Stat(sb2.NetnsPath); err == nil {
		t.Errorf("the second's cleanup left its own namespace")
	}

	// The first comes back: its sandbox is re-adopted and works.
	e1.Start()
	works("after the first daemon's restart")
	if list, _, _ := e1.CLI("sandbox", "list"); !strings.Contains(list, "probe1") || strings.Contains(list, "LOST") {
		t.Errorf("the first daemon's list:\n%s", list)
	}
}

func TestADaemonNoticesWhenASandboxsNamespaceDisappears(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.Create("vanish")
	run(t, "ip", "netns", "del", sb.Netns) // someone else's doing
	var list string
	for i := 0; i < 100 && !strings.Contains(list, "LOST"); i++ {
		list, _, _ = e.CLI("sandbox", "list")
		if !strings.Contains(list, "LOST") {
			run(t, "sleep", "0.1")
		}
	}
	if !strings.Contains(list, "vanish") || !strings.Contains(list, "LOST") {
		t.Fatalf("sandbox list does not show the lost sandbox:\n%s", list)
	}
	if st, _, _ := e.CLI("status"); !strings.Contains(st, "sandboxes lost") {
		t.Errorf("status does not count it:\n%s", st)
	}
	if !strings.Contains(e.Log(), `msg="a sandbox's namespace disappeared under the daemon" sandbox=vanish`) {
		t.Errorf("not logged:\n%s", e.Log())
	}
	if v, ok := sample(e.Scrape(), "interceptd_sandbox_lost_total"); !ok || v != 1 {
		t.Errorf("interceptd_sandbox_lost_total = %v (present %v)", v, ok)
	}
	// Deleting it is still possible, and clean.
	if _, errOut, code := e.CLI("sandbox", "delete", "vanish"); code != 0 {
		t.Errorf("deleting the lost sandbox: %s", errOut)
	}
}
