// Command bench measures interceptd's paths side by side on this machine:
// the direct routed path, the floor (a fixed-response handler), KV, state,
// passthrough forwarding, blobs, DNS beside dnsmasq, and sandbox churn. It
// builds the daemon, sets up its own namespaces (and removes them), runs
// interleaved rounds and prints one table of medians and ratios to the
// direct path of the same round.
//
//	sudo bench/run            # installs wrk, dnsperf, dnsmasq, then: go run ./bench
//
// Traffic stays inside the namespaces it makes: 192.0.2.0/24 (upstream),
// 198.51.100.0/24 (direct client), the sandbox pool.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/interceptd/interceptd/internal/admin"
	"github.com/interceptd/interceptd/internal/procstat"
	icdnetns "github.com/interceptd/interceptd/netns"
	"github.com/miekg/dns"
)

var (
	// Nine rounds: on a small shared VM a paired ratio moves by ±20% from
	// one round to the next, and a median of three or five cannot tell a
	// path at 0.95× its reference from one at 1.0×. About 8 minutes.
	rounds    = flag.Int("rounds", 9, "interleaved rounds")
	duration  = flag.Duration("duration", 4*time.Second, "length of each wrk/dnsperf run")
	conns     = flag.Int("conns", 32, "wrk connections")
	bigMiB    = flag.Int("big-blob-mib", 1024, "size of the large blob, MiB")
	sandboxes = flag.Int("sandboxes", 500, "sandboxes for the scale figures")
	only      = flag.String("only", "", "profile one HTTP path (its name prefix), or dns, for -duration and write daemon.pprof")
	paths     = flag.String("paths", "", "comma-separated name prefixes: run only these HTTP paths (and direct) in the rounds, print their table and stop")
)

type bench struct {
	id, hostNS, upNS, cliNS string
	hapNS                   string    // a client whose port 80 HAProxy intercepts; "" without haproxy
	haproxy                 *exec.Cmd // the reference transparent proxy
	dir, bin, sock          string
	daemon                  *exec.Cmd
	dnsNS, dnsIf            string     // the sandbox whose DNS goes to dnsmasq, its host interface
	dnsmasqPid              int        // that dnsmasq, for its CPU
	mu                      sync.Mutex // guards cleanups
	cleanups                []func()
	sb                      admin.Client
	sandboxNS               string
	// The sandboxes of the worker paths (issue 19), each with its own
	// worker: wkvNS's answers env.KV.get for wkv.bench, wpassNS's
	// outbound returns fetch(request).
	wkvNS, wpassNS string
}

// The benchmark's workers: one function each, so that each path measures
// one kind of invocation and each pool is warmed by its own path.
const (
	// wkvScript answers the key a request's path names from env.KV, as
	// the seed's "my.kv" function does; a missing key is a 404, which wrk
	// reports (the hot key is seeded as the kv handler's).
	wkvScript = `export default {
  outboundByHost: {
    "wkv.bench": async (request, env) => {
      const value = await env.KV.get(new URL(request.url).pathname.slice(1));
      return new Response(value ?? "", { status: value === null ? 404 : 200 });
    },
  },
};
`
	// wpassScript sends every request on to the destination the sandbox
	// dialled, as the built-in passthrough does.
	wpassScript = `export default {
  async outbound(request) {
    return fetch(request);
  },
};
`
)

// running is the benchmark whose namespaces and processes must go when it
// stops early: on an error (must) or a signal.
var running *bench

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		if running != nil {
			running.close()
		}
		os.Exit(1)
	}
}

func sh(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		must(fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out))
	}
	return string(out)
}

func (b *bench) defer_(f func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cleanups = append(b.cleanups, f)
}

// close undoes what the benchmark set up, once, last first.
func (b *bench) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		b.cleanups[i]()
	}
	b.cleanups = nil
}

// inNetns runs fn inside the namespace at path (see netns.Do).
func inNetns(path string, fn func() error) error { return icdnetns.Do(path, fn) }

// serve starts the daemon under test in hostNS on cfg, stops it and removes
// its rules at the end of the run, and returns once its admin socket
// answers. name says which daemon, in the error of one that does not start.
func (b *bench) serve(hostNS, cfg, sock, name string) (*exec.Cmd, admin.Client) {
	// warn: the per-request decision record costs CPU; see bench/README.md.
	cmd := exec.Command("nsenter", "--net=/run/netns/"+hostNS, b.bin, "serve", "--config", cfg, "--log-level", "warn")
	// BENCH_DAEMON_ENV="GOGC=200 GOMAXPROCS=1" tries runtime settings on
	// the daemon alone.
	if v := os.Getenv("BENCH_DAEMON_ENV"); v != "" {
		cmd.Env = append(os.Environ(), strings.Fields(v)...)
	}
	cmd.Stderr = os.Stderr
	must(cmd.Start())
	b.defer_(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		exec.Command("nsenter", "--net=/run/netns/"+hostNS, b.bin, "cleanup", "--config", cfg).Run()
	})
	sb := *admin.NewClient(sock)
	for i := 0; ; i++ {
		if _, err := sb.List(); err == nil {
			return cmd, sb
		}
		if i > 200 {
			must(fmt.Errorf("the %sdaemon did not start", name))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (b *bench) setup() {
	bb := make([]byte, 3)
	rand.Read(bb)
	b.id = hex.EncodeToString(bb)
	b.hostNS, b.upNS, b.cliNS = "ibench-"+b.id+"-host", "ibench-"+b.id+"-up", "ibench-"+b.id+"-cli"
	var err error
	b.dir, err = os.MkdirTemp("", "interceptd-bench-")
	must(err)
	b.defer_(func() { os.RemoveAll(b.dir) })
	b.bin = filepath.Join(b.dir, "interceptd")
	if bin := os.Getenv("BENCH_DAEMON_BIN"); bin != "" {
		// A build of another commit, for a before/after comparison run by
		// run, interleaved (bench/README.md).
		sh("cp", bin, b.bin)
	} else {
		sh("go", "build", "-o", b.bin, "./cmd/interceptd")
	}
	for _, ns := range []string{b.hostNS, b.upNS, b.cliNS} {
		sh("ip", "netns", "add", ns)
		b.defer_(func() { exec.Command("ip", "netns", "del", ns).Run() })
		sh("ip", "-n", ns, "link", "set", "lo", "up")
	}
	link := func(peer, hostIf, hostAddr, peerAddr string) {
		sh("ip", "-n", b.hostNS, "link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", peer)
		sh("ip", "-n", b.hostNS, "addr", "add", hostAddr, "dev", hostIf)
		sh("ip", "-n", b.hostNS, "link", "set", hostIf, "up")
		sh("ip", "-n", peer, "addr", "add", peerAddr, "dev", "eth0")
		sh("ip", "-n", peer, "link", "set", "eth0", "up")
	}
	link(b.upNS, "up0", "192.0.2.1/24", "192.0.2.2/24")
	link(b.cliNS, "cli0", "198.51.100.1/24", "198.51.100.2/24")
	sh("ip", "-n", b.upNS, "route", "add", "default", "via", "192.0.2.1")
	sh("ip", "-n", b.cliNS, "route", "add", "default", "via", "198.51.100.1")
	sh("ip", "netns", "exec", b.hostNS, "sysctl", "-qw", "net.ipv4.ip_forward=1")

	// The upstream: a fixed 200, keep-alive, in the upstream namespace.
	var ln net.Listener
	must(inNetns("/run/netns/"+b.upNS, func() (err error) { ln, err = net.Listen("tcp4", "192.0.2.2:80"); return }))
	body := []byte("ok\n")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "3")
		w.Write(body)
	})}
	go srv.Serve(ln)
	b.defer_(func() { srv.Close() })
	b.startHTTPSUpstream()

	// dnsmasq: the daemon's upstream (in the upstream namespace), and one
	// hop from the direct client (in the host namespace) as a reference
	// without capture. The comparison for the shim answers in a sandbox of
	// its own (startDNSMasq, once the daemon runs).
	b.startDNSMasq(b.upNS, "192.0.2.2", "53")
	b.startDNSMasq(b.hostNS, "198.51.100.1", "53")

	sh("ip", "netns", "exec", b.hostNS, "iptables", "-t", "raw", "-A", "PREROUTING", "-i", "cli0", "-m", "rpfilter", "--invert", "-j", "DROP")

	// The reference for passthrough: HAProxy in transparent mode on the
	// same hop, a client whose port 80 is sent to it by nftables tproxy
	// (its own mark and table), forwarding to the original destination
	// over kept-alive connections, as the daemon does.
	if _, err := exec.LookPath("haproxy"); err == nil {
		b.hapNS = "ibench-" + b.id + "-hap"
		sh("ip", "netns", "add", b.hapNS)
		b.defer_(func() { exec.Command("ip", "netns", "del", b.hapNS).Run() })
		sh("ip", "-n", b.hapNS, "link", "set", "lo", "up")
		link(b.hapNS, "hap0", "203.0.113.1/24", "203.0.113.2/24")
		sh("ip", "-n", b.hapNS, "route", "add", "default", "via", "203.0.113.1")
		sh("ip", "netns", "exec", b.hostNS, "iptables", "-t", "raw", "-A", "PREROUTING", "-i", "hap0", "-m", "rpfilter", "--invert", "-j", "DROP")
		// Only through HAProxy: ports 80 and 443 are never routed past it.
		sh("ip", "netns", "exec", b.hostNS, "iptables", "-A", "FORWARD", "-i", "hap0", "-p", "tcp", "--dport", "80", "-j", "DROP")
		sh("ip", "netns", "exec", b.hostNS, "iptables", "-A", "FORWARD", "-i", "hap0", "-p", "tcp", "--dport", "443", "-j", "DROP")
		nft := exec.Command("ip", "netns", "exec", b.hostNS, "nft", "-f", "-")
		nft.Stdin = strings.NewReader(`table ip ibench_hap {
	chain pre {
		type filter hook prerouting priority mangle; policy accept;
		iifname "hap0" tcp dport 80 tproxy to :18080 meta mark set 0x4242 accept
		iifname "hap0" ip daddr 192.0.2.3 tcp dport 443 tproxy to :18444 meta mark set 0x4242 accept
		iifname "hap0" ip daddr 192.0.2.4 tcp dport 443 tproxy to :18445 meta mark set 0x4242 accept
		iifname "hap0" tcp dport 443 tproxy to :18443 meta mark set 0x4242 accept
	}
}
`)
		if out, err := nft.CombinedOutput(); err != nil {
			must(fmt.Errorf("nft for haproxy: %v\n%s", err, out))
		}
		sh("ip", "-n", b.hostNS, "rule", "add", "fwmark", "0x4242", "lookup", "4242")
		sh("ip", "-n", b.hostNS, "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "4242")
		hcfg := filepath.Join(b.dir, "haproxy.cfg")
		os.WriteFile(hcfg, []byte(`global
	maxconn 4000
	# No TLS session cache: the full-handshake frontend (haproxyTLS)
	# resumes nothing; TLS 1.3's tickets on the other need none.
	tune.ssl.cachesize 0
defaults
	mode http
	timeout connect 5s
	timeout client 30s
	timeout server 30s
	http-reuse always
frontend intercepted
	bind 0.0.0.0:18080 transparent
	default_backend original
backend original
	# 0.0.0.0, port 0: the connection's original destination and port.
	server original 0.0.0.0:0
`+b.haproxyTLS()), 0o644)
		b.haproxy = exec.Command("ip", "netns", "exec", b.hostNS, "haproxy", "-db", "-f", hcfg)
		b.haproxy.Stderr = os.Stderr
		must(b.haproxy.Start())
		b.defer_(func() { b.haproxy.Process.Kill(); b.haproxy.Wait() })
		for i := 0; ; i++ {
			// Port 80 from this client is not routed: an answer came
			// through HAProxy.
			if exec.Command("ip", "netns", "exec", b.hapNS, "curl", "-sf", "-o", "/dev/null", "-m", "1", "http://192.0.2.2/").Run() == nil {
				break
			}
			if i > 50 {
				must(fmt.Errorf("haproxy does not answer on its intercepted path"))
			}
			time.Sleep(100 * time.Millisecond)
		}
		b.checkHAProxyTLS()
	}

	wkvJS, wpassJS := filepath.Join(b.dir, "wkv.js"), filepath.Join(b.dir, "wpass.js")
	must(os.WriteFile(wkvJS, []byte(wkvScript), 0o644))
	must(os.WriteFile(wpassJS, []byte(wpassScript), 0o644))
	cfg := filepath.Join(b.dir, "interceptd.yaml")
	b.sock = filepath.Join(b.dir, "admin.sock")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`version: 1
data_dir: %s
admin_socket: %s
# No per-sandbox request limit either.
listen: {pprof: true, max_requests_per_second_per_sandbox: 0}
# No per-sandbox query limit: the benchmark floods on purpose.
dns: {upstreams: ["192.0.2.2:53"], max_qps_per_sandbox: 0}
sandbox: {netns_prefix: ibench%s-}
metrics: {max_sandbox_labels: 1000}
handlers:
  - {host: my.kv, kind: kv}
  - {host: my.r2, kind: blob}
  - {host: state.do, kind: state}
  - {host: floor.bench, kind: respond, body: "ok\n"}
  # Issue 20: the floor's handler behind the TLS front's interception.
  - {host: tls.bench, kind: respond, https: true, body: "ok\n"}
# No default_worker: the sandbox of the built-in paths has none; the worker
# paths' sandboxes name theirs.
workers:
  - {name: wkv, script: %s, bindings: {KV: {kv: default}}}
  - {name: wpass, script: %s}
`, filepath.Join(b.dir, "data"), b.sock, b.id, wkvJS, wpassJS)), 0o644)
	b.daemon, b.sb = b.serve(b.hostNS, cfg, b.sock, "")
	sbx, err := b.sb.Create("bench", nil)
	must(err)
	b.sandboxNS = sbx.Netns
	for _, w := range []struct {
		name string
		ns   *string
	}{{"wkv", &b.wkvNS}, {"wpass", &b.wpassNS}} {
		sbx, err := b.sb.CreateWith(admin.CreateRequest{Name: w.name, Worker: &w.name})
		must(err)
		*w.ns = sbx.Netns
	}

	// dnsmasq on the sandbox's own path: a second sandbox, made by the
	// daemon like the first (the same anti-spoofing, rp_filter, capture
	// and INPUT chains), whose port-53 queries the benchmark redirects to
	// a dnsmasq on its gateway instead of to the shim (dnsRules). Only the
	// server differs.
	dsb, err := b.sb.Create("benchdns", nil)
	must(err)
	b.dnsNS, b.dnsIf = dsb.Netns, dsb.HostInterface
	gw := dsb.Gateway.String()
	b.dnsmasqPid = b.startDNSMasq(b.hostNS, gw, "5399", "--address=/path.bench/192.0.2.99")
	for _, r := range b.dnsRules() {
		sh("ip", append([]string{"netns", "exec", b.hostNS, "iptables", "-t", r.table, "-I", r.chain, strconv.Itoa(r.pos)}, r.spec...)...)
	}
	// A name only this dnsmasq knows: the answer proves the redirect is
	// in front of the daemon's capture.
	for i := 0; ; i++ {
		var r *dns.Msg
		err := inNetns("/run/netns/"+b.dnsNS, func() (err error) {
			m := new(dns.Msg)
			m.SetQuestion("path.bench.", dns.TypeA)
			r, _, err = (&dns.Client{Timeout: time.Second}).Exchange(m, "192.0.2.77:53")
			return err
		})
		if err == nil && len(r.Answer) == 1 {
			if a, ok := r.Answer[0].(*dns.A); ok && a.A.String() == "192.0.2.99" {
				break
			}
		}
		if i > 20 {
			must(fmt.Errorf("dnsmasq does not answer in the sandbox %s: %v %v", b.dnsNS, r, err))
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Seed: a hot key, a state key, blobs.
	put := func(host, key, sandbox string, body []byte) {
		resp, err := b.sb.Handler(http.MethodPut, host, key, sandbox, nil, bytes.NewReader(body), http.Header{"Content-Length": {strconv.Itoa(len(body))}})
		must(err)
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			must(fmt.Errorf("seeding %s/%s: %s", host, key, resp.Status))
		}
	}
	put("my.kv", "hot", "", bytes.Repeat([]byte("v"), 128))
	// Each worker path answers before the rounds: the KV worker the seeded
	// value, the passthrough worker the upstream's body.
	for _, c := range []struct{ ns, url, want string }{
		{b.wkvNS, "http://wkv.bench/hot", strings.Repeat("v", 128)},
		{b.wpassNS, "http://192.0.2.2/", "ok\n"},
	} {
		out, err := exec.Command("ip", "netns", "exec", c.ns, "curl", "-sSf", "-m", "5", c.url).CombinedOutput()
		if err != nil || string(out) != c.want {
			must(fmt.Errorf("worker path %s from %s: %v %q", c.url, c.ns, err, out))
		}
	}
	b.checkInterceptedTLS()
	put("state.do", "k", "bench", bytes.Repeat([]byte("s"), 128))
	mib := make([]byte, 1<<20)
	rand.Read(mib)
	put("my.r2", "1m", "", mib)
	os.WriteFile(filepath.Join(b.dir, "put.lua"), []byte(`wrk.method = "PUT"
wrk.body = string.rep("v", 128)
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, "/put-" .. (counter % 1000))
end
`), 0o644)
}

var rpsRE = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
var totalRE = regexp.MustCompile(`(\d+) requests in`)

// daemonCPU returns the daemon's user+system CPU time.
func (b *bench) daemonCPU() time.Duration { return procCPU(b.daemon.Process.Pid) }

// procCPU returns a process's user+system CPU time.
func procCPU(pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// rss is the daemon's resident memory (see procstat.RSS); zero if it
// cannot be read.
func (b *bench) rss() (total, anon int64) {
	total, anon, _ = procstat.RSS(b.daemon.Process.Pid)
	return total, anon
}

// wrk runs wrk in a namespace; it returns requests/s and the CPU µs per
// request of the process pid (the daemon, or the reference proxy).
func (b *bench) wrk(ns, url string, pid int, extra ...string) (float64, float64) {
	args := append([]string{"netns", "exec", ns, "wrk", "-t2", "-c" + strconv.Itoa(*conns), "-d" + duration.String()}, extra...)
	args = append(args, url)
	cpu0 := procCPU(pid)
	out := sh("ip", args...)
	cpu := procCPU(pid) - cpu0
	m, t := rpsRE.FindStringSubmatch(out), totalRE.FindStringSubmatch(out)
	if m == nil || t == nil {
		must(fmt.Errorf("wrk output:\n%s", out))
	}
	rps, _ := strconv.ParseFloat(m[1], 64)
	total, _ := strconv.ParseFloat(t[1], 64)
	if strings.Contains(out, "Non-2xx") {
		fmt.Fprintf(os.Stderr, "bench: %s answered non-2xx:\n%s", url, out)
	}
	return rps, float64(cpu.Microseconds()) / total
}

var qpsRE = regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)

var completedRE = regexp.MustCompile(`Queries completed:\s+([0-9]+)`)

// benchRule is a rule the benchmark inserts at pos in one of the daemon's
// chains.
type benchRule struct {
	table, chain string
	pos          int
	spec         []string
}

// dnsRules send the dnsmasq sandbox's queries to dnsmasq. They sit inside
// the daemon's chains, beside the daemon's rules they stand in for (its
// capture, first in its DNS chain; its INPUT chain's accept of captured
// DNS, third), so that the queries take the shim's path through the
// tables and only the server differs.
func (b *bench) dnsRules() []benchRule {
	return []benchRule{
		{"nat", icdnetns.ChainDNS, 1, []string{"-i", b.dnsIf, "-p", "udp", "--dport", "53", "-j", "REDIRECT", "--to-ports", "5399"}},
		{"filter", icdnetns.ChainInput, 3, []string{"-i", b.dnsIf, "-p", "udp", "--dport", "5399", "-m", "conntrack", "--ctstate", "DNAT", "--ctorigdstport", "53", "-j", "ACCEPT"}},
	}
}

// dropDNSSandbox removes the dnsmasq sandbox and its rules, so that the
// scale figures start from the one sandbox the HTTP paths use.
func (b *bench) dropDNSSandbox() {
	for _, r := range b.dnsRules() {
		sh("ip", append([]string{"netns", "exec", b.hostNS, "iptables", "-t", r.table, "-D", r.chain}, r.spec...)...)
	}
	must(b.sb.Delete("benchdns"))
}

// startDNSMasq runs a dnsmasq in ns on addr:port answering the benchmark's
// names, and returns its pid.
func (b *bench) startDNSMasq(ns, addr, port string, extra ...string) int {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
		"--listen-address=" + addr, "--bind-interfaces", "--port=" + port, "--cache-size=10000", "--user=root",
		"--pid-file=" + filepath.Join(b.dir, ns+addr+port+".pid"),
		"--address=/example.bench/192.0.2.2", "--address=/my.kv/198.18.213.1"}, extra...)...)
	must(cmd.Start())
	b.defer_(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process.Pid // ip netns exec execs it
}

// dnsperf returns the queries per second answered and the CPU microseconds
// per answered query of the process pid (the daemon, or a dnsmasq).
func (b *bench) dnsperf(ns, server, name string, pid int) (float64, float64) {
	data := filepath.Join(b.dir, "q-"+name)
	os.WriteFile(data, []byte(name+" A\n"), 0o644)
	cpu0 := procCPU(pid)
	out := sh("ip", "netns", "exec", ns, "dnsperf", "-s", server, "-d", data, "-l", strconv.Itoa(int(duration.Seconds())), "-c", "4", "-q", "64")
	cpu := procCPU(pid) - cpu0
	m, c := qpsRE.FindStringSubmatch(out), completedRE.FindStringSubmatch(out)
	if m == nil || c == nil {
		must(fmt.Errorf("dnsperf output:\n%s", out))
	}
	q, _ := strconv.ParseFloat(m[1], 64)
	n, _ := strconv.ParseFloat(c[1], 64)
	return q, float64(cpu.Microseconds()) / max(n, 1)
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// profile takes a CPU profile of the daemon for most of one run.
func (b *bench) profile() {
	time.Sleep(time.Second)
	prof := exec.Command("ip", "netns", "exec", b.hostNS, "curl", "-sS", "-o", "daemon.pprof",
		fmt.Sprintf("http://127.0.0.1:9780/debug/pprof/profile?seconds=%d", int(duration.Seconds())-2))
	prof.Run()
}

type row struct {
	name    string
	vals    []float64 // per round
	ratios  []float64 // per round, to the reference
	cpu     []float64
	unit    string
	ref     string
	comment string
}

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		must(fmt.Errorf("run as root (namespaces, iptables)"))
	}
	b := &bench{}
	running = b
	defer b.close()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "bench: stopped by %v; removing what it made\n", s)
		b.close()
		os.Exit(1)
	}()
	if *storesMode {
		b.stores() // bench/stores.go
		return
	}
	b.setup()
	load0 := loadavg()
	tls0 := b.tlsCounts()

	sbNS := b.sandboxNS
	dpid := b.daemon.Process.Pid
	type path struct {
		name, ns, url string
		pid           int
		extra         []string
	}
	http := []path{
		{"direct (routed, no interception)", b.cliNS, "http://192.0.2.2/", dpid, nil},
		{"floor (respond handler)", sbNS, "http://floor.bench/", dpid, nil},
		{"KV GET hot key", sbNS, "http://my.kv/hot", dpid, nil},
		{"KV PUT (durable)", sbNS, "http://my.kv/", dpid, []string{"-s", filepath.Join(b.dir, "put.lua")}},
		{"state GET", sbNS, "http://state.do/k", dpid, nil},
		{"passthrough (forward)", sbNS, "http://192.0.2.2/", dpid, nil},
		{"blob GET 1 MiB", sbNS, "http://my.r2/1m", dpid, nil},
		// Issue 19: the same work as KV GET and passthrough, done by a
		// worker's function (each from its own sandbox, whose worker it is).
		{"worker KV GET (env.KV.get, hot key)", b.wkvNS, "http://wkv.bench/hot", dpid, nil},
		{"worker passthrough (outbound: fetch(request))", b.wpassNS, "http://192.0.2.2/", dpid, nil},
		// Issue 20: a new TLS connection per request (the upstream closes
		// each), directly and through the TLS front (SNI decided, then
		// spliced), so req/s is TLS connections per second.
		{"HTTPS new connections, direct (routed)", b.cliNS, "https://192.0.2.2/", dpid, []string{"-H", "Connection: close"}},
		{"HTTPS new connections, passthrough (SNI)", sbNS, "https://example.bench/", dpid, []string{"-H", "Connection: close"}},
		// Issue 20: TLS terminated by the front for a handler marked
		// https (a leaf from interceptd's CA) and the floor's work
		// behind it; a new TLS connection per request, then kept alive.
		{"HTTPS intercepted, new handshakes (respond handler)", sbNS, "https://tls.bench/", dpid, []string{"-H", "Connection: close"}},
		{"HTTPS intercepted, kept-alive (respond handler)", sbNS, "https://tls.bench/", dpid, nil},
	}
	if b.haproxy != nil {
		hpid := b.haproxy.Process.Pid
		http = append(http, path{"passthrough by HAProxy (reference)", b.hapNS, "http://192.0.2.2/", hpid, nil},
			// Issue 20's reference: HAProxy terminating TLS on the same
			// hop with a static certificate, answering the 200 itself.
			path{"HTTPS by HAProxy, new handshakes (reference)", b.hapNS, "https://tls.bench/", hpid, []string{"-H", "Connection: close"}},
			// wrk resumes its sessions; the daemon's front does not
			// (bench/README.md): HAProxy without resumption as well.
			path{"HTTPS by HAProxy, new full handshakes (no resumption)", b.hapNS, "https://tls-full.bench/", hpid, []string{"-H", "Connection: close"}},
			path{"HTTPS by HAProxy, kept-alive (reference)", b.hapNS, "https://tls.bench/", hpid, nil},
			// Issue 20's passthrough done by HAProxy (TCP mode, the hello
			// read and its SNI accepted by an ACL, then forwarded).
			path{"HTTPS passthrough by HAProxy (SNI)", b.hapNS, "https://example.bench/", hpid, []string{"-H", "Connection: close"}})
	}
	if *only == "dns" {
		// One run each, the daemon profiled while it answers handler names.
		dm, mcpu := b.dnsperf(b.dnsNS, "192.0.2.77", "my.kv", b.dnsmasqPid)
		d1, _ := b.dnsperf(b.cliNS, "198.51.100.1", "my.kv", 0)
		go b.profile()
		dh, hcpu := b.dnsperf(sbNS, "192.0.2.77", "my.kv", dpid)
		time.Sleep(2 * time.Second)
		df, fcpu := b.dnsperf(sbNS, "192.0.2.77", "example.bench", dpid)
		fmt.Printf("dnsmasq %.0f q/s, %.1f µs CPU/q (one hop, not captured: %.0f q/s); handler name %.0f q/s (%.2f×, %.1f µs daemon CPU/q); forwarded %.0f q/s (%.2f×, %.1f µs/q); profile in daemon.pprof\n",
			dm, mcpu, d1, dh, dh/dm, hcpu, df, df/dm, fcpu)
		return
	}
	if *only != "" {
		for _, h := range http {
			if strings.HasPrefix(h.name, *only) {
				go b.profile()
				rps, cpu := b.wrk(h.ns, h.url, h.pid, h.extra...)
				time.Sleep(2 * time.Second)
				fmt.Printf("%s: %.0f req/s, %.1f µs daemon CPU/req; profile in daemon.pprof\n", h.name, rps, cpu)
				return
			}
		}
		must(fmt.Errorf("no path named %q", *only))
	}
	if *paths != "" {
		http = pick(http, func(h path) string { return h.name }, strings.Split(*paths, ","))
	}
	rows := make([]*row, len(http))
	for i, h := range http {
		rows[i] = &row{name: h.name, unit: "req/s", ref: "direct"}
	}
	dnsRows := []*row{{name: "DNS handler name (shim)", unit: "q/s", ref: "dnsmasq"}, {name: "DNS forwarded name (shim)", unit: "q/s", ref: "dnsmasq"},
		{name: "DNS dnsmasq, same names, in a sandbox", unit: "q/s"}, {name: "DNS dnsmasq, one hop, not captured", unit: "q/s", ref: "dnsmasq"}}
	for r := 0; r < *rounds; r++ {
		fmt.Fprintf(os.Stderr, "round %d/%d\n", r+1, *rounds)
		// Direct first (each round's reference), then the others, in
		// reverse order every other round: what a path leaves behind (a
		// durable write's writeback, a blob's page cache) then weighs on
		// a different neighbour each time.
		var direct float64
		for _, i := range roundOrder(len(http), r) {
			h := http[i]
			rps, cpu := b.wrk(h.ns, h.url, h.pid, h.extra...)
			if i == 0 {
				direct = rps
			}
			rows[i].vals = append(rows[i].vals, rps)
			rows[i].ratios = append(rows[i].ratios, rps/direct)
			if i > 0 {
				rows[i].cpu = append(rows[i].cpu, cpu)
			}
		}
		if *paths != "" {
			continue
		}
		// dnsmasq first in even rounds, the shim first in odd ones, for
		// the same reason as the HTTP paths' order.
		var dm, d1, dh, df, mcpu, hcpu, fcpu float64
		dnsmasq := func() {
			dm, mcpu = b.dnsperf(b.dnsNS, "192.0.2.77", "my.kv", b.dnsmasqPid)
			d1, _ = b.dnsperf(b.cliNS, "198.51.100.1", "my.kv", 0)
		}
		shim := func() {
			dh, hcpu = b.dnsperf(sbNS, "192.0.2.77", "my.kv", dpid)
			df, fcpu = b.dnsperf(sbNS, "192.0.2.77", "example.bench", dpid)
		}
		if r%2 == 0 {
			dnsmasq()
			shim()
		} else {
			shim()
			dnsmasq()
		}
		dnsRows[0].vals, dnsRows[0].ratios = append(dnsRows[0].vals, dh), append(dnsRows[0].ratios, dh/dm)
		dnsRows[1].vals, dnsRows[1].ratios = append(dnsRows[1].vals, df), append(dnsRows[1].ratios, df/dm)
		dnsRows[0].cpu, dnsRows[1].cpu = append(dnsRows[0].cpu, hcpu), append(dnsRows[1].cpu, fcpu)
		dnsRows[2].vals, dnsRows[2].ratios = append(dnsRows[2].vals, dm), append(dnsRows[2].ratios, 1)
		dnsRows[2].cpu = append(dnsRows[2].cpu, mcpu)
		dnsRows[3].vals, dnsRows[3].ratios = append(dnsRows[3].vals, d1), append(dnsRows[3].ratios, d1/dm)
	}

	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "path\tmedian\tunit\tratio\tto\tdaemon (or proxy) CPU µs/req\t\n")
	shown := rows
	if *paths == "" {
		shown = append(shown, dnsRows...)
	}
	for _, r := range shown {
		cpu := "-"
		if len(r.cpu) > 0 {
			cpu = fmt.Sprintf("%.1f", median(r.cpu))
		}
		ref := r.ref
		if ref == "" {
			ref = "-"
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%.2f\t%s\t%s\t\n", r.name, median(r.vals), r.unit, median(r.ratios), ref, cpu)
	}
	find := func(prefix string) *row {
		for _, r := range rows {
			if strings.HasPrefix(r.name, prefix) {
				return r
			}
		}
		return nil
	}
	// A ratio's median, and each round's ratio in the order the rounds
	// ran (every second one backward): the spread says how far to trust
	// the median.
	ratioRow := func(label string, rs []float64) {
		var each []string
		for _, r := range rs {
			each = append(each, fmt.Sprintf("%.2f", r))
		}
		fmt.Fprintf(tw, "%s\t\t\t%.2f\t\t(rounds %s)\t\n", label, median(rs), strings.Join(each, " "))
	}
	// Ratios of two paths are taken per round (each round measures both
	// minutes apart at most).
	perRound := func(label, a, b string) {
		ra, rb := find(a), find(b)
		if ra == nil || rb == nil {
			return
		}
		var rs []float64
		for r := range ra.vals {
			rs = append(rs, ra.vals[r]/rb.vals[r])
		}
		ratioRow(label, rs)
	}
	// The same for CPU per request (the daemon's over the reference's).
	perRoundCPU := func(label, a, b string) {
		ra, rb := find(a), find(b)
		if ra == nil || rb == nil {
			return
		}
		var rs []float64
		for r := range ra.cpu {
			rs = append(rs, ra.cpu[r]/rb.cpu[r])
		}
		ratioRow(label, rs)
	}
	perRound("KV GET / floor", "KV GET", "floor")
	if r := find("blob GET 1 MiB"); r != nil {
		fmt.Fprintf(tw, "blob GET 1 MiB\t%.0f\tMB/s\t\t\t\t\n", median(r.vals)*1.048576)
	}
	perRound("passthrough / HAProxy", "passthrough (forward)", "passthrough by HAProxy")
	perRound("worker KV GET / KV GET (target ≥ 0.5)", "worker KV GET", "KV GET")
	perRound("worker passthrough / passthrough (target ≥ 0.5)", "worker passthrough", "passthrough (forward)")
	perRound("HTTPS passthrough / direct, new connections (target ≥ 0.9)", "HTTPS new connections, passthrough", "HTTPS new connections, direct")
	perRound("HTTPS passthrough by HAProxy / direct, new connections", "HTTPS passthrough by HAProxy", "HTTPS new connections, direct")
	perRound("HTTPS passthrough, daemon / HAProxy, new connections", "HTTPS new connections, passthrough", "HTTPS passthrough by HAProxy")
	perRoundCPU("HTTPS passthrough CPU per connection, daemon / HAProxy", "HTTPS new connections, passthrough", "HTTPS passthrough by HAProxy")
	// What 0.9× direct leaves a hop, where the CPUs are the bound (wrk and
	// the TLS server keep them busy): the direct path costs the machine
	// NumCPU / rate per connection, and a hop's whole cost per connection
	// (its own CPU and the kernel's work for its second connection) comes
	// off the rate, so it may spend at most 1/0.9 - 1 of that. Only on a
	// machine that runs nothing else: others' load lowers the rate and
	// so raises this figure.
	if r := find("HTTPS new connections, direct"); r != nil && find("HTTPS new connections, passthrough") != nil {
		var budget []float64
		for _, v := range r.vals {
			budget = append(budget, float64(runtime.NumCPU())/v*(1/0.9-1)*1e6)
		}
		var each []string
		for _, b := range budget {
			each = append(each, fmt.Sprintf("%.0f", b))
		}
		fmt.Fprintf(tw, "HTTPS passthrough: a hop's CPU µs per connection for 0.9× direct (an idle machine)\t%.0f\tµs\t\t\t(rounds %s)\t\n", median(budget), strings.Join(each, " "))
	}
	perRound("HTTPS intercepted handshakes / HAProxy (target ≥ 0.8)", "HTTPS intercepted, new handshakes", "HTTPS by HAProxy, new handshakes")
	perRound("HTTPS intercepted handshakes / HAProxy full handshakes", "HTTPS intercepted, new handshakes", "HTTPS by HAProxy, new full handshakes")
	perRound("HTTPS intercepted kept-alive req/s / HAProxy (target ≥ 0.8)", "HTTPS intercepted, kept-alive", "HTTPS by HAProxy, kept-alive")
	perRoundCPU("HTTPS CPU per handshake, daemon / HAProxy", "HTTPS intercepted, new handshakes", "HTTPS by HAProxy, new handshakes")
	perRoundCPU("HTTPS CPU per handshake, daemon / HAProxy full handshakes", "HTTPS intercepted, new handshakes", "HTTPS by HAProxy, new full handshakes")
	perRoundCPU("HTTPS CPU per kept-alive request, daemon / HAProxy", "HTTPS intercepted, kept-alive", "HTTPS by HAProxy, kept-alive")
	if *paths == "" {
		ratioRow("DNS handler name / dnsmasq", dnsRows[0].ratios)
	}
	tw.Flush()
	fmt.Printf("load average (1, 5, 15 min): %s before the rounds, %s after\n", load0, loadavg())
	if find("HTTPS intercepted") != nil {
		tls1 := b.tlsCounts()
		// A resumed handshake sends no certificate; one that wrk cuts
		// off at the end of a run may have sent one.
		fmt.Printf("the daemon's TLS front in the rounds: %.0f connections intercepted, %.0f certificates sent (one per full handshake)\n",
			tls1.intercepted-tls0.intercepted, tls1.certs-tls0.certs)
	}
	if *paths != "" {
		if find("HTTPS") != nil {
			b.httpsBulk() // the other half of the HTTPS figures
		}
		return
	}

	b.dropDNSSandbox()
	b.httpsBulk()
	b.bigBlob()
	// Sandbox records are durable writes: let the large blob's writeback
	// finish first, or the churn figure measures the disk's backlog.
	sh("sync")
	b.scale()
}

// roundOrder is the order of n paths in round r: 0 (the reference) first,
// the rest forward in even rounds and backward in odd ones.
func roundOrder(n, r int) []int {
	order := []int{0}
	for i := 1; i < n; i++ {
		if r%2 == 0 {
			order = append(order, i)
		} else {
			order = append(order, n-i)
		}
	}
	return order
}

// pick keeps the first of all (the reference) and those whose name begins
// with one of prefixes.
func pick[T any](all []T, name func(T) string, prefixes []string) []T {
	kept := all[:1:1]
	for _, x := range all[1:] {
		for _, p := range prefixes {
			if p != "" && strings.HasPrefix(name(x), p) {
				kept = append(kept, x)
				break
			}
		}
	}
	return kept
}

// bigBlob uploads and downloads the large blob, with the daemon's RSS
// growth during the download.
func (b *bench) bigBlob() {
	path := filepath.Join(b.dir, "big")
	f, _ := os.Create(path)
	buf := make([]byte, 1<<20)
	rand.Read(buf)
	for i := 0; i < *bigMiB; i++ {
		f.Write(buf)
	}
	f.Close()
	sh("ip", "netns", "exec", b.sandboxNS, "curl", "-sS", "-o", "/dev/null", "-T", path, "http://my.r2/big")
	os.Remove(path)
	t0, a0 := b.rss()
	stopPeak := procstat.Peak(b.daemon.Process.Pid, 20*time.Millisecond)
	start := time.Now()
	sh("ip", "netns", "exec", b.sandboxNS, "curl", "-sS", "-o", "/dev/null", "http://my.r2/big")
	d := time.Since(start)
	peakT, peakA := stopPeak()
	fmt.Printf("\nblob GET %d MiB: %.0f MB/s; daemon RSS growth %.1f MiB (anonymous %.1f MiB, the rest mapped pages of the store file)\n",
		*bigMiB, float64(*bigMiB)*1.048576/d.Seconds(), float64(peakT-t0)/(1<<20), float64(peakA-a0)/(1<<20))
}

var runtimesRE = regexp.MustCompile(`(?m)^interceptd_worker_runtimes\{worker="([^"]+)"\} ([0-9.e+]+)$`)

// workerRuntimes says how many runtimes each worker's pool holds, from the
// daemon's metrics (interceptd_worker_runtimes).
func (b *bench) workerRuntimes() string {
	out, err := exec.Command("ip", "netns", "exec", b.hostNS, "curl", "-sS", "-m", "5", "http://127.0.0.1:9780/metrics").Output()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	var each []string
	for _, m := range runtimesRE.FindAllStringSubmatch(string(out), -1) {
		each = append(each, m[1]+" "+m[2])
	}
	return strings.Join(each, ", ")
}

// scale measures sandbox churn, rule counts and memory at many sandboxes.
func (b *bench) scale() {
	rules := func() int {
		ipt, nft, err := icdnetns.InstalledRules(b.hostNS)
		must(err)
		return ipt + nft
	}
	// The rounds warmed the workers' pools: a reload starts each again
	// from its one first runtime, so that the first RSS figure is the
	// sandboxes' with cold pools (the dropped runtimes' pages may not all
	// be back with the kernel yet: the difference to the warm figure is a
	// lower bound of what the pools hold).
	for _, w := range []string{"wkv", "wpass"} {
		must(b.sb.ReloadWorker(w))
	}
	base, err := b.sb.List()
	must(err)
	one := rules()
	const churn = 100
	start := time.Now()
	for i := 0; i < churn; i++ {
		name := fmt.Sprintf("churn%d", i)
		_, err := b.sb.Create(name, nil)
		must(err)
		must(b.sb.Delete(name))
	}
	perSec := churn / time.Since(start).Seconds()
	start = time.Now()
	for i := 0; i < *sandboxes; i++ {
		_, err := b.sb.Create(fmt.Sprintf("s%d", i), nil)
		must(err)
	}
	toN := time.Since(start)
	many := rules()
	n := len(base) + *sandboxes
	rssT, rssA := b.rss()
	cold := b.workerRuntimes()
	fmt.Printf("sandboxes: %.0f create+delete/s; %d created in %v; rules (iptables and nftables) %d at %d sandboxes, %d at %d; daemon RSS %.1f MiB (anonymous %.1f MiB) at %d, worker runtimes %s\n",
		perSec, *sandboxes, toN.Round(time.Millisecond), one, len(base), many, n, float64(rssT)/(1<<20), float64(rssA)/(1<<20), n, cold)
	// A warm pool: every runtime made. More connections than runtimes
	// on each worker's path, so that each pool fills.
	for _, c := range []struct{ ns, url string }{{b.wkvNS, "http://wkv.bench/hot"}, {b.wpassNS, "http://192.0.2.2/"}} {
		sh("ip", "netns", "exec", c.ns, "wrk", "-t2", "-c32", "-d2s", c.url)
	}
	warmT, warmA := b.rss()
	fmt.Printf("  with warm worker pools (runtimes %s): daemon RSS %.1f MiB (anonymous %.1f MiB) at %d sandboxes (target ≤ 128 MiB)\n",
		b.workerRuntimes(), float64(warmT)/(1<<20), float64(warmA)/(1<<20), n)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for i := 0; i < *sandboxes && ctx.Err() == nil; i++ {
		b.sb.Delete(fmt.Sprintf("s%d", i))
	}
}
