package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// daemonSetCaps are the capabilities deploy/kubernetes/daemonset.yaml
// gives the daemon: NET_ADMIN (12), NET_RAW (13), SYS_ADMIN (21).
const daemonSetCaps = 1<<12 | 1<<13 | 1<<21

// TestTheDaemonWorksWithTheDaemonSetsCapabilitiesAndReadOnlyProcSys runs
// the daemon the way deploy/kubernetes/daemonset.yaml does, short of a
// cluster: in a mount namespace of its own that receives the host's
// mounts (mountPropagation HostToContainer: the runtime's namespaces
// appear in /run/netns after it started), /proc/sys read-only as in every
// container that is not privileged, the host's /proc/sys/net mounted
// read-write elsewhere and named by INTERCEPTD_SYSCTL_DIR, and no
// capability but the DaemonSet's. A pod chained after ptp is intercepted.
func TestTheDaemonWorksWithTheDaemonSetsCapabilitiesAndReadOnlyProcSys(t *testing.T) {
	for _, tool := range []string{"unshare", "setpriv", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (util-linux)", tool)
		}
	}
	dir := t.TempDir()
	sysctlDir := filepath.Join(dir, "host", "proc", "sys")
	if err := os.MkdirAll(filepath.Join(sysctlDir, "net"), 0o755); err != nil {
		t.Fatal(err)
	}
	// The bind of /proc/sys/net comes first: one made from a read-only
	// mount would be read-only too.
	wrapper := filepath.Join(dir, "as-daemonset")
	script := `#!/bin/sh
set -e
mount --bind /proc/sys/net ` + filepath.Join(sysctlDir, "net") + `
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
exec setpriv --bounding-set -all,+net_admin,+net_raw,+sys_admin --inh-caps -all -- "$@"
`
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	c := newChainWith(t, Options{
		Wrap: []string{"unshare", "--mount", "--propagation", "slave", wrapper},
		Env:  []string{"INTERCEPTD_SYSCTL_DIR=" + sysctlDir},
	})

	t.Run("the daemon has the DaemonSet's capabilities and nothing more", func(t *testing.T) {
		status, err := os.ReadFile("/proc/" + strconv.Itoa(c.daemon.Process.Pid) + "/status")
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
				if got, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64); got != daemonSetCaps {
					t.Errorf("CapEff %x, want %x", got, uint64(daemonSetCaps))
				}
			}
		}
		pid := strconv.Itoa(c.daemon.Process.Pid)
		out, err := exec.Command("nsenter", "--mount=/proc/"+pid+"/ns/mnt", "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "Read-only") {
			t.Errorf("/proc/sys is writable in the daemon's mount namespace: %v %s", err, out)
		}
	})

	nsName := "ie2eds-" + c.ID
	nsPath := c.runtimeNetns(nsName) // after the daemon started, as a pod's
	rt := c.rt("ctrds-"+c.ID, nsPath, "team-b/api-0")
	res := c.add(t, rt)
	sb := c.container(t, nsName, res)
	sb.Name = "team-b.api-0"
	var host string
	for _, ifc := range res.Interfaces {
		if ifc.Sandbox == "" {
			host = ifc.Name
		}
	}

	t.Run("the chained pod is intercepted", func(t *testing.T) {
		if got := c.MustIn(sb, "dig", "+short", "+time=2", "+tries=1", "@"+nowhereIP, "my.kv"); got != virtualKV+"\n" {
			t.Errorf("dig my.kv: %q", got)
		}
		c.MustIn(sb, "curl", "-sS", "-f", "-m", "5", "-X", "PUT", "--data", "ds", "http://state.do/k")
		if got, errOut, _ := c.CLI("state", "get", "team-b.api-0", "k"); got != "ds" {
			t.Errorf("the pod's state: %q %s", got, errOut)
		}
		// A loopback resolver: the capture the daemon set up inside the
		// pod's namespace (route_localnet written through the sysctl dir).
		if got := c.MustIn(sb, "dig", "+short", "+time=2", "+tries=1", "@127.0.0.53", "my.kv"); got != virtualKV+"\n" {
			t.Errorf("dig @127.0.0.53 my.kv: %q", got)
		}
	})
	t.Run("the sysctls reached the kernel through the sysctl dir", func(t *testing.T) {
		out, err := exec.Command("ip", "netns", "exec", c.HostNS, "cat", "/proc/sys/net/ipv4/conf/"+host+"/rp_filter").Output()
		if err != nil || strings.TrimSpace(string(out)) != "1" {
			t.Errorf("rp_filter of %s: %q %v", host, out, err)
		}
	})
	if err := c.del(rt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
}
