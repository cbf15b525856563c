package e2e

import (
	"strings"
	"testing"
	"time"
)

func TestNonHTTPTrafficFollowsThePolicyAndIsRefusedAtOnce(t *testing.T) {
	e := NewEnv(t, Options{})
	open := e.Create("open")
	off := e.CreateWith("off", "--internet", "off")
	port := e.CreateWith("port", "--internet", "off", "--allow", upstreamIP+":2222")
	named := e.CreateWith("named", "--internet", "off", "--allow", "example.test")
	deny := e.CreateWith("deny", "--deny", otherIP)

	tcp := func(sb Sandbox, target string) (string, int, time.Duration) {
		r := e.curlTimed(sb, "-m", "5", "http://"+target+"/")
		return r.Out, r.Exit, r.Took
	}
	tests := []struct {
		name   string
		sb     Sandbox
		target string
		pass   bool
	}{
		{"TCP to another port passes with internet on", open, upstreamIP + ":2222", true},
		{"TCP to another port is refused with internet off", off, upstreamIP + ":2222", false},
		{"an allowed IP:port passes with internet off", port, upstreamIP + ":2222", true},
		{"another address is refused with that allowlist", port, otherIP + ":2222", false},
		{"a denied address is refused with internet on", deny, otherIP + ":2222", false},
		{"another address passes beside that denylist", deny, upstreamIP + ":2222", true},
		{"a protected destination is refused with internet on", open, "169.254.169.254:2222", false},
		{"another sandbox is refused", open, off.Addr + ":2222", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, code, d := tcp(tt.sb, tt.target)
			if tt.pass && (code != 0 || !strings.Contains(out, `"Host":"`)) {
				t.Fatalf("did not pass (exit %d): %s", code, out)
			}
			if !tt.pass {
				if code != 7 {
					t.Fatalf("curl exit %d, want 7 (refused at once): %s", code, out)
				}
				t.Logf("refused after %v (curl's own time)", d)
				if d > atOnce {
					t.Errorf("refusal took %v, want at most %v", d, atOnce)
				}
			}
		})
	}
	t.Run("an address DNS gave for an allowed name passes, on any port", func(t *testing.T) {
		if out, code, _ := tcp(named, "example.test:2222"); code != 0 {
			t.Fatalf("exit %d: %s", code, out)
		}
		if _, code, _ := tcp(named, otherIP+":2222"); code != 7 {
			t.Errorf("an address it was not given: exit %d", code)
		}
	})
	t.Run("UDP follows the policy", func(t *testing.T) {
		out := e.MustIn(open, "dig", "+short", "+time=2", "+tries=1", "-p", "5300", "@"+upstreamIP, "example.test")
		if out != upstreamIP+"\n" {
			t.Errorf("internet on: %q", out)
		}
		start := time.Now()
		out, code := e.In(off, "dig", "+time=10", "+tries=1", "-p", "5300", "@"+upstreamIP, "example.test")
		d := time.Since(start)
		t.Logf("internet off: UDP failed after %v (dig run included)", d)
		if code == 0 || !strings.Contains(out, "unreachable") {
			t.Errorf("internet off: not refused (dig exit %d):\n%s", code, out)
		} else if d > digAtOnce {
			t.Errorf("internet off: UDP refused after %v, not at once (want at most %v):\n%s", d, digAtOnce, out)
		}
	})
	t.Run("ICMP follows the policy", func(t *testing.T) {
		if out, code := e.In(open, "busybox", "ping", "-c", "1", "-W", "2", upstreamIP); code != 0 {
			t.Errorf("internet on: %s", out)
		}
		if out, code := e.In(off, "busybox", "ping", "-c", "1", "-W", "2", upstreamIP); code == 0 {
			t.Errorf("internet off: %s", out)
		}
	})
	t.Run("refused flows are logged and counted with their reason", func(t *testing.T) {
		deadline := time.Now().Add(5 * time.Second)
		want := `msg="refused flow" sandbox=off proto=tcp dest=` + upstreamIP + `:2222 decision=deny reason=internet_off`
		for !strings.Contains(e.Log(), want) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if !strings.Contains(e.Log(), want) {
			t.Errorf("the log lacks %s", want)
		}
		m := e.Scrape()
		for _, w := range []string{
			`interceptd_policy_decisions_total{protocol="tcp",reason="internet_off",result="deny",sandbox="off"}`,
			`interceptd_policy_decisions_total{protocol="tcp",reason="denied_host",result="deny",sandbox="deny"}`,
			`interceptd_policy_decisions_total{protocol="tcp",reason="protected_destination",result="deny",sandbox="open"}`,
			`interceptd_policy_decisions_total{protocol="udp",reason="internet_off",result="deny",sandbox="off"}`,
			`interceptd_policy_decisions_total{protocol="icmp",reason="internet_off",result="deny",sandbox="off"}`,
		} {
			if !strings.Contains(m, w) {
				t.Errorf("metrics lack %s", w)
			}
		}
	})
	t.Run("a policy change applies to the next connection", func(t *testing.T) {
		e.CLI("sandbox", "policy", "off", "--internet", "on")
		if out, code, _ := tcp(off, upstreamIP+":2222"); code != 0 {
			t.Errorf("after internet on: exit %d %s", code, out)
		}
		e.CLI("sandbox", "policy", "off", "--internet", "off")
		if _, code, _ := tcp(off, upstreamIP+":2222"); code != 7 {
			t.Errorf("after internet off again: exit %d", code)
		}
	})
}
