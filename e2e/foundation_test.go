package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	icdnetns "github.com/interceptd/interceptd/netns"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

func TestSandboxLifecycleThroughTheCLI(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.Create("web1")
	if sb.Addr == "" || sb.Gateway == "" {
		t.Fatalf("sandbox without addresses: %+v", sb)
	}
	out, _, code := e.CLI("sandbox", "list")
	if code != 0 || !strings.Contains(out, "web1") || !strings.Contains(out, sb.Addr) {
		t.Fatalf("list (exit %d):\n%s", code, out)
	}
	if _, errOut, code := e.CLI("sandbox", "create", "web1"); code != 1 || !strings.Contains(errOut, "already exists") {
		t.Errorf("creating web1 twice: exit %d, %q", code, errOut)
	}
	if _, errOut, code := e.CLI("sandbox", "create", "../etc"); code != 1 || !strings.Contains(errOut, "invalid sandbox name") {
		t.Errorf("creating ../etc: exit %d, %q", code, errOut)
	}
	if out, _ := exec.Command("ip", "netns", "list").Output(); !strings.Contains(string(out), sb.Netns) {
		t.Errorf("ip netns list does not show %s:\n%s", sb.Netns, out)
	}
	resolv := "/etc/netns/" + sb.Netns + "/resolv.conf"
	if b, err := os.ReadFile(resolv); err != nil || !strings.Contains(string(b), "nameserver "+sb.Gateway) {
		t.Errorf("%s: %q %v", resolv, b, err)
	}
	if fi, err := os.Stat(resolv); err == nil && fi.Mode().Perm()&0o004 == 0 {
		t.Errorf("%s is not world-readable: %v", resolv, fi.Mode())
	}
	if _, errOut, code := e.CLI("cleanup", "--config", e.Config, "--admin-socket", e.Socket); code != 1 || !strings.Contains(errOut, "a daemon is running") {
		t.Errorf("cleanup under a running daemon: exit %d, %q", code, errOut)
	}
	if _, errOut, code := e.CLI("sandbox", "delete", "web1"); code != 0 {
		t.Fatalf("delete: %s", errOut)
	}
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), sb.Netns) {
		t.Errorf("namespace %s survived delete", sb.Netns)
	}
	if _, err := os.Stat("/etc/netns/" + sb.Netns); !os.IsNotExist(err) {
		t.Errorf("/etc/netns/%s survived delete: %v", sb.Netns, err)
	}
	if _, errOut, code := e.CLI("sandbox", "delete", "web1"); code != 1 || !strings.Contains(errOut, "no such sandbox") {
		t.Errorf("deleting twice: exit %d, %q", code, errOut)
	}
}

func TestDNSIsCapturedWhateverResolverTheSandboxUses(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.Create("dns1")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"a handler name over UDP to a server that does not exist", []string{"dig", "+short", "+time=2", "+tries=1", "@" + nowhereIP, "my.kv"}, virtualKV + "\n"},
		{"a handler name over TCP", []string{"dig", "+short", "+tcp", "+time=2", "+tries=1", "@" + nowhereIP, "my.kv"}, virtualKV + "\n"},
		{"a handler name in capitals", []string{"dig", "+short", "+time=2", "+tries=1", "@" + nowhereIP, "MY.KV"}, virtualKV + "\n"},
		{"AAAA for a handler name is empty", []string{"dig", "+short", "+time=2", "+tries=1", "@" + nowhereIP, "my.kv", "AAAA"}, ""},
		{"another name is answered by the upstream", []string{"dig", "+short", "+time=2", "+tries=1", "@" + nowhereIP, "example.test"}, upstreamIP + "\n"},
		{"even when asked of the upstream itself", []string{"dig", "+short", "+time=2", "+tries=1", "@" + upstreamIP, "my.kv"}, virtualKV + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := e.MustIn(sb, tt.args...); got != tt.want {
				t.Errorf("%v = %q, want %q", tt.args, got, tt.want)
			}
		})
	}
	t.Run("AAAA is NOERROR, not NXDOMAIN", func(t *testing.T) {
		out := e.MustIn(sb, "dig", "+time=2", "+tries=1", "@"+nowhereIP, "my.kv", "AAAA")
		if !strings.Contains(out, "status: NOERROR") {
			t.Errorf("dig AAAA:\n%s", out)
		}
	})
	t.Run("nslookup with the sandbox's own resolv.conf", func(t *testing.T) {
		out := e.MustIn(sb, "nslookup", "my.kv")
		if !strings.Contains(out, virtualKV) {
			t.Errorf("nslookup my.kv:\n%s", out)
		}
	})
}

func TestAFailingUpstreamIsAServfailWithinTheTimeout(t *testing.T) {
	// 192.0.2.2:5399 has nothing listening: refused at once. 192.0.2.3:53
	// refuses too until the test binds it to a socket that reads and drops
	// every query: an upstream that is there but never answers, so the
	// shim can only give up at dns.timeout.
	e := NewEnv(t, Options{DNS: "dns:\n  upstreams: [\"192.0.2.2:5399\", \"192.0.2.3:53\"]\n  timeout: 500ms\n"})
	sb := e.Create("sf")
	servfail := func(t *testing.T) time.Duration {
		t.Helper()
		out, code := e.In(sb, "dig", "+time=10", "+tries=1", "@"+nowhereIP, "example.test")
		if code != 0 || !strings.Contains(out, "status: SERVFAIL") {
			t.Fatalf("dig (exit %d) did not get a SERVFAIL:\n%s", code, out)
		}
		m := queryTime.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("dig printed no query time:\n%s", out)
		}
		ms, _ := strconv.Atoi(m[1])
		return time.Duration(ms) * time.Millisecond
	}
	t.Run("upstreams that refuse: SERVFAIL at once", func(t *testing.T) {
		d := servfail(t)
		t.Logf("SERVFAIL after %v (dns.timeout 500ms)", d)
		// Refusals end the wait: this one must not have waited the timeout.
		if d >= 500*time.Millisecond {
			t.Errorf("SERVFAIL after %v: the shim waited out dns.timeout for upstreams that refused", d)
		}
	})
	t.Run("an upstream that never answers: SERVFAIL after dns.timeout", func(t *testing.T) {
		asked := e.silentUDP(otherIP + ":53")
		d := servfail(t)
		t.Logf("SERVFAIL after %v (dns.timeout 500ms); the silent upstream got %d queries", d, asked.Load())
		if asked.Load() == 0 {
			t.Fatal("the silent upstream was never asked")
		}
		// dig's clock starts before the shim's, so it waited at least the
		// timeout; the upper bound is generous (a busy machine), the point
		// is that it is bounded (dig itself would wait 10 s).
		if d < 450*time.Millisecond || d > 5*time.Second {
			t.Errorf("SERVFAIL after %v, want about dns.timeout (500ms): between 450ms and 5s", d)
		}
	})
}

// silentUDP binds addr in the upstream namespace to a socket that reads
// and drops every datagram (no answer, no port-unreachable either), and
// counts them.
func (e *Env) silentUDP(addr string) *atomic.Int64 {
	e.t.Helper()
	var pc net.PacketConn
	if err := inNetns("/run/netns/"+e.UpNS, func() (err error) { pc, err = net.ListenPacket("udp4", addr); return err }); err != nil {
		e.t.Fatalf("listening on udp %s in the upstream namespace: %v", addr, err)
	}
	e.t.Cleanup(func() { pc.Close() })
	var n atomic.Int64
	go func() {
		buf := make([]byte, 65535)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			n.Add(1)
		}
	}()
	return &n
}

func TestKVRoundTripWithRealClients(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.Create("kv1")
	code := func(args ...string) string {
		return e.MustIn(sb, append([]string{"curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}"}, args...)...)
	}
	if got := code("-X", "PUT", "--data", "hello", "http://my.kv/greeting"); got != "204" {
		t.Fatalf("PUT: %s", got)
	}
	if got := e.MustIn(sb, "curl", "-sS", "-m", "5", "http://my.kv/greeting"); got != "hello" {
		t.Fatalf("GET: %q", got)
	}
	if _, err := exec.LookPath("busybox"); err == nil {
		// busybox wget can only POST: a POST to a key writes it.
		e.MustIn(sb, "busybox", "wget", "-qO-", "--post-data", "from wget", "http://my.kv/posted")
		if got := e.MustIn(sb, "busybox", "wget", "-qO-", "http://my.kv/posted"); got != "from wget" {
			t.Errorf("busybox wget POST then GET: %q", got)
		}
		if got := e.MustIn(sb, "busybox", "wget", "-qO-", "http://my.kv/greeting"); got != "hello" {
			t.Errorf("busybox wget: %q", got)
		}
	} else {
		t.Error("busybox is not installed (apt-get install busybox-static)")
	}
	if got := e.MustIn(sb, "curl", "-sS", "-m", "5", "http://"+virtualKV+"/greeting"); got != "hello" {
		t.Errorf("GET by virtual address: %q", got)
	}
	if got := code("-X", "DELETE", "http://my.kv/greeting"); got != "204" {
		t.Fatalf("DELETE: %s", got)
	}
	if got := code("http://my.kv/greeting"); got != "404" {
		t.Fatalf("GET after DELETE: %s", got)
	}
	t.Run("another sandbox sees the shared namespace", func(t *testing.T) {
		other := e.Create("kv2")
		e.MustIn(sb, "curl", "-sS", "-m", "5", "-X", "PUT", "--data", "shared", "http://my.kv/k")
		if got := e.MustIn(other, "curl", "-sS", "-m", "5", "http://my.kv/k"); got != "shared" {
			t.Errorf("kv2 read %q", got)
		}
	})
}

func TestAnUnhandledHostIsForwardedUnchanged(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.Create("fw")
	out := e.MustIn(sb, "curl", "-sS", "-m", "5",
		"-H", "X-Test: yes", "-H", "X-Forwarded-For: 203.0.113.9", "-A", "agent/1",
		"http://example.test/some/path?q=1&r=%2F")
	var echo Echo
	if err := json.Unmarshal([]byte(out), &echo); err != nil {
		t.Fatalf("upstream answer %q: %v", out, err)
	}
	checks := []struct{ what, got, want string }{
		{"method", echo.Method, "GET"},
		{"Host", echo.Host, "example.test"},
		{"request URI", echo.URI, "/some/path?q=1&r=%2F"},
		{"X-Test", echo.Header.Get("X-Test"), "yes"},
		{"X-Forwarded-For", strings.Join(echo.Header.Values("X-Forwarded-For"), ","), "203.0.113.9"},
		{"User-Agent", echo.Header.Get("User-Agent"), "agent/1"},
		{"Accept", echo.Header.Get("Accept"), "*/*"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s reached upstream as %q, want %q", c.what, c.got, c.want)
		}
	}
	t.Run("a POST body arrives whole", func(t *testing.T) {
		out := e.MustIn(sb, "curl", "-sS", "-m", "5", "--data-binary", "payload-123", "http://example.test/post")
		json.Unmarshal([]byte(out), &echo)
		if echo.Method != "POST" || echo.Body != "payload-123" {
			t.Errorf("upstream saw %s %q", echo.Method, echo.Body)
		}
	})
}

var dnsLine = regexp.MustCompile(`(?m)^interceptd_dns_queries_total\{[^}]*\} (\S+)$`)

func dnsQueries(metrics string) float64 {
	var n float64
	for _, m := range dnsLine.FindAllStringSubmatch(metrics, -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		n += v
	}
	return n
}

// countingListener counts the connections a test listener accepts.
func countAccepts(ln net.Listener) *atomic.Int64 {
	var n atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Write([]byte("HTTP/1.0 200 OK\r\n\r\nhost service\n"))
			c.Close()
		}
	}()
	return &n
}

func TestASandboxCannotReachTheHostOrOtherSandboxes(t *testing.T) {
	e := NewEnv(t, Options{})
	a, b := e.Create("iso-a"), e.Create("iso-b")
	hostNS := "/run/netns/" + e.HostNS
	hostSvc := countAccepts(e.ListenIn(hostNS, "0.0.0.0:2222"))
	hostHTTP := countAccepts(e.ListenIn(hostNS, "0.0.0.0:80"))
	peerSvc := countAccepts(e.ListenIn(b.NetnsPath, b.Addr+":8080"))
	peerHTTP := countAccepts(e.ListenIn(b.NetnsPath, b.Addr+":80"))

	tests := []struct {
		name     string
		url      string
		wantCode int    // curl exit code
		wantBody string // for answered requests
	}{
		{"a TCP service on the gateway is refused", "http://" + a.Gateway + ":2222/", 7, ""},
		{"a TCP service on another host address is refused", "http://" + hostUpIP + ":2222/", 7, ""},
		{"port 80 on the gateway is denied by the router", "http://" + a.Gateway + "/", 22, ""},
		{"port 80 on another host address is denied by the router", "http://" + hostUpIP + "/", 22, ""},
		{"another sandbox's service is refused", "http://" + b.Addr + ":8080/", 7, ""},
		{"another sandbox's port 80 is denied by the router", "http://" + b.Addr + "/", 22, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, code := e.In(a, "curl", "-sS", "-f", "-m", "5", tt.url)
			if code != tt.wantCode {
				t.Errorf("curl %s: exit %d, want %d\n%s", tt.url, code, tt.wantCode, out)
			}
		})
	}
	t.Run("a denied request says why", func(t *testing.T) {
		out := e.MustIn(a, "curl", "-sS", "-m", "5", "http://"+a.Gateway+"/")
		if !strings.Contains(out, "interceptd: denied (protected_destination): destination "+a.Gateway+" is protected") || !strings.Contains(out, "request id: ") {
			t.Errorf("deny body: %q", out)
		}
	})
	t.Run("port 80 to the host's loopback never reaches the host's service", func(t *testing.T) {
		// 127.0.0.1 in the sandbox is its own loopback, where the daemon
		// plays no part; a sandbox that owns its namespace can route it
		// out through the gateway instead. The host's 127.0.0.1:80 is
		// hostHTTP (bound to 0.0.0.0:80), checked below.
		hostIf := e.hostIface(a)
		for _, k := range []string{"all", "eth0"} {
			e.MustIn(a, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/"+k+"/route_localnet")
		}
		e.MustIn(a, "ip", "route", "add", "127.0.0.1/32", "via", a.Gateway, "dev", "eth0", "table", "100")
		e.MustIn(a, "ip", "rule", "add", "pref", "100", "to", "127.0.0.1/32", "lookup", "100")
		e.MustIn(a, "ip", "rule", "del", "pref", "0", "lookup", "local")
		e.MustIn(a, "ip", "rule", "add", "pref", "200", "lookup", "local")
		// The test's own counting rule (no target) shows the packets do
		// reach the host.
		count := []string{"-i", hostIf, "-d", "127.0.0.1", "-p", "tcp", "--dport", "80"}
		ipt := []string{"netns", "exec", e.HostNS, "iptables", "-t", "raw"}
		run(t, "ip", slices.Concat(ipt, []string{"-I", "PREROUTING", "1"}, count)...)
		t.Cleanup(func() { exec.Command("ip", slices.Concat(ipt, []string{"-D", "PREROUTING"}, count)...).Run() })

		t.Run("by default the host's kernel drops it before the daemon", func(t *testing.T) {
			conns := e.series(e.Scrape(), "interceptd_router_connections_total")
			before := e.ruleCounter("raw", "PREROUTING", "127.0.0.1")
			out, code := e.In(a, "curl", "-sS", "-m", "3", "http://127.0.0.1/")
			arrived := e.ruleCounter("raw", "PREROUTING", "127.0.0.1") - before
			t.Logf("curl exit %d (%s); %d packets to 127.0.0.1:80 arrived on %s", code, strings.TrimSpace(out), arrived, hostIf)
			if code == 0 {
				t.Errorf("port 80 on the host's loopback answered: %s", out)
			}
			if arrived == 0 {
				t.Errorf("nothing sent to 127.0.0.1 reached the host: the test proves nothing")
			}
			if c := e.series(e.Scrape(), "interceptd_router_connections_total") - conns; c != 0 {
				t.Errorf("the router took %v connections to the host's loopback", c)
			}
		})
		t.Run("on a host with route_localnet on (kube-proxy sets it) the router denies it", func(t *testing.T) {
			run(t, "ip", "netns", "exec", e.HostNS, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/"+hostIf+"/route_localnet")
			out, code := e.In(a, "curl", "-sS", "-m", "3", "http://127.0.0.1/")
			t.Logf("curl exit %d: %s", code, strings.TrimSpace(out))
			if !strings.Contains(out, "interceptd: denied (protected_destination): destination 127.0.0.1 is loopback") {
				t.Errorf("port 80 to the host's loopback, taken by the router: exit %d, %q", code, out)
			}
		})
	})
	for what, n := range map[string]*atomic.Int64{"host :2222": hostSvc, "host :80": hostHTTP, "peer :8080": peerSvc, "peer :80": peerHTTP} {
		if n.Load() != 0 {
			t.Errorf("%s accepted %d connections from a sandbox", what, n.Load())
		}
	}
}

func TestRunExecutesACommandInAFreshSandbox(t *testing.T) {
	e := NewEnv(t, Options{})
	out, errOut, code := e.CLI("run", "--", "sh", "-c",
		"curl -s -X PUT --data hello http://my.kv/greeting; curl -s http://my.kv/greeting; exit 7")
	if code != 7 {
		t.Errorf("run exited %d, want the command's 7; stderr: %s", code, errOut)
	}
	if out != "hello" {
		t.Errorf("run printed %q, want hello", out)
	}
	list, _, _ := e.CLI("sandbox", "list")
	if strings.Contains(list, "run-") {
		t.Errorf("run left its sandbox behind:\n%s", list)
	}
	out, _, code = e.CLI("run", "--name", "named", "--", "cat", "/etc/resolv.conf")
	if code != 0 || !strings.Contains(out, "nameserver 10.213.") {
		t.Errorf("run's resolv.conf (exit %d): %q", code, out)
	}
	// What the command stored under the throwaway sandbox's name goes with
	// it, unless --keep.
	for _, keep := range []bool{false, true} {
		args := []string{"run", "--name", "stateful", "--", "curl", "-sS", "-X", "PUT", "--data", "v", "http://state.do/k"}
		if keep {
			args = append([]string{"run", "--keep"}, args[1:]...)
		}
		_, errOut, code := e.CLI(args...)
		if code != 0 {
			t.Fatalf("run %v: exit %d %s", args, code, errOut)
		}
		got, _, code := e.CLI("state", "get", "stateful", "k")
		if kept := code == 0 && got == "v"; kept != keep {
			t.Errorf("run --keep=%v: the state is there: %v (%q, exit %d)", keep, kept, got, code)
		}
		if keep && !strings.Contains(errOut, "kept what sandbox stateful stored") {
			t.Errorf("run --keep did not say what it kept: %q", errOut)
		}
	}
	if _, errOut, code := e.CLI("run"); code != 2 || !strings.Contains(errOut, "usage") {
		t.Errorf("run without a command: exit %d, %q", code, errOut)
	}
	// A command that cannot run gets a shell's status and says why: 127
	// not found, 126 found but not executable (a plain file, or an
	// executable bit on something that is no program).
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	plain, junk := filepath.Join(dir, "plain"), filepath.Join(dir, "junk")
	os.WriteFile(plain, []byte("not a program\n"), 0o644)
	os.WriteFile(junk, []byte("\x00\x01 no format\n"), 0o755)
	for _, tt := range []struct {
		cmd  string
		want int
	}{{"/nonexistent/cmd", 127}, {"no-such-command-here", 127}, {plain, 126}, {junk, 126}} {
		for _, priv := range []bool{false, true} {
			args := []string{"run", "--", tt.cmd}
			if priv {
				args = []string{"run", "--privileged", "--", tt.cmd}
			}
			if _, errOut, code := e.CLI(args...); code != tt.want || !strings.Contains(errOut, "interceptd run: ") {
				t.Errorf("run %v: exit %d, want %d; stderr %q", args[1:], code, tt.want, errOut)
			}
		}
	}
}

func TestMetricsCoverEveryHopAndPassPromlint(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.Create("m1")
	e.MustIn(sb, "dig", "+short", "@"+nowhereIP, "my.kv")
	e.MustIn(sb, "dig", "+short", "@"+nowhereIP, "example.test")
	e.MustIn(sb, "curl", "-sS", "-X", "PUT", "--data", "v", "http://my.kv/k")
	e.MustIn(sb, "curl", "-sS", "http://my.kv/k")
	e.MustIn(sb, "curl", "-sS", "http://example.test/")
	text := e.Scrape()
	for _, want := range []string{
		`interceptd_sandbox_active 1`,
		`interceptd_sandbox_operations_total{op="create",result="ok"} 1`,
		// curl asks for A and AAAA, so DNS counts are at least, not exactly.
		`interceptd_dns_queries_total{answer="handler",rcode="NOERROR",sandbox="m1"} `,
		`interceptd_dns_queries_total{answer="forwarded",rcode="NOERROR",sandbox="m1"} `,
		`interceptd_dns_upstream_requests_total{result="ok"} `,
		`interceptd_router_connections_total 3`,
		`interceptd_router_requests_total{code="204",handler="my.kv",sandbox="m1"} 1`,
		`interceptd_router_requests_total{code="200",handler="my.kv",sandbox="m1"} 1`,
		`interceptd_router_requests_total{code="200",handler="_forward",sandbox="m1"} 1`,
		`interceptd_router_request_bytes_total{handler="my.kv"} 1`,
		`interceptd_router_requests_in_flight 0`,
		`interceptd_router_request_duration_seconds_count{handler="my.kv"} 2`,
		`interceptd_store_operations_total{kind="kv",op="put",result="ok"} 1`,
		`interceptd_store_bytes_total{direction="written",kind="kv"} 1`,
		`interceptd_store_file_size_bytes `,
		`interceptd_store_commit_writes_count `,
		`interceptd_build_info{version=`,
		`process_open_fds`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	problems, err := promlint.New(strings.NewReader(text)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	doc, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (interceptd_\w+) `).FindAllStringSubmatch(text, -1) {
		if !strings.Contains(string(doc), "`"+m[1]+"`") {
			t.Errorf("docs/metrics.md does not document %s", m[1])
		}
	}
	if strings.Contains(text, sb.Addr) || strings.Contains(text, "example.test") {
		t.Error("a metric label carries an address or a host name")
	}
}

func TestARestartReadoptsSandboxesWithoutDuplicatingRules(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.Create("keep")
	gone := e.Create("gone")
	e.MustIn(sb, "curl", "-sS", "-X", "PUT", "--data", "v1", "http://my.kv/k")
	rulesBefore := ruleCount(t, e)
	e.Stop()
	// This sandbox's namespace vanishes while the daemon is down.
	run(t, "ip", "netns", "del", gone.Netns)
	// While the daemon is away, the sandbox has no way around it: port 80
	// to the upstream's address (no name to look up) is reset, curl's exit
	// 7, where a bypass would answer and a drop would time out (28).
	if out, code := e.In(sb, "curl", "-sS", "-m", "5", "http://"+upstreamIP+"/"); code != 7 {
		t.Errorf("egress while the daemon was down: curl exit %d, want 7 (reset):\n%s", code, out)
	}
	e.Start()
	if got := e.MustIn(sb, "curl", "-sS", "-m", "5", "http://my.kv/k"); got != "v1" {
		t.Errorf("after restart: %q", got)
	}
	if got := ruleCount(t, e); got != rulesBefore {
		t.Errorf("iptables lines %d after restart, %d before", got, rulesBefore)
	}
	list, _, _ := e.CLI("sandbox", "list")
	if !strings.Contains(list, "keep") {
		t.Errorf("sandbox not re-adopted:\n%s", list)
	}
	if strings.Contains(list, "gone") {
		t.Errorf("a sandbox whose namespace vanished was re-adopted:\n%s", list)
	}
	if !strings.Contains(e.Log(), `msg="dropping sandbox that did not survive" sandbox=gone`) {
		t.Errorf("the vanished sandbox was not reported")
	}
}

// ruleCount counts the iptables rules and the rules of the daemon's
// nftables table in the host namespace.
func ruleCount(t *testing.T, e *Env) int {
	ipt, nft := ruleCounts(t, e)
	return ipt + nft
}

// ruleCounts is ruleCount, iptables and nftables apart.
func ruleCounts(t *testing.T, e *Env) (iptables, nftables int) {
	t.Helper()
	iptables, nftables, err := icdnetns.InstalledRules(e.HostNS)
	if err != nil {
		t.Fatal(err)
	}
	return iptables, nftables
}

func TestWhileTheDaemonIsDownPort80AndDNSAreRefusedAtOnceAndTheRestKeepsThePolicy(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.Create("orphan")
	off := e.CreateWith("offline", "--internet", "off")
	if out, code := e.In(sb, "curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "http://"+upstreamIP+"/"); code != 0 || out != "200" {
		t.Fatalf("with the daemon up: %q, exit %d", out, code)
	}
	e.Stop()
	// Non-HTTP traffic keeps the last policy: allowed where it was, refused
	// at once where it was not (port 2222 upstream is not intercepted).
	if out, code := e.In(sb, "curl", "-sS", "-m", "5", "http://"+upstreamIP+":2222/"); code != 0 {
		t.Errorf("non-HTTP traffic the policy allows was cut while the daemon was down: exit %d %s", code, out)
	}
	if r := e.curlTimed(off, "-m", "5", "http://"+upstreamIP+":2222/"); r.Exit != 7 || r.Took > atOnce {
		t.Errorf("non-HTTP traffic the policy refuses, while the daemon was down: exit %d after %v (curl's own time) %s", r.Exit, r.Took, r.Out)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		// curl's exit 7: could not connect (a timeout would be 28).
		{"port 80 to an upstream is reset, not forwarded or left hanging", []string{"curl", "-sS", "-m", "10", "http://" + upstreamIP + "/"}, "curl: (7)"},
		{"port 80 to a handler's address is reset too", []string{"curl", "-sS", "-m", "10", "http://" + virtualKV + "/k"}, "curl: (7)"},
		{"DNS is refused", []string{"dig", "+tries=1", "+time=10", "@" + upstreamIP, "my.kv"}, "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// curl's own time; dig prints none when refused, so its run
			// is timed whole, against a bound as generous.
			var out string
			var code int
			var took, most time.Duration
			if tt.args[0] == "curl" {
				r := e.curlTimed(sb, tt.args[1:]...)
				out, code, took, most = r.Out, r.Exit, r.Took, atOnce
			} else {
				start := time.Now()
				out, code = e.In(sb, tt.args...)
				took, most = time.Since(start), digAtOnce
			}
			t.Logf("%s: exit %d after %v", tt.args[0], code, took.Round(time.Millisecond))
			if !strings.Contains(out, tt.want) || took > most {
				t.Errorf("after %v (want at most %v), exit %d:\n%s", took, most, code, out)
			}
		})
	}
	e.Start()
	if out, code := e.In(sb, "curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "http://"+upstreamIP+"/"); code != 0 || out != "200" {
		t.Fatalf("after the restart: %q, exit %d", out, code)
	}
}

// The README's figures ("the same N rules whatever the number of sandboxes
// (M iptables, ... and two nftables") hold for the rule set the daemon
// really installs, with 1 sandbox and with 10.
func TestRuleCountIsConstantWhateverTheNumberOfSandboxes(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`the same (\d+) rules whatever the number of\s+sandboxes \((\d+) iptables,[^)]*\s(\w+) nftables`).FindSubmatch(readme)
	if m == nil {
		t.Fatal(`README.md no longer says "the same N rules whatever the number of sandboxes (M iptables, ... K nftables": update this test with it`)
	}
	words := map[string]int{"one": 1, "two": 2, "three": 3, "four": 4}
	total, _ := strconv.Atoi(string(m[1]))
	ipt, _ := strconv.Atoi(string(m[2]))
	nft, ok := words[string(m[3])]
	if !ok {
		nft, _ = strconv.Atoi(string(m[3]))
	}
	if ipt+nft != total {
		t.Errorf("README.md: %d iptables and %d nftables rules do not make its %d", ipt, nft, total)
	}
	e := NewEnv(t, Options{})
	for i := range 10 {
		e.Create(fmt.Sprintf("c%d", i))
		if i != 0 && i != 9 {
			continue
		}
		gotIpt, gotNft := ruleCounts(t, e)
		t.Logf("%d sandboxes: %d iptables rules, %d nftables rules", i+1, gotIpt, gotNft)
		if gotIpt != ipt || gotNft != nft {
			t.Errorf("with %d sandboxes: %d iptables and %d nftables rules installed; README.md says %d and %d", i+1, gotIpt, gotNft, ipt, nft)
		}
	}
}

func TestAProcessLeftInADeletedSandboxLosesItsNetwork(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.Create("held")
	holder := exec.Command("ip", "netns", "exec", sb.Netns, "sleep", "30")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	time.Sleep(200 * time.Millisecond)
	nsOf := fmt.Sprintf("--net=/proc/%d/ns/net", holder.Process.Pid)
	if out, err := exec.Command("nsenter", nsOf, "ip", "-o", "link", "show", "eth0").CombinedOutput(); err != nil {
		t.Fatalf("eth0 before delete: %v %s", err, out)
	}
	if _, errOut, code := e.CLI("sandbox", "delete", "held"); code != 0 {
		t.Fatal(errOut)
	}
	// Unknown to the daemon at once: its requests are refused.
	if out, _ := exec.Command("nsenter", nsOf, "curl", "-sS", "-m", "2", "http://"+virtualKV+"/k").CombinedOutput(); !strings.Contains(string(out), "not a sandbox") && !strings.Contains(string(out), "curl:") {
		t.Errorf("a deleted sandbox was served: %s", out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := exec.Command("nsenter", nsOf, "ip", "link", "show", "eth0").Run(); err != nil {
			break // the link is gone
		}
		if time.Now().After(deadline) {
			t.Fatal("the deleted sandbox's link is still there after 5s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
