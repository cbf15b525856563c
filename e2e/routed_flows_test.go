package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// An allowed routed flow (TCP to the test's own server on an allowed CIDR)
// is counted for its sandbox with its bytes, logged once, and nothing else
// is: not intercepted HTTP, not captured DNS, not a refused flow.
func TestAllowedRoutedFlowsAreCountedWithTheirBytesPerSandbox(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.CreateWith("flow", "--internet", "off", "--allow", "192.0.2.0/24")
	off := e.CreateWith("quiet", "--internet", "off")

	// Intercepted HTTP and captured DNS first: neither is a routed flow.
	e.MustIn(sb, "curl", "-sS", "-m", "5", "-X", "PUT", "--data", "x", "http://my.kv/k")
	e.MustIn(sb, "dig", "+short", "+time=2", "+tries=1", "my.kv")
	// A refused one: not counted either.
	if _, code := e.In(off, "curl", "-sS", "-m", "5", "http://"+upstreamIP+":2222/"); code == 0 {
		t.Fatal("a sandbox with internet off reached the upstream")
	}

	// One TCP connection to the test's echo server on 192.0.2.2:2222 (a
	// routed port): 200 KiB up, echoed back.
	body := filepath.Join(t.TempDir(), "body")
	const size = 200 << 10
	if err := os.WriteFile(body, []byte(strings.Repeat("a", size)), 0o644); err != nil {
		t.Fatal(err)
	}
	out := e.MustIn(sb, "curl", "-sS", "-m", "10", "-o", "/dev/null", "-w", "%{size_download}", "--data-binary", "@"+body, "http://"+upstreamIP+":2222/up")
	if n, err := strconv.Atoi(out); err != nil || n < size {
		t.Fatalf("the echo came back short: %s bytes", out)
	}

	m := e.Scrape()
	for _, tc := range []struct {
		name, series string
		min, max     float64
	}{
		{"the one TCP flow is counted once", `interceptd_sandbox_routed_flows_total{proto="tcp",sandbox="flow"}`, 1, 1},
		{"the bytes it sent (the upload, headers included)", `interceptd_sandbox_routed_bytes_total{direction="sent",sandbox="flow"}`, size, size + 64<<10},
		{"the bytes it received (the echo)", `interceptd_sandbox_routed_bytes_total{direction="received",sandbox="flow"}`, size, size + 64<<10},
	} {
		v, ok := sample(m, tc.series)
		if !ok || v < tc.min || v > tc.max {
			t.Errorf("%s: %s = %v (present %v), want %v..%v", tc.name, tc.series, v, ok, tc.min, tc.max)
		}
	}
	for _, absent := range []string{
		`interceptd_sandbox_routed_flows_total{proto="udp",sandbox="flow"}`, // its DNS was captured, not routed
		`interceptd_sandbox_routed_flows_total{proto="tcp",sandbox="quiet"}`,
		`interceptd_sandbox_routed_bytes_total{direction="sent",sandbox="quiet"}`,
	} {
		if v, ok := sample(m, absent); ok && v != 0 {
			t.Errorf("%s = %v, want none", absent, v)
		}
	}
	// The kernel hands logged packets over in batches: wait for it.
	record := `msg="routed flow" sandbox=flow proto=tcp dest=` + upstreamIP + `:2222 decision=allow`
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(e.Log(), record) && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if n := strings.Count(e.Log(), record); n != 1 {
		t.Errorf("the flow was logged as a decision record %d times, want once:\n%s", n, e.Log())
	}

	// A second connection adds one flow; a deleted sandbox's count stays
	// (for the series grace) and includes what it did last.
	e.MustIn(sb, "curl", "-sS", "-m", "5", "-o", "/dev/null", "http://"+upstreamIP+":2222/again")
	if _, _, code := e.CLI("sandbox", "delete", "flow"); code != 0 {
		t.Fatal("deleting the sandbox")
	}
	if v, _ := sample(e.Scrape(), `interceptd_sandbox_routed_flows_total{proto="tcp",sandbox="flow"}`); v != 2 {
		t.Errorf("after a second connection and the delete: %v tcp flows, want 2", v)
	}
}
