package e2e

import (
	"strings"
	"testing"
	"time"
)

// holdHellos opens connections to port 443 that never finish their hello
// (one byte of a handshake record), and reports for each whether the daemon
// reset it at once ("reset") or held it ("held"); then, after the hello
// timeout, whether the held ones were cut ("cut").
const holdHellos = `
import socket, time
held, out = [], []
for i in range(6):
    try:
        # The reset can land before connect() returns: the same answer.
        s = socket.create_connection(("192.0.2.3", 443), timeout=3)
        s.sendall(b"\x16")
        s.settimeout(0.5)
        got = s.recv(1)
        out.append("closed" if got == b"" else "answered")
    except socket.timeout:
        out.append("held")
        held.append(s)
    except (ConnectionResetError, BrokenPipeError):
        out.append("reset")
print(" ".join(out))
deadline = time.time() + 15
cut = []
for s in held:
    s.settimeout(max(0.1, deadline - time.time()))
    try:
        got = s.recv(1)
        cut.append("cut" if got == b"" else "answered")
    except ConnectionResetError:
        cut.append("cut")
    except socket.timeout:
        cut.append("still open")
print(" ".join(cut))
`

// A sandbox trickling hellos holds no more connections to the TLS front
// than its cap (the rest are reset at once, outcome limited), and those it
// holds are cut once the hello timeout passes, without a verdict.
func TestHellosThatNeverFinishAreCappedPerSandboxAndCutAfterTheHelloTimeout(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.CreateWith("slow", "--max-conns", "2")
	start := time.Now()
	out := strings.Split(strings.TrimSpace(e.MustIn(sb, "python3", "-c", holdHellos)), "\n")
	took := time.Since(start)
	if len(out) != 2 || out[0] != "held held reset reset reset reset" || out[1] != "cut cut" {
		t.Fatalf("six trickled hellos with a cap of 2: %q, want two held then four reset, and the two cut", out)
	}
	if took < 9*time.Second || took > 16*time.Second {
		t.Errorf("the held hellos were cut after %v, want the 10 s hello timeout", took)
	}
	m := e.Scrape()
	for series, want := range map[string]float64{
		`interceptd_tls_connections_total{outcome="limited"}`:      4,
		`interceptd_tls_connections_total{outcome="hello_failed"}`: 2,
	} {
		if v, ok := sample(m, series); !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", series, v, ok, want)
		}
	}
}
