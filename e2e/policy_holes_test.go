package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The holes a hostile review found in the HTTP and DNS policy (issue 15):
// each test reaches a guarantee by a route other than the one it was built
// for.

func TestADeniedHandlerIsDeniedWhateverRouteReachesIt(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(secretFile, []byte("s3cret-route\n"), 0o600)
	// my.kv gets 198.18.213.1, secret.api 198.18.213.2, stub.test .3 (config
	// order); the proxy's upstream echoes what it gets, secrets included.
	cfg := `handlers:
  - {host: my.kv, kind: kv}
  - host: secret.api
    kind: proxy
    upstream: http://` + upstreamIP + `/
    inject:
      - {header: Authorization, template: "Bearer {secret}", file: ` + secretFile + `}
  - {host: stub.test, kind: respond, body: "stubbed\n"}
`
	e := NewEnv(t, Options{ExtraConfig: cfg})
	d := e.CreateWith("d", "--deny", "my.kv", "--deny", "secret.api")
	open := e.Create("open")
	const kvAddr, proxyAddr = "198.18.213.1", "198.18.213.2"

	tests := []struct {
		name string
		args []string
	}{
		{"a denied kv by its name on another handler's address", []string{"-H", "Host: my.kv", "http://198.18.213.3/x"}},
		{"a denied kv by its address", []string{"http://" + kvAddr + "/x"}},
		{"a denied kv by its address with another Host", []string{"-H", "Host: anything", "http://" + kvAddr + "/x"}},
		{"a denied proxy by its address with another Host", []string{"-H", "Host: anything", "http://" + proxyAddr + "/"}},
		{"a denied proxy by its address with an allowed handler's Host", []string{"-H", "Host: stub.test", "http://" + proxyAddr + "/"}},
		{"a denied proxy by its address with an IP Host", []string{"http://" + proxyAddr + "/"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := e.curl(d, tt.args...)
			if !strings.HasSuffix(out, " 403") || !strings.Contains(out, "denied (denied_host)") {
				t.Errorf("got %q, want a 403 denied_host", out)
			}
			if strings.Contains(out, "s3cret-route") {
				t.Errorf("the injected secret reached the denied sandbox: %q", out)
			}
		})
	}
	t.Run("a denied kv by its address without a Host (HTTP/1.0)", func(t *testing.T) {
		if got := e.raw(d, kvAddr+":80", "GET /x HTTP/1.0\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 403") {
			t.Errorf("got %q, want 403", got)
		}
	})
	t.Run("an allowed handler still answers by name", func(t *testing.T) {
		if out := e.curl(d, "http://stub.test/"); out != "stubbed\n 200" {
			t.Errorf("got %q", out)
		}
	})
	t.Run("a sandbox that denies nothing reaches the proxy by its address", func(t *testing.T) {
		if out := e.curl(open, "http://"+proxyAddr+"/"); !strings.HasSuffix(out, " 200") || !strings.Contains(out, `"Host":"`+upstreamIP+`"`) {
			t.Errorf("got %q", out)
		}
	})
}

// withLAN gives the test's upstream namespace a "LAN" address (RFC 1918)
// serving the echo, routed from the daemon's host namespace.
func (e *Env) withLAN() {
	e.t.Helper()
	run(e.t, "ip", "-n", e.UpNS, "addr", "add", lanIP+"/24", "dev", "eth0")
	run(e.t, "ip", "-n", e.HostNS, "route", "add", lanIP+"/32", "via", upstreamIP)
	e.serveEcho(lanIP + ":80")
}

func TestDNSAnswersNeverOpenProtectedOrPrivateDestinations(t *testing.T) {
	e := NewEnv(t, Options{})
	e.withLAN()
	g := e.CreateWith("g", "--allow", "*.good.test")
	lan := e.CreateWith("lan", "--allow", "*.good.test", "--allow", "192.168.77.0/24")
	open := e.Create("open")

	dig := func(sb Sandbox, name string) string {
		return e.MustIn(sb, "dig", "+time=2", "+tries=1", "@"+nowhereIP, name)
	}
	t.Run("a name pointed at the metadata address is refused", func(t *testing.T) {
		out := dig(g, "meta.good.test")
		if strings.Contains(out, "169.254.169.254") || !strings.Contains(out, "status: NXDOMAIN") {
			t.Errorf("dig meta.good.test:\n%s", out)
		}
	})
	t.Run("an answer keeps its other addresses and loses the protected one", func(t *testing.T) {
		out := dig(g, "mixed.good.test")
		if strings.Contains(out, "169.254.169.254") || !strings.Contains(out, upstreamIP) {
			t.Errorf("dig mixed.good.test:\n%s", out)
		}
	})
	t.Run("an answer loses an address in 0.0.0.0/8, which the kernel rules protect too", func(t *testing.T) {
		out := dig(g, "zero.good.test")
		if strings.Contains(out, "0.1.2.3") || !strings.Contains(out, upstreamIP) {
			t.Errorf("dig zero.good.test:\n%s", out)
		}
	})
	t.Run("a public name rebound to the LAN is refused", func(t *testing.T) {
		for _, sb := range []Sandbox{g, open} {
			if out := dig(sb, "lan.good.test"); strings.Contains(out, lanIP) {
				t.Errorf("%s: dig lan.good.test:\n%s", sb.Name, out)
			}
		}
	})
	t.Run("an explicit CIDR entry lets the LAN answer through", func(t *testing.T) {
		if out := dig(lan, "lan.good.test"); !strings.Contains(out, lanIP) {
			t.Errorf("dig lan.good.test:\n%s", out)
		}
	})
	t.Run("the refusals are logged with their reason", func(t *testing.T) {
		log := e.Log()
		for _, want := range []string{"reason=protected_destination", "reason=private_destination"} {
			if !strings.Contains(log, "dns answer refused") || !strings.Contains(log, want) {
				t.Errorf("the log has no dns refusal with %s", want)
			}
		}
	})
	httpTests := []struct {
		name string
		sb   Sandbox
		args []string
		want string
	}{
		{"HTTP to the metadata address under an allowed name is protected", g, []string{"-H", "Host: meta.good.test", "http://169.254.169.254/"}, "denied (protected_destination)"},
		{"HTTP to the LAN with internet on is private", open, []string{"http://" + lanIP + "/"}, "denied (private_destination)"},
		{"HTTP to the LAN under a rebound name is private", g, []string{"-H", "Host: lan.good.test", "http://" + lanIP + "/"}, "denied (private_destination)"},
		{"HTTP to 0.0.0.0/8 is protected", open, []string{"http://0.1.2.3/"}, "denied (protected_destination)"},
		{"HTTP to CGNAT space is private", open, []string{"http://100.64.1.1/"}, "denied (private_destination)"},
		{"HTTP to 10/8 is private", open, []string{"http://10.99.0.1/"}, "denied (private_destination)"},
		{"HTTP to 198.18/15 outside the virtual range is private", open, []string{"http://198.19.0.1/"}, "denied (private_destination)"},
		{"HTTP to the LAN with an explicit CIDR entry passes", lan, []string{"http://" + lanIP + "/"}, `"Host":"` + lanIP + `"`},
	}
	for _, tt := range httpTests {
		t.Run(tt.name, func(t *testing.T) {
			if out := e.curl(tt.sb, tt.args...); !strings.Contains(out, tt.want) {
				t.Errorf("got %q, want %q", out, tt.want)
			}
		})
	}
}

func TestTheHostCheckNeverResolvesANameTheSandboxCouldNotResolve(t *testing.T) {
	e := NewEnv(t, Options{})
	x := e.CreateWith("x", "--internet", "off", "--allow", upstreamIP)
	for i, host := range []string{"c2VjcmV0.attacker.test", "bW9yZQ.attacker.test"} {
		out := e.curl(x, "-H", "Host: "+host, "http://"+upstreamIP+"/")
		if !strings.Contains(out, "denied (host_mismatch)") {
			t.Errorf("request %d: got %q, want host_mismatch", i, out)
		}
	}
	for _, name := range e.Asked() {
		if strings.Contains(name, "attacker") {
			t.Errorf("the upstream resolver was asked %s on the sandbox's behalf", name)
		}
	}
	// A name the sandbox may resolve is still checked against the daemon's
	// own lookup, so a client that never asked DNS is served.
	open := e.Create("open")
	if out := e.curl(open, "-H", "Host: other.test", "http://"+otherIP+"/"); !strings.Contains(out, `"Host":"other.test"`) {
		t.Errorf("an allowed name the daemon resolves: %q", out)
	}
}

func TestAddressesOfADeniedNameAreDeniedWhateverTheHost(t *testing.T) {
	e := NewEnv(t, Options{})
	v := e.Create("v")      // learns x.evil.test, then denies it
	w := e.Create("w")      // resolves x.evil.test for itself
	fresh := e.Create("fr") // denies it from the start and never resolves it
	bystander := e.Create("by")
	late := e.CreateWith("late", "--deny", "*.evil.test") // denies it before anyone resolves it
	e.MustIn(v, "dig", "+short", "@"+nowhereIP, "x.evil.test")
	e.MustIn(w, "dig", "+short", "@"+nowhereIP, "alias.good.test")
	for _, sb := range []string{"v", "fr"} {
		if _, errOut, code := e.CLI("sandbox", "policy", sb, "--deny", "*.evil.test"); code != 0 {
			t.Fatalf("sandbox policy %s: %s", sb, errOut)
		}
	}
	for _, sb := range []Sandbox{v, fresh, late} {
		for _, tt := range []struct {
			name string
			args []string
		}{
			{"an IP Host", []string{"http://" + otherIP + "/"}},
			{"an IPv4-mapped IPv6 Host", []string{"-H", "Host: [::ffff:" + otherIP + "]", "http://" + otherIP + "/"}},
			{"an IPv4-mapped IPv6 Host with a port", []string{"-H", "Host: [::FFFF:" + otherIP + "]:80", "http://" + otherIP + "/"}},
		} {
			t.Run(sb.Name+": "+tt.name, func(t *testing.T) {
				if out := e.curl(sb, tt.args...); !strings.Contains(out, "denied (denied_host)") || !strings.Contains(out, "x.evil.test") {
					t.Errorf("got %q, want denied_host naming x.evil.test", out)
				}
			})
		}
		t.Run(sb.Name+": no Host (HTTP/1.0)", func(t *testing.T) {
			if got := e.raw(sb, otherIP+":80", "GET / HTTP/1.0\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 403") {
				t.Errorf("got %q, want 403", got)
			}
		})
	}
	for _, sb := range []Sandbox{v, fresh, late} {
		t.Run(sb.Name+": routed TCP to the address is refused at once", func(t *testing.T) {
			if out, code := e.In(sb, "curl", "-sS", "-m", "3", "http://"+otherIP+":2222/"); code != 7 {
				t.Errorf("curl exit %d, want 7 (refused): %s", code, out)
			}
		})
	}
	t.Run("routed TCP from a sandbox that denies nothing passes", func(t *testing.T) {
		if out, code := e.In(bystander, "curl", "-sS", "-m", "3", "http://"+otherIP+":2222/"); code != 0 {
			t.Errorf("curl exit %d: %s", code, out)
		}
	})
	t.Run("a mapped literal is logged as the IPv4 address", func(t *testing.T) {
		if log := e.Log(); strings.Contains(log, "host=::ffff:") || !strings.Contains(log, "host="+otherIP+" dest="+otherIP+":80") {
			t.Errorf("a decision record names the mapped literal, or none names %s", otherIP)
		}
	})
	t.Run("a sandbox that denies nothing still reaches the address", func(t *testing.T) {
		if out := e.curl(bystander, "http://"+otherIP+"/"); !strings.HasSuffix(out, " 200") {
			t.Errorf("got %q", out)
		}
	})
	t.Run("a CNAME into the denied zone is denied", func(t *testing.T) {
		out := e.MustIn(v, "dig", "+time=2", "+tries=1", "@"+nowhereIP, "alias.good.test")
		if strings.Contains(out, otherIP) || !strings.Contains(out, "status: NXDOMAIN") {
			t.Errorf("dig alias.good.test:\n%s", out)
		}
	})
}
