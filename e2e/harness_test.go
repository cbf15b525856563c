// Package e2e runs interceptd for real: each test builds a throwaway "host"
// network namespace, starts the daemon binary inside it (so its iptables
// rules, ip rules and routes die with that namespace), an "upstream"
// namespace with the test's own HTTP and DNS servers, and drives sandboxes
// with real tools (dig, nslookup, curl, busybox wget). Traffic only ever goes
// to addresses inside namespaces the test made.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	icdnetns "github.com/interceptd/interceptd/netns"
	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"
)

// Addresses of the test's upstream link, inside the test's namespaces.
const (
	hostUpIP   = "192.0.2.1"  // the host namespace's end
	upstreamIP = "192.0.2.2"  // the upstream namespace: HTTP :80, DNS :53
	nowhereIP  = "192.0.2.77" // on the link, but no host has it
	otherIP    = "192.0.2.3"  // a second upstream address, serving the same echo
	virtualKV  = "198.18.213.1"
)

var binary string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("e2e: not root: every test here skips (they need CAP_NET_ADMIN and CAP_SYS_ADMIN)")
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "interceptd-e2e-bin-")
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "interceptd")
	out, err := exec.Command("go", "build", "-o", binary, "../cmd/interceptd").CombinedOutput()
	if err != nil {
		fmt.Printf("building interceptd: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, tool := range []string{"ip", "iptables", "iptables-save", "nft", "nsenter", "dig", "nslookup", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run .ci/run, or apt-get install iproute2 iptables util-linux dnsutils curl", tool)
		}
	}
}

// Env is one test's world: host and upstream namespaces and a daemon.
type Env struct {
	t       *testing.T
	ID      string
	HostNS  string // name under /run/netns
	UpNS    string
	Prefix  string // sandbox namespace prefix
	Dir     string
	Socket  string
	Config  string
	Metrics string // metrics address inside the host namespace

	env    []string
	mu     sync.Mutex
	asked  []string // every name the test's DNS server was asked, in order
	log    bytes.Buffer
	daemon *exec.Cmd
	exited chan struct{}
	// sharedPrefix: another Env's prefix, whose namespaces that Env checks.
	sharedPrefix bool
	wrap         []string
}

// Options shape an Env.
type Options struct {
	// ExtraConfig is appended to the generated config (top-level YAML keys
	// that the generated part does not set).
	ExtraConfig string
	// DNS replaces the generated dns section.
	DNS string
	// Env is added to the daemon's environment.
	Env []string
	// Listen is added to the generated listen section (indented YAML lines).
	Listen string
	// Prefix, when set, is the sandbox namespace prefix instead of one of
	// the Env's own: another Env's, for two daemons on one prefix. The
	// teardown then leaves the prefix's leftovers to the Env that made it.
	Prefix string
	// NoStart: the test starts the daemon (Start, TryStart).
	NoStart bool
	// Wrap, when set, is a command line the daemon's is appended to: a
	// wrapper that runs it the way another supervisor would (a container's
	// capabilities and mounts). It must exec the rest, so that the
	// daemon's pid is the wrapper's.
	Wrap []string
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func randomID() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// NewEnv builds the namespaces and upstream servers and starts the daemon.
func NewEnv(t *testing.T, o Options) *Env {
	t.Helper()
	requireRoot(t)
	e := &Env{t: t, ID: randomID(), Dir: t.TempDir(), env: o.Env, wrap: o.Wrap}
	e.HostNS = "ie2e-" + e.ID + "-host"
	e.UpNS = "ie2e-" + e.ID + "-up"
	e.Prefix = "ie2e" + e.ID + "-"
	if o.Prefix != "" {
		e.Prefix, e.sharedPrefix = o.Prefix, true
	}
	e.Socket = filepath.Join(e.Dir, "admin.sock")
	e.Config = filepath.Join(e.Dir, "interceptd.yaml")
	e.Metrics = "127.0.0.1:9780"

	for _, ns := range []string{e.HostNS, e.UpNS} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	run(t, "ip", "-n", e.HostNS, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", e.UpNS)
	run(t, "ip", "-n", e.HostNS, "addr", "add", hostUpIP+"/24", "dev", "up0")
	run(t, "ip", "-n", e.HostNS, "link", "set", "up0", "up")
	run(t, "ip", "-n", e.UpNS, "addr", "add", upstreamIP+"/24", "dev", "eth0")
	run(t, "ip", "-n", e.UpNS, "addr", "add", otherIP+"/24", "dev", "eth0")
	run(t, "ip", "-n", e.UpNS, "link", "set", "eth0", "up")
	e.startUpstreams()

	dnsSection := o.DNS
	if dnsSection == "" {
		dnsSection = fmt.Sprintf("dns:\n  upstreams: [%q]\n  timeout: 1s\n", upstreamIP+":53")
	}
	cfg := fmt.Sprintf(`version: 1
data_dir: %s
admin_socket: %s
listen:
  metrics: %s
%s
%s
sandbox:
  netns_prefix: %s
%s`, filepath.Join(e.Dir, "data"), e.Socket, e.Metrics, o.Listen, dnsSection, e.Prefix, o.ExtraConfig)
	if err := os.WriteFile(e.Config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	// Cleanups run last-in first-out: the daemon stops and the leak checks
	// run before the namespaces above are deleted.
	t.Cleanup(e.teardown)
	if !o.NoStart {
		e.Start()
	}
	return e
}

// TryStart starts the daemon and waits until its admin API answers (true)
// or it exits (false); either way within 15 s.
func (e *Env) TryStart() bool {
	t := e.t
	t.Helper()
	// nsenter switches only the network namespace. `ip netns exec` would
	// also give the daemon a private mount namespace, and the sandbox
	// namespaces it bind-mounts would then be invisible to everyone else.
	argv := append(slices.Clone(e.wrap), "nsenter", "--net=/run/netns/"+e.HostNS, binary, "serve", "--config", e.Config)
	cmd := exec.Command(argv[0], argv[1:]...)
	w := &lockedWriter{e: e}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.Env = append(os.Environ(), e.env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e.daemon, e.exited = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(e.exited) }()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, _, code := e.CLI("sandbox", "list"); code == 0 {
			return true
		}
		select {
		case <-e.exited:
			e.daemon = nil
			return false
		default:
		}
	}
	t.Fatalf("daemon neither ready nor exited after 15s:\n%s", e.Log())
	return false
}

// Start starts the daemon and waits until its admin API answers.
func (e *Env) Start() {
	e.t.Helper()
	if !e.TryStart() {
		e.t.Fatalf("daemon exited during start:\n%s", e.Log())
	}
}

// Stop sends SIGTERM and waits for the daemon to exit.
func (e *Env) Stop() {
	if e.daemon == nil {
		return
	}
	e.daemon.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exited:
	case <-time.After(15 * time.Second):
		e.t.Errorf("daemon did not stop within 15s of SIGTERM")
		e.daemon.Process.Kill()
		<-e.exited
	}
	if code := e.daemon.ProcessState.ExitCode(); code != 0 {
		e.t.Errorf("daemon exited with %d after SIGTERM:\n%s", code, e.Log())
	}
	e.daemon = nil
}

type lockedWriter struct{ e *Env }

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.e.mu.Lock()
	defer w.e.mu.Unlock()
	return w.e.log.Write(b)
}

// Log returns what the daemon has logged.
func (e *Env) Log() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.log.String()
}

// teardown stops the daemon, runs `interceptd cleanup`, and checks that
// nothing the daemon made is left, in the host namespace or on the machine.
// waitLogCount waits up to a few seconds for the daemon's log to hold want
// copies of line, and returns how many it holds: a record is written after
// the answer or reset that a client sees, so a client can return first.
func (e *Env) waitLogCount(line string, want int) int {
	deadline := time.Now().Add(3 * time.Second)
	for {
		n := strings.Count(e.Log(), line)
		if n >= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *Env) teardown() {
	t := e.t
	e.Stop()
	if t.Failed() {
		t.Logf("daemon log:\n%s", e.Log())
	}
	out, err := exec.Command("nsenter", "--net=/run/netns/"+e.HostNS, binary, "cleanup", "--config", e.Config).CombinedOutput()
	if err != nil {
		t.Errorf("interceptd cleanup: %v\n%s", err, out)
	}
	for _, dir := range []string{"/run/netns", "/etc/netns", icdnetns.DefaultOwnerDir} {
		if e.sharedPrefix {
			break // the Env whose prefix it is checks
		}
		left, _ := filepath.Glob(filepath.Join(dir, e.Prefix+"*"))
		if len(left) > 0 {
			t.Errorf("left after cleanup: %v", left)
			for _, p := range left {
				syscall.Unmount(p, syscall.MNT_DETACH)
				os.RemoveAll(p)
			}
		}
	}
	save, _ := exec.Command("ip", "netns", "exec", e.HostNS, "iptables-save").Output()
	if bytes.Contains(save, []byte("INTERCEPTD")) {
		t.Errorf("iptables rules left after cleanup:\n%s", save)
	}
	if nft, _ := exec.Command("ip", "netns", "exec", e.HostNS, "nft", "list", "tables").Output(); bytes.Contains(nft, []byte("interceptd")) {
		t.Errorf("nftables table left after cleanup:\n%s", nft)
	}
	rules, _ := exec.Command("ip", "-n", e.HostNS, "rule").Output()
	if bytes.Contains(rules, []byte("lookup 461")) {
		t.Errorf("ip rule left after cleanup:\n%s", rules)
	}
	routes, _ := exec.Command("ip", "-n", e.HostNS, "route", "show", "table", "461").Output()
	if len(bytes.TrimSpace(routes)) > 0 {
		t.Errorf("routes left in table 461 after cleanup:\n%s", routes)
	}
	inNetns("/run/netns/"+e.HostNS, func() error {
		sets, err := netlink.IpsetListAll()
		if err == nil && len(sets) > 0 {
			names := []string{}
			for _, st := range sets {
				names = append(names, st.SetName)
			}
			t.Errorf("ipsets left after cleanup: %v", names)
		}
		return nil
	})
	links, _ := exec.Command("ip", "-n", e.HostNS, "-o", "link", "show", "type", "veth").Output()
	for _, l := range strings.Split(string(links), "\n") {
		if strings.Contains(l, ": icd") {
			t.Errorf("sandbox link left after cleanup: %s", l)
		}
	}
}

// CLI runs the interceptd CLI against this env's daemon.
func (e *Env) CLI(args ...string) (stdout, stderr string, code int) {
	return e.cliIn(os.Environ(), args...)
}

// cliIn is CLI with the environment environ.
func (e *Env) cliIn(environ []string, args ...string) (stdout, stderr string, code int) {
	cmd := exec.Command(binary, args...)
	cmd.Env = append(environ, "INTERCEPTD_SOCKET="+e.Socket)
	var o, s bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &s
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("running CLI: %v", err)
	}
	return o.String(), s.String(), code
}

// Sandbox is the CLI's JSON view of a sandbox.
type Sandbox struct {
	Name, Netns, NetnsPath, Addr, Gateway string
}

// Create creates a sandbox through the CLI, checks the namespace path it
// prints, and returns it.
func (e *Env) Create(name string) Sandbox {
	e.t.Helper()
	sb := e.CreateWith(name)
	if want := "/run/netns/" + e.Prefix + name; sb.NetnsPath != want {
		e.t.Fatalf("sandbox %s lives at %q, want %q", name, sb.NetnsPath, want)
	}
	return sb
}

// In runs a command inside a sandbox's namespace, as a user would.
func (e *Env) In(sb Sandbox, args ...string) (string, int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", sb.Netns}, args...)...).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("running %v in %s: %v", args, sb.Name, err)
	}
	return string(out), 0
}

// MustIn is In that fails the test on a non-zero exit.
func (e *Env) MustIn(sb Sandbox, args ...string) string {
	e.t.Helper()
	out, code := e.In(sb, args...)
	if code != 0 {
		e.t.Fatalf("%v in %s: exit %d\n%s", args, sb.Name, code, out)
	}
	return out
}

// Scrape fetches /metrics from inside the host namespace.
func (e *Env) Scrape() string {
	e.t.Helper()
	out, err := exec.Command("nsenter", "--net=/run/netns/"+e.HostNS, "curl", "-sS", "-m", "5", "http://"+e.Metrics+"/metrics").CombinedOutput()
	if err != nil {
		e.t.Fatalf("scraping metrics: %v\n%s", err, out)
	}
	return string(out)
}

// gauge reads one unlabelled gauge from the daemon's metrics.
func (e *Env) gauge(name string) float64 {
	e.t.Helper()
	v, ok := sample(e.Scrape(), name)
	if !ok {
		e.t.Fatalf("no %s in the metrics", name)
	}
	return v
}

// sample reads one series, written out whole with its labels as the
// exposition format prints them, from scraped metrics; ok is false if it
// is absent.
func sample(metrics, series string) (v float64, ok bool) {
	_, rest, ok := strings.Cut(metrics, "\n"+series+" ")
	if !ok {
		return 0, false
	}
	line, _, _ := strings.Cut(rest, "\n")
	v, _ = strconv.ParseFloat(line, 64)
	return v, true
}

// inNetns runs fn inside the namespace at path (see netns.Do).
func inNetns(path string, fn func() error) error { return icdnetns.Do(path, fn) }

// ListenIn opens a TCP listener inside a namespace.
func (e *Env) ListenIn(nsPath, addr string) net.Listener {
	e.t.Helper()
	var ln net.Listener
	err := inNetns(nsPath, func() (err error) {
		ln, err = net.Listen("tcp4", addr)
		return err
	})
	if err != nil {
		e.t.Fatalf("listening on %s in %s: %v", addr, nsPath, err)
	}
	e.t.Cleanup(func() { ln.Close() })
	return ln
}

// Echo is what the upstream HTTP server reports about a request it got.
type Echo struct {
	Method, Host, URI string
	Header            http.Header
	Body              string
}

// serveEcho serves the echo (what the upstream got, as JSON) on addr in the
// upstream namespace.
func (e *Env) serveEcho(addr string) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(Echo{Method: r.Method, Host: r.Host, URI: r.RequestURI, Header: r.Header, Body: string(body)})
	})}
	go srv.Serve(e.ListenIn("/run/netns/"+e.UpNS, addr))
	e.t.Cleanup(func() { srv.Close() })
}

func (e *Env) startUpstreams() {
	t := e.t
	up := "/run/netns/" + e.UpNS
	for _, a := range []string{upstreamIP + ":80", otherIP + ":80", upstreamIP + ":2222", otherIP + ":2222"} {
		e.serveEcho(a)
	}

	var pc net.PacketConn
	if err := inNetns(up, func() (err error) { pc, err = net.ListenPacket("udp4", upstreamIP+":53"); return err }); err != nil {
		t.Fatal(err)
	}
	dln := e.ListenIn(up, upstreamIP+":53")
	var pc2 net.PacketConn // DNS on a non-DNS port: plain routed UDP
	if err := inNetns(up, func() (err error) { pc2, err = net.ListenPacket("udp4", upstreamIP+":5300"); return err }); err != nil {
		t.Fatal(err)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		e.mu.Lock()
		e.asked = append(e.asked, strings.ToLower(q.Name))
		e.mu.Unlock()
		if rrs, ok := hostileNames[strings.ToLower(q.Name)]; ok {
			// The hostile review's names: answers that point allowed
			// names at protected or private addresses, and a denied zone.
			if q.Qtype == dns.TypeA {
				for _, s := range rrs {
					rr, _ := dns.NewRR(s)
					m.Answer = append(m.Answer, rr)
				}
			}
			w.WriteMsg(m)
			return
		}
		switch {
		case strings.EqualFold(q.Name, "example.test.") && q.Qtype == dns.TypeA:
			rr, _ := dns.NewRR("example.test. 60 IN A " + upstreamIP)
			m.Answer = append(m.Answer, rr)
		case (strings.EqualFold(q.Name, "api.test.") || strings.EqualFold(q.Name, "api.github.com.")) && q.Qtype == dns.TypeA:
			// api.github.com: the seed worker's credential injection goes
			// there (e2e/workers_test.go).
			rr, _ := dns.NewRR(q.Name + " 60 IN A " + upstreamIP)
			m.Answer = append(m.Answer, rr)
		case strings.EqualFold(q.Name, "other.test.") && q.Qtype == dns.TypeA:
			rr, _ := dns.NewRR("other.test. 60 IN A " + otherIP)
			m.Answer = append(m.Answer, rr)
		case strings.EqualFold(q.Name, "example.test."), strings.EqualFold(q.Name, "other.test."):
		// Names of e2e/routed_policy_test.go: an allowed wildcard whose
		// answers point at a protected or a private destination (the test
		// puts those addresses on the upstream namespace itself).
		case q.Qtype == dns.TypeA && routedPolicyNames[strings.ToLower(q.Name)] != "":
			rr, _ := dns.NewRR(q.Name + " 60 IN A " + routedPolicyNames[strings.ToLower(q.Name)])
			m.Answer = append(m.Answer, rr)
		default:
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: dln, Handler: h}, {PacketConn: pc2, Handler: h}} {
		go s.ActivateAndServe()
		t.Cleanup(func() { s.Shutdown() })
	}
}

// lanIP is a "LAN" address (RFC 1918) that tests put in the upstream
// namespace when they need one; hostileNames answer with it.
const lanIP = "192.168.77.2"

// hostileNames are what the test's DNS server answers for the names an
// attacker controls: an allowed zone pointed at the metadata address, at
// "this network" (0.0.0.0/8) and at the LAN, and a zone that policies deny.
var hostileNames = map[string][]string{
	"meta.good.test.":  {"meta.good.test. 60 IN A 169.254.169.254"},
	"mixed.good.test.": {"mixed.good.test. 60 IN A 169.254.169.254", "mixed.good.test. 60 IN A " + upstreamIP},
	"lan.good.test.":   {"lan.good.test. 60 IN A " + lanIP},
	"zero.good.test.":  {"zero.good.test. 60 IN A 0.1.2.3", "zero.good.test. 60 IN A " + upstreamIP},
	"x.evil.test.":     {"x.evil.test. 60 IN A " + otherIP},
	"alias.good.test.": {"alias.good.test. 60 IN CNAME x.evil.test.", "x.evil.test. 60 IN A " + otherIP},
}

// Asked returns the names the test's DNS server has been asked so far.
func (e *Env) Asked() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.asked...)
}

// CreateWith creates a sandbox with extra `sandbox create` flags.
func (e *Env) CreateWith(name string, flags ...string) Sandbox {
	e.t.Helper()
	out, errOut, code := e.CLI(append([]string{"sandbox", "create", name}, flags...)...)
	if code != 0 {
		e.t.Fatalf("sandbox create %s %v: %s", name, flags, errOut)
	}
	printed := strings.TrimSpace(out)
	out, errOut, code = e.CLI("sandbox", "show", name)
	if code != 0 {
		e.t.Fatalf("sandbox show %s: %s", name, errOut)
	}
	var raw map[string]any
	json.Unmarshal([]byte(out), &raw)
	str := func(k string) string { s, _ := raw[k].(string); return s }
	sb := Sandbox{Name: name, Netns: str("netns"), NetnsPath: str("netns_path"), Addr: str("addr"), Gateway: str("gateway")}
	if printed != sb.NetnsPath {
		e.t.Fatalf("sandbox create printed %q, but the sandbox lives at %q", printed, sb.NetnsPath)
	}
	return sb
}

// Kill sends SIGKILL to the daemon: no cleanup of any kind runs.
func (e *Env) Kill() {
	e.daemon.Process.Kill()
	<-e.exited
	e.daemon = nil
}
