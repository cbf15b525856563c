// Package etcdtest runs real etcd servers (Debian's etcd-server, the etcd
// binary on PATH) for tests: one member on loopback ports, or a cluster of
// members on addresses the test chooses, each optionally started inside a
// network namespace. Data directories are the test's temporary ones, and
// every process is killed in the test's cleanup.
package etcdtest

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Binary returns the etcd binary's path, or skips t where etcd cannot be
// had. Under CI (CI set) a missing etcd fails: .ci/test installs it.
func Binary(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("etcd")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("etcd is not installed (Debian's etcd-server); .ci/test installs it")
		}
		t.Skip("etcd is not installed (apt-get install etcd-server)")
	}
	return p
}

// Member is one etcd server.
type Member struct {
	Name       string
	ClientURL  string
	PeerURL    string
	dir        string
	netns      string
	bin        string
	cluster    string
	extra      []string
	tls        *tls.Config
	mu         sync.Mutex
	cmd        *exec.Cmd
	done       chan struct{}
	t          testing.TB
	firstStart bool
}

// Cluster is a set of members started together.
type Cluster struct {
	Members []*Member
}

// Endpoints are the members' client URLs.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.ClientURL)
	}
	return out
}

// MemberSpec places one member: its client and peer addresses
// (host:port) and the network namespace it runs in ("" for the test's).
type MemberSpec struct {
	Client, Peer, Netns string
}

// freePort returns a loopback port nobody listens on now.
func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Start runs one member on loopback ports it chooses.
func Start(t testing.TB) *Cluster {
	t.Helper()
	return StartCluster(t, []MemberSpec{{Client: freePort(t), Peer: freePort(t)}})
}

// StartWithFlags runs one member on loopback with flags added after the
// helper's own, so that a flag given here wins over the helper's
// ("--max-txn-ops", "128": etcd's default, which interceptd says is too
// low).
func StartWithFlags(t testing.TB, flags ...string) *Cluster {
	t.Helper()
	return startCluster(t, []MemberSpec{{Client: freePort(t), Peer: freePort(t)}}, "http", nil, flags)
}

// StartTLS runs one member on loopback that serves its clients over TLS
// with certFile and keyFile and asks them for a certificate signed by
// caFile (--client-cert-auth). client is what the health checks present.
func StartTLS(t testing.TB, caFile, certFile, keyFile string, client *tls.Config) *Cluster {
	t.Helper()
	return startCluster(t, []MemberSpec{{Client: freePort(t), Peer: freePort(t)}}, "https", client,
		[]string{"--cert-file", certFile, "--key-file", keyFile, "--trusted-ca-file", caFile, "--client-cert-auth"})
}

// StartCluster runs a member per spec as one cluster and waits until it
// answers. Extra server flags: a txn may hold 1024 operations (a state
// transaction of 128 keys writes keys, expiry index entries and usage),
// and short heartbeats so that a test sees a new leader within a second.
func StartCluster(t testing.TB, specs []MemberSpec) *Cluster {
	t.Helper()
	return startCluster(t, specs, "http", nil, nil)
}

func startCluster(t testing.TB, specs []MemberSpec, scheme string, client *tls.Config, extra []string) *Cluster {
	t.Helper()
	bin := Binary(t)
	var initial []string
	c := &Cluster{}
	for i, sp := range specs {
		m := &Member{
			Name: fmt.Sprintf("m%d", i), ClientURL: scheme + "://" + sp.Client, PeerURL: "http://" + sp.Peer,
			dir: t.TempDir(), netns: sp.Netns, bin: bin, t: t, firstStart: true, extra: extra, tls: client,
		}
		initial = append(initial, m.Name+"="+m.PeerURL)
		c.Members = append(c.Members, m)
	}
	for _, m := range c.Members {
		m.cluster = strings.Join(initial, ",")
		m.Start()
	}
	t.Cleanup(func() {
		for _, m := range c.Members {
			m.Kill()
		}
	})
	c.Wait(t, 30*time.Second)
	return c
}

// Start starts (or restarts, on its data) a stopped member.
func (m *Member) Start() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return
	}
	state := "existing"
	if m.firstStart {
		state = "new"
		m.firstStart = false
	}
	args := []string{
		"--name", m.Name, "--data-dir", m.dir,
		"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
		"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
		"--initial-cluster", m.cluster, "--initial-cluster-state", state,
		"--initial-cluster-token", "interceptd-test",
		"--max-txn-ops", "1024",
		"--heartbeat-interval", "50", "--election-timeout", "500",
		"--logger", "zap", "--log-level", "error",
	}
	args = append(args, m.extra...)
	name := m.bin
	if m.netns != "" {
		args = append([]string{"netns", "exec", m.netns, m.bin}, args...)
		name = "ip"
	}
	cmd := exec.Command(name, args...)
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &lockedBuilder{b: &logs}, &lockedBuilder{b: &logs}
	if err := cmd.Start(); err != nil {
		m.t.Fatalf("starting etcd %s: %v", m.Name, err)
	}
	m.cmd, m.done = cmd, make(chan struct{})
	done := m.done
	go func() { cmd.Wait(); close(done) }()
}

type lockedBuilder struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (l *lockedBuilder) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() < 1<<20 {
		l.b.Write(p)
	}
	return len(p), nil
}

// Pid is the member's process id (for a benchmark reading its CPU time
// from /proc), 0 when it is stopped. With a namespace it is `ip netns
// exec`'s, which execs etcd in its place.
func (m *Member) Pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil || m.cmd.Process == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

// Kill kills the member's process (SIGKILL: no goodbye to its peers) and
// waits for it to be gone. Its data stays for Start.
func (m *Member) Kill() {
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		m.t.Errorf("etcd %s did not die", m.Name)
	}
}

// Wait waits until every member answers a linearizable read, or fails t.
func (c *Cluster) Wait(t testing.TB, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for _, m := range c.Members {
		for {
			err := m.ping()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("etcd %s at %s does not answer: %v", m.Name, m.ClientURL, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// ping asks the member's /health, which says true once it has a leader;
// a member in a namespace is asked from inside it (curl), where the test's
// own namespace may have no route to it.
func (m *Member) ping() error {
	body, err := m.get("/health", "")
	if err != nil {
		return err
	}
	if !strings.Contains(body, `"health":"true"`) {
		return fmt.Errorf("not healthy: %s", body)
	}
	return nil
}

// get GETs (or, with a body, POSTs) path of the member's client URL.
func (m *Member) get(path, post string) (string, error) {
	if m.netns != "" {
		args := []string{"netns", "exec", m.netns, "curl", "-sS", "-m", "1"}
		if post != "" {
			args = append(args, "-X", "POST", "--data", post)
		}
		out, err := exec.Command("ip", append(args, m.ClientURL+path)...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("%v: %s", err, out)
		}
		return string(out), nil
	}
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: m.tls}}
	var r *http.Response
	var err error
	if post != "" {
		r, err = c.Post(m.ClientURL+path, "application/json", strings.NewReader(post))
	} else {
		r, err = c.Get(m.ClientURL + path)
	}
	if err != nil {
		return "", err
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	return string(b), err
}

// Leader returns the member that leads the cluster now, asking each
// running member's status (etcd's JSON gateway) until one names itself.
func (c *Cluster) Leader(t testing.TB) *Member {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range c.Members {
			m.mu.Lock()
			running := m.cmd != nil
			m.mu.Unlock()
			if !running {
				continue
			}
			body, err := m.get("/v3/maintenance/status", "{}")
			if err != nil {
				continue
			}
			var st struct {
				Header struct {
					MemberID string `json:"member_id"`
				} `json:"header"`
				Leader string `json:"leader"`
			}
			if json.Unmarshal([]byte(body), &st) == nil && st.Leader != "" && st.Leader == st.Header.MemberID {
				return m
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("no etcd member says it leads")
	return nil
}

// Client returns a client of the cluster, closed in t's cleanup.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}
