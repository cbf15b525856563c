package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// podman is one test's podman: its storage, run and temporary directories
// and its containers.conf and storage.conf live in a directory of the
// test's, so the host's podman configuration cannot change what it tests
// and the test leaves nothing in /var/lib/containers or /run/libpod (what
// podman writes outside whatever it is told is removed: podmanSystemDirs).
type podman struct {
	t      *testing.T
	bin    string
	dir    string
	global []string // global flags, before the command
	env    []string
}

// podmanImage is the tag of the busybox image each podman test imports.
const podmanImage = "localhost/interceptd-e2e-busybox:latest"

// podmanSystemDirs are where podman 4 as root writes whatever --root,
// --runroot and --tmpdir say: its blob info cache (`podman import`),
// netavark's run directory, and libcni's cache of ADD results (the CNI
// backend). A test removes those that it made, in this order; libcni's
// only when empty again, as other runtimes share them.
var podmanSystemDirs = []struct {
	path   string
	shared bool
}{
	{path: "/var/lib/containers"},
	{path: "/run/containers"},
	{path: "/var/lib/cni/results", shared: true},
	{path: "/var/lib/cni", shared: true},
}

// newPodman sets up podman for one test and removes everything it made
// when the test ends; network is added to containers.conf's [network]
// table. It fails when podman is not installed (.ci/test installs it) and
// skips only when podman is there but cannot run at all.
func newPodman(t *testing.T, network string) *podman {
	t.Helper()
	bin, err := exec.LookPath("podman")
	if err != nil {
		t.Fatal("podman is not installed: run .ci/test, or apt-get install podman")
	}
	// Not t.TempDir: the container's /dev/shm is a tmpfs that podman
	// mounts under the storage root, which must be gone before removal.
	dir, err := os.MkdirTemp("", "interceptd-e2e-podman-")
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "containers.conf")
	storage := filepath.Join(dir, "storage.conf")
	p := &podman{t: t, bin: bin, dir: dir,
		global: []string{
			"--root", filepath.Join(dir, "root"),
			"--runroot", filepath.Join(dir, "run"),
			"--tmpdir", filepath.Join(dir, "tmp"),
			"--storage-driver", "vfs", // no overlay mounts to leak
			"--cgroup-manager", "cgroupfs", // no systemd scopes left behind
			"--events-backend", "none", // no journal or events file
		},
		// Only the test's files: whatever /etc/containers says on this
		// machine (another network backend, default ulimits, an overlay
		// mount program) does not apply.
		env: append(os.Environ(), "CONTAINERS_CONF="+conf, "CONTAINERS_STORAGE_CONF="+storage),
	}
	if err := os.MkdirAll(p.netDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("[network]\nnetwork_config_dir = %q\n%s", p.netDir(), network)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(storage, []byte(fmt.Sprintf("[storage]\ndriver = \"vfs\"\ngraphroot = %q\nrunroot = %q\n",
		filepath.Join(dir, "root"), filepath.Join(dir, "run"))), 0o644); err != nil {
		t.Fatal(err)
	}
	var made []int // indexes in podmanSystemDirs of those not there yet
	for i, d := range podmanSystemDirs {
		if _, err := os.Stat(d.path); errors.Is(err, os.ErrNotExist) {
			made = append(made, i)
		}
	}
	t.Cleanup(func() {
		if left := mountsUnder(dir); len(left) > 0 {
			t.Errorf("mounts left under podman's root: %v", left)
			for i := len(left) - 1; i >= 0; i-- {
				syscall.Unmount(left[i], syscall.MNT_DETACH)
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("removing podman's root: %v", err)
		}
		for _, i := range made {
			if d := podmanSystemDirs[i]; d.shared {
				os.Remove(d.path) // fails unless empty
			} else {
				os.RemoveAll(d.path)
			}
		}
	})
	if out, err := p.output("info"); err != nil {
		t.Skipf("podman is installed but cannot run on this machine: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		// rm and rmi first, so that a failure of either is reported;
		// then reset, which removes whatever a failed test left.
		if out, err := p.output("rm", "--all", "--force", "--time", "0"); err != nil {
			t.Errorf("podman rm: %v\n%s", err, out)
		}
		if out, err := p.output("rmi", "--all", "--force"); err != nil {
			t.Errorf("podman rmi: %v\n%s", err, out)
		}
		if out, err := p.output("system", "reset", "--force"); err != nil {
			t.Errorf("podman system reset: %v\n%s", err, out)
		}
	})
	return p
}

// netDir is podman's network_config_dir: the conflists of its CNI backend.
func (p *podman) netDir() string { return filepath.Join(p.dir, "net.d") }

// command is a podman command with the test's flags and configuration.
func (p *podman) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, p.bin, append(append([]string{}, p.global...), args...)...)
	cmd.Env = p.env
	return cmd
}

// output runs a podman command to completion (at most 2 minutes) and
// returns what it printed, standard error included.
func (p *podman) output(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := p.command(ctx, args...).CombinedOutput()
	return string(out), err
}

// importBusybox makes podmanImage with `podman import` from a tar of a root
// filesystem holding Debian's static busybox: no registry, no pull.
func (p *podman) importBusybox() {
	t := p.t
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal("busybox is not installed (apt-get install busybox-static)")
	}
	root := filepath.Join(p.dir, "rootfs")
	for _, d := range []string{"bin", "etc", "tmp", "proc", "sys", "dev"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, app := range []string{"sh", "nslookup", "wget", "cat", "echo", "grep", "sleep"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", app)); err != nil {
			t.Fatal(err)
		}
	}
	tarball := filepath.Join(p.dir, "rootfs.tar")
	run(t, "tar", "-C", root, "-cf", tarball, ".")
	if out, err := p.output("import", "--change", "ENV PATH=/bin", tarball, podmanImage); err != nil {
		t.Fatalf("podman import: %v\n%s", err, out)
	}
}

// podmanDefaultLimit is what podman 4 asks the runtime to set as both
// RLIMIT_NOFILE and RLIMIT_NPROC in a container when --ulimit does not say.
const podmanDefaultLimit = 1 << 20

// ulimitFlags are the --ulimit flags a container needs on this machine:
// where root may not raise a limit to podman's default (no
// CAP_SYS_RESOURCE, as in some VMs and containers) the runtime fails with
// "error setting rlimit type 7: operation not permitted", so ask for the
// most that podman itself runs with: this process's hard RLIMIT_NOFILE,
// and its hard RLIMIT_NPROC no higher than kernel.pid_max (podman 4.3.1
// was seen running with its own lowered to that). A root container is not held to RLIMIT_NPROC
// anyway; the value only has to be one the runtime may set.
func ulimitFlags(t *testing.T) []string {
	t.Helper()
	var flags []string
	var nofile, nproc unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &nofile); err != nil {
		t.Fatal(err)
	}
	if nofile.Max < podmanDefaultLimit {
		flags = append(flags, fmt.Sprintf("--ulimit=nofile=%d:%d", nofile.Max, nofile.Max))
	}
	if err := unix.Getrlimit(unix.RLIMIT_NPROC, &nproc); err != nil {
		t.Fatal(err)
	}
	n := nproc.Max
	if b, err := os.ReadFile("/proc/sys/kernel/pid_max"); err == nil {
		if max, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil {
			n = min(n, max)
		}
	}
	if n < podmanDefaultLimit {
		flags = append(flags, fmt.Sprintf("--ulimit=nproc=%d:%d", n, n))
	}
	return flags
}

// mountsUnder lists the mount points under dir, in mount order.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			found = append(found, fields[4])
		}
	}
	return found
}

// podmanScript runs inside the container. It prints one line per check,
// so that a failure shows which one and what the container saw.
const podmanScript = `echo "resolv: $(grep nameserver /etc/resolv.conf)"
nslookup my.kv
echo "kv read: $(wget -qO- http://my.kv/greeting)"
wget -qO- --post-data 'written by podman' http://my.kv/from-podman >/dev/null && echo "kv write: ok"
echo "kv read back: $(wget -qO- http://my.kv/from-podman)"
echo "allowed: $(wget -qO- http://example.test/)"
wget -qO- http://other.test/ 2>&1; echo "denied name: exit $?"
wget -qO- http://` + otherIP + `/ 2>&1; echo "denied address: exit $?"
`

func TestAPodmanContainerInASandboxReachesTheHandlersWithZeroConfig(t *testing.T) {
	e := NewEnv(t, Options{})
	p := newPodman(t, "")
	p.importBusybox()
	if _, errOut, code := e.CLI("kv", "put", "greeting", "hello from the host"); code != 0 {
		t.Fatal(errOut)
	}
	// The container is named after the sandbox, not given its id: the
	// namespace must exist before podman creates the container.
	name := "podman-" + e.ID
	sb := e.CreateWith(name, "--deny", "other.test", "--deny", otherIP)

	args := append([]string{"run", "--rm", "--name", name, "--network", "ns:" + sb.NetnsPath}, ulimitFlags(t)...)
	args = append(args, podmanImage, "sh", "-c", podmanScript)
	out, err := p.output(args...)
	t.Logf("podman %s:\n%s", strings.Join(args[:len(args)-1], " "), out)
	if err != nil {
		t.Fatalf("podman run: %v", err)
	}

	tests := []struct {
		name string
		want string
	}{
		// podman copies /etc/netns/<netns>/resolv.conf, which `sandbox
		// create` wrote, into the container: nothing is configured in it.
		{"the container's resolver is the sandbox's gateway", "resolv: nameserver " + sb.Gateway + "\n"},
		{"DNS of a handler name answers with its virtual address", "Address: " + virtualKV},
		{"the kv handler reads what the operator put", "kv read: hello from the host\n"},
		{"the kv handler takes a write", "kv write: ok\n"},
		{"the kv handler reads the write back", "kv read back: written by podman\n"},
		{"an allowed host is reached", `"Host":"example.test"`},
		{"a denied name does not resolve", "wget: bad address 'other.test'\ndenied name: exit 1\n"},
		{"a denied address is refused by the router", "wget: server returned error: HTTP/1.1 403 Forbidden\ndenied address: exit 1\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(out, tt.want) {
				t.Errorf("the container's output lacks %q", tt.want)
			}
		})
	}
	if got, errOut, _ := e.CLI("kv", "get", "from-podman"); got != "written by podman" {
		t.Errorf("the operator reads %q (%s) for the container's write", got, errOut)
	}
	if ps, err := p.output("ps", "--all", "--quiet"); err != nil || strings.TrimSpace(ps) != "" {
		t.Errorf("podman run --rm left containers: %q (%v)", ps, err)
	}
	// podman leaves a namespace it did not make where it was: the
	// sandbox outlives its container and still answers.
	if out := e.MustIn(sb, "curl", "-sS", "-m", "5", "http://my.kv/from-podman"); out != "written by podman" {
		t.Errorf("after the container, the sandbox reads %q", out)
	}
	if _, errOut, code := e.CLI("sandbox", "delete", name); code != 0 {
		t.Errorf("sandbox delete %s after the container: %s", name, errOut)
	}
}

// podmanCNIScript runs in a container attached through podman's CNI
// backend; it stays up after its checks so that the sandbox can be
// inspected while the container runs.
const podmanCNIScript = `grep nameserver /etc/resolv.conf
nslookup my.kv
echo "kv read: $(wget -qO- http://my.kv/greeting)"
wget -qO- --header 'Content-Type: application/json' --post-data '{"writes":[{"key":"from-container","value":"written by podman"}]}' http://state.do/ >/dev/null && echo "state: ok"
echo "checks done"
exec sleep 600
`

func TestAPodmanContainerOnTheCNIBackendIsASandboxWhileItRuns(t *testing.T) {
	c := newCNI(t)
	// The CNI backend, whatever podman would pick on this machine
	// (netavark cannot run CNI plugins), with the plugin as the only one.
	p := newPodman(t, fmt.Sprintf("network_backend = \"cni\"\ncni_plugin_dirs = [%q]\n", c.dir))
	conflist := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "interceptd",
 "plugins": [{"type": "interceptd-cni", "socket": %q}]}`, c.Socket)
	if err := os.WriteFile(filepath.Join(p.netDir(), "10-interceptd.conflist"), []byte(conflist), 0o644); err != nil {
		t.Fatal(err)
	}
	p.importBusybox()
	if _, errOut, code := c.CLI("kv", "put", "greeting", "hello from the host"); code != 0 {
		t.Fatal(errOut)
	}
	if out, err := p.output("info", "--format", "{{.Host.NetworkBackend}}"); err != nil || strings.TrimSpace(out) != "cni" {
		t.Fatalf("podman's network backend is %q (%v), want cni", out, err)
	}

	name := "podman-cni-" + c.ID
	args := append([]string{"run", "--detach", "--name", name, "--network", "interceptd"}, ulimitFlags(t)...)
	args = append(args, podmanImage, "sh", "-c", podmanCNIScript)
	if out, err := p.output(args...); err != nil {
		t.Fatalf("podman run: %v\n%s", err, out)
	}
	var logs string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		logs, _ = p.output("logs", name)
		if strings.Contains(logs, "checks done") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the container did not finish its checks in 30s:\n%s", logs)
		}
	}
	t.Logf("the container's output:\n%s", logs)
	out, err := p.output("inspect", "--format", "{{.Id}} {{.NetworkSettings.SandboxKey}}", name)
	id, nsPath, _ := strings.Cut(strings.TrimSpace(out), " ")
	if err != nil || len(id) != 64 || nsPath == "" {
		t.Fatalf("podman inspect: %q (%v)", out, err)
	}
	t.Logf("container %s, namespace %s", id, nsPath)

	// ADD made a sandbox named after the container id, in podman's own
	// namespace for the container.
	shown, errOut, code := c.CLI("sandbox", "show", id)
	if code != 0 {
		t.Fatalf("no sandbox for the running container %s: %s", id, errOut)
	}
	var sb struct {
		NetnsPath string `json:"netns_path"`
		Gateway   string `json:"gateway"`
	}
	if err := json.Unmarshal([]byte(shown), &sb); err != nil {
		t.Fatalf("sandbox show: %v\n%s", err, shown)
	}
	if sb.NetnsPath != nsPath {
		t.Errorf("the sandbox's namespace is %q, podman's for the container is %q", sb.NetnsPath, nsPath)
	}
	tests := []struct {
		name string
		want string
	}{
		{"the container's resolv.conf names the sandbox's gateway", "nameserver " + sb.Gateway + "\n"},
		{"DNS of a handler name answers with its virtual address", "Address: " + virtualKV},
		{"the kv handler reads what the operator put", "kv read: hello from the host\n"},
		{"the state handler takes a transaction", "state: ok\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(logs, tt.want) {
				t.Errorf("the container's output lacks %q", tt.want)
			}
		})
	}
	if got, errOut, _ := c.CLI("state", "get", id, "from-container"); got != "written by podman" {
		t.Errorf("the operator reads %q (%s) as %s's state", got, errOut, id)
	}

	// DEL, when the container goes, removes the sandbox; podman removes
	// its namespace.
	if out, err := p.output("rm", "--force", "--time", "0", name); err != nil {
		t.Fatalf("podman rm: %v\n%s", err, out)
	}
	if _, _, code := c.CLI("sandbox", "show", id); code == 0 {
		t.Errorf("the sandbox %s is still there after podman rm", id)
	}
	if _, err := os.Stat(nsPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the container's namespace %s is still there after podman rm (%v)", nsPath, err)
	}
}
