// Package netns builds and tears down sandboxes: one network namespace per
// container, bind-mounted where `ip netns` finds it, joined to the daemon's
// namespace by a veth pair with a /30 from the pool, plus the interception
// ruleset (nftables tproxy for port-80 HTTP; iptables for DNS capture,
// anti-spoofing and isolation) as data with idempotent setup and teardown.
//
// All netlink work goes through handles bound to a namespace; the only
// thread-namespace switch is the one that creates a namespace, on a locked
// thread that is thrown away if it cannot be switched back.
package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ensureNetnsDir makes dir a shared mount point, as iproute2 does, so that a
// namespace bind-mounted there is visible to every mount namespace that
// shares it (runtimes, `ip netns exec`, the admin).
func ensureNetnsDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("making %s shared: %w", dir, err)
	}
	// Not a mount point yet: bind it onto itself, then make it shared.
	if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind-mounting %s: %w", dir, err)
	}
	if err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("making %s shared: %w", dir, err)
	}
	return nil
}

// createNamespace creates a new network namespace and bind-mounts it at path.
func createNamespace(path string) error {
	if err := ensureNetnsDir(filepath.Dir(path)); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("creating mount point %s: %w", path, err)
	}
	f.Close()

	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("getting current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("unsharing network namespace: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		merr := unix.Mount(src, path, "none", unix.MS_BIND, "")
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: Go ends it when this goroutine
			// returns, so no other goroutine runs in the wrong namespace.
			errc <- fmt.Errorf("restoring thread namespace: %w", err)
			return
		}
		runtime.UnlockOSThread()
		if merr != nil {
			merr = fmt.Errorf("bind-mounting namespace at %s: %w", path, merr)
		}
		errc <- merr
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// removeNamespace unmounts and removes a namespace mount point. A namespace
// that is already gone counts as removed. Processes still inside keep the
// namespace alive, but its veth is gone, so they have no network.
func removeNamespace(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmounting %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", path, err)
	}
	return nil
}

// SysctlDirEnv names the environment variable that moves where sysctls
// are written from /proc/sys: a container runtime mounts /proc/sys
// read-only in every container that is not privileged, so the Kubernetes
// DaemonSet mounts the host's /proc/sys/net read-write elsewhere and
// points this at it (deploy/kubernetes). A net sysctl file is that of the
// network namespace of the thread that opens it, whichever procfs mount it
// is reached through, so writes from a thread switched into a sandbox
// still land in the sandbox.
const SysctlDirEnv = "INTERCEPTD_SYSCTL_DIR"

// sysctlPath is where sysctl name (slash-separated, net/...) is.
func sysctlPath(name string) string {
	dir := "/proc/sys"
	if d := os.Getenv(SysctlDirEnv); d != "" {
		dir = d
	}
	return filepath.Join(dir, filepath.FromSlash(name))
}

// writeSysctl sets a sysctl of the calling process's network namespace.
func writeSysctl(name, value string) error {
	p := sysctlPath(name)
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		return fmt.Errorf("setting %s=%s: %w", name, value, err)
	}
	return nil
}

// Do runs fn on an OS thread switched into the network namespace at path;
// sockets fn creates stay in that namespace. If the thread cannot be
// switched back it is left locked, so Go discards it.
func Do(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(path)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- err
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("restoring thread namespace: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
