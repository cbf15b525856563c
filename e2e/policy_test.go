package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
)

// curlCode runs curl in a sandbox and returns "<status> <body>".
func (e *Env) curl(sb Sandbox, args ...string) string {
	e.t.Helper()
	out, _ := e.In(sb, append([]string{"curl", "-sS", "-m", "5", "-w", " %{http_code}"}, args...)...)
	return out
}

func TestHTTPAndDNSFollowEachSandboxsPolicy(t *testing.T) {
	e := NewEnv(t, Options{})
	off := e.CreateWith("off", "--internet", "off")
	allow := e.CreateWith("allow", "--internet", "off", "--allow", "example.test")
	deny := e.CreateWith("deny", "--deny", "example.test", "--deny", otherIP)
	open := e.Create("open")

	t.Run("internet off denies at once, with the reason", func(t *testing.T) {
		r := e.curlTimed(off, "-m", "5", "http://"+upstreamIP+"/")
		t.Logf("the deny came after %v (curl's own time)", r.Took)
		if r.Took > atOnce {
			t.Errorf("the deny took %v, want at most %v", r.Took, atOnce)
		}
		if r.Status != "403" || !strings.Contains(r.Out, "denied (internet_off)") || !strings.Contains(r.Out, "request id: ") {
			t.Errorf("got %s %q", r.Status, r.Out)
		}
	})
	t.Run("a JSON client gets a JSON deny", func(t *testing.T) {
		out, _ := e.In(off, "curl", "-sS", "-H", "Accept: application/json", "http://"+upstreamIP+"/")
		var body map[string]string
		if err := json.Unmarshal([]byte(out), &body); err != nil || body["reason"] != "internet_off" || body["request_id"] == "" {
			t.Errorf("got %q (%v)", out, err)
		}
		if !strings.Contains(e.Log(), "request_id="+body["request_id"]) {
			t.Errorf("request id %s is not in the decision log", body["request_id"])
		}
	})
	t.Run("handlers still work with internet off", func(t *testing.T) {
		if out := e.curl(off, "-X", "PUT", "--data", "x", "http://my.kv/k"); out != " 204" {
			t.Errorf("got %q", out)
		}
	})
	tests := []struct {
		name   string
		sb     Sandbox
		qname  string
		status string // dig status
	}{
		{"DNS with internet off: a handler name", off, "my.kv", "NOERROR"},
		{"DNS with internet off: another name is NXDOMAIN", off, "example.test", "NXDOMAIN"},
		{"DNS with an allowlist: the allowed name", allow, "example.test", "NOERROR"},
		{"DNS with an allowlist: another name", allow, "other.test", "NXDOMAIN"},
		{"DNS with a denylist: the denied name", deny, "example.test", "NXDOMAIN"},
		{"DNS with internet on: any name", open, "other.test", "NOERROR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := e.MustIn(tt.sb, "dig", "+time=2", "+tries=1", "@"+nowhereIP, tt.qname)
			if !strings.Contains(out, "status: "+tt.status) {
				t.Errorf("dig %s:\n%s", tt.qname, out)
			}
		})
	}
	httpTests := []struct {
		name string
		sb   Sandbox
		args []string
		want string // suffix or substring
	}{
		{"an allowed host passes with internet off", allow, []string{"http://example.test/"}, `"Host":"example.test"`},
		{"another host is not allowed", allow, []string{"-H", "Host: other.test", "http://" + otherIP + "/"}, "denied (not_allowed)"},
		{"a denied host is blocked with internet on", deny, []string{"-H", "Host: example.test", "http://" + upstreamIP + "/"}, "denied (denied_host): example.test matches denied_hosts entry"},
		{"a denied address is blocked whatever the Host", deny, []string{"-H", "Host: whatever.test", "http://" + otherIP + "/"}, "denied (denied_host)"},
		{"a Host that does not resolve to the destination is denied", open, []string{"-H", "Host: example.test", "http://" + otherIP + "/"}, "denied (host_mismatch)"},
		{"a Host that the daemon resolves to it passes", open, []string{"-H", "Host: other.test", "http://" + otherIP + "/"}, `"Host":"other.test"`},
		{"link-local metadata is protected", open, []string{"http://169.254.169.254/latest/meta-data/"}, "denied (protected_destination)"},
	}
	for _, tt := range httpTests {
		t.Run(tt.name, func(t *testing.T) {
			if out := e.curl(tt.sb, tt.args...); !strings.Contains(out, tt.want) {
				t.Errorf("got %q, want %q", out, tt.want)
			}
		})
	}
	t.Run("decisions are counted by reason", func(t *testing.T) {
		m := e.Scrape()
		for _, want := range []string{
			`interceptd_policy_decisions_total{protocol="http",reason="internet_off",result="deny",sandbox="off"}`,
			`interceptd_policy_decisions_total{protocol="dns",reason="not_allowed",result="deny",sandbox="allow"}`,
			`interceptd_policy_decisions_total{protocol="http",reason="host_mismatch",result="deny",sandbox="open"}`,
		} {
			if !strings.Contains(m, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})
}

func TestAPolicyChangeAppliesToTheNextRequestOnAKeptAliveConnection(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.Create("live")
	// An HTTP client whose sockets live in the sandbox's namespace, so one
	// kept-alive connection carries both requests.
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = inNetns(sb.NetnsPath, func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	defer tr.CloseIdleConnections()
	get := func() (int, bool) {
		reused := false
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }})
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+upstreamIP+"/", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, reused
	}
	if code, _ := get(); code != 200 {
		t.Fatalf("before: %d", code)
	}
	if out, errOut, code := e.CLI("sandbox", "policy", "live", "--internet", "off"); code != 0 || !strings.Contains(out, `"internet": false`) {
		t.Fatalf("sandbox policy: %s %s", out, errOut)
	}
	code, reused := get()
	if code != 403 || !reused {
		t.Errorf("after: status %d, connection reused %v; want 403 on the same connection", code, reused)
	}
	out, _, _ := e.CLI("sandbox", "policy", "live")
	if !strings.Contains(out, `"internet": false`) {
		t.Errorf("policy prints %s", out)
	}
	if _, errOut, code := e.CLI("sandbox", "policy", "live", "--allow", "bad pattern"); code != 1 || !strings.Contains(errOut, `"bad pattern"`) {
		t.Errorf("an invalid pattern: exit %d %q", code, errOut)
	}
}
