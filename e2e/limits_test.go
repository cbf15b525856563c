package e2e

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// admin calls the daemon's admin API with curl over its socket.
func (e *Env) admin(method, path, body string) string {
	e.t.Helper()
	args := []string{"-s", "--unix-socket", e.Socket, "-X", method, "http://interceptd" + path}
	if body != "" {
		args = append(args, "--data", body)
	}
	out, err := exec.Command("curl", args...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("curl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// statuses runs n requests to url on one kept-alive connection in sb and
// returns their status codes.
func (e *Env) statuses(sb Sandbox, n int, url string) []string {
	e.t.Helper()
	args := []string{"curl", "-s", "-w", "%{http_code}\n"}
	for range n {
		args = append(args, "-o", "/dev/null", url)
	}
	return strings.Fields(e.MustIn(sb, args...))
}

func count(xs []string, x string) (n int) {
	for _, s := range xs {
		if s == x {
			n++
		}
	}
	return n
}

// secondConnection opens two connections to port 80 from sb and says what
// happened to a request on the second while the first is held open.
const secondConnection = `
import socket
a = socket.create_connection(("192.0.2.2", 80), timeout=3)
try:
    # The reset can land before connect() returns (the kernel completed
    # the handshake, the daemon refused it at once): the same answer.
    b = socket.create_connection(("192.0.2.2", 80), timeout=3)
    b.sendall(b"GET / HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n")
    print("served" if b.recv(100).startswith(b"HTTP/1.1 200") else "closed")
except ConnectionResetError:
    print("reset")
`

func TestASandboxsOwnLimitsReplaceTheDefaultsForItAlone(t *testing.T) {
	e := NewEnv(t, Options{Listen: "  max_requests_per_second_per_sandbox: 50\n", ExtraConfig: "policy:\n  internet: true\nhandlers:\n  - host: my.kv\n    kind: kv\n"})
	free := e.Create("free")
	tight := e.CreateWith("tight", "--max-rps", "2", "--max-conns", "1", "--max-dns-qps", "1")

	// Requests: a burst of twice the rate, then 429, for the tight one only.
	if got := e.statuses(tight, 10, "http://example.test/"); count(got, "200") > 5 || count(got, "429") < 5 {
		t.Errorf("tight (max_rps 2): %v, want a burst of about 4 then 429s", got)
	}
	if got := e.statuses(free, 10, "http://example.test/"); count(got, "200") != 10 {
		t.Errorf("free (the default 50/s): %v, want every request served", got)
	}
	// Connections: a second one while the first is open is reset.
	if out := strings.TrimSpace(e.MustIn(tight, "python3", "-c", secondConnection)); out != "reset" {
		t.Errorf("tight (max_conns 1), second connection: %s, want reset", out)
	}
	if out := strings.TrimSpace(e.MustIn(free, "python3", "-c", secondConnection)); out != "served" {
		t.Errorf("free, second connection: %s, want served", out)
	}
	// DNS: a burst of twice the rate, then REFUSED.
	digs := "for i in 1 2 3 4 5 6; do dig +tries=1 +time=2 my.kv | grep -o 'status: [A-Z]*'; done"
	if out := e.MustIn(tight, "sh", "-c", digs); !strings.Contains(out, "REFUSED") {
		t.Errorf("tight (max_dns_qps 1): six queries at once were all answered:\n%s", out)
	}
	if out := e.MustIn(free, "sh", "-c", digs); strings.Contains(out, "REFUSED") {
		t.Errorf("free: a query was refused:\n%s", out)
	}

	// show says them, the defaults filled in where the sandbox has none.
	var info struct {
		Limits          map[string]int `json:"limits"`
		EffectiveLimits map[string]int `json:"effective_limits"`
	}
	json.Unmarshal([]byte(e.admin("GET", "/v1/sandboxes/free", "")), &info)
	if info.EffectiveLimits["max_rps"] != 50 || info.EffectiveLimits["max_conns"] != 512 {
		t.Errorf("free's effective limits: %v, want the defaults (50 rps, 512 conns)", info.EffectiveLimits)
	}
	if len(info.Limits) != 0 {
		t.Errorf("free has limits of its own: %v", info.Limits)
	}

	// A negative limit is refused, naming it; {} gives the defaults back.
	if out := e.admin("PUT", "/v1/sandboxes/tight/limits", `{"max_rps": -1}`); !strings.Contains(out, "max_rps") || !strings.Contains(out, "negative") {
		t.Errorf("a negative limit: %s", out)
	}
	if _, stderr, code := e.CLI("sandbox", "policy", "tight", "--max-rps", "default", "--max-conns", "default", "--max-dns-qps", "default"); code != 0 {
		t.Fatalf("sandbox policy back to the defaults: %s", stderr)
	}
	if out := strings.TrimSpace(e.MustIn(tight, "python3", "-c", secondConnection)); out != "served" {
		t.Errorf("tight back on the defaults, second connection: %s, want served", out)
	}

	// A sandbox's DNS rate above the default raises the kernel's flood
	// limit, which must not cut it below its own rate.
	e.admin("PUT", "/v1/sandboxes/free/limits", `{"max_dns_qps": 5000}`)
	nft := run(t, "ip", "netns", "exec", e.HostNS, "nft", "list", "table", "ip", "interceptd")
	if !strings.Contains(nft, "limit rate over 5000/second") {
		t.Errorf("the kernel's dns flood limit was not raised to the sandbox's own 5000/s:\n%s", nft)
	}
}
