package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runCLI is CLI with the environment of a root shell that sudo did not
// start (no SUDO_*), plus env.
func (e *Env) runCLI(env []string, args ...string) (stdout, stderr string, code int) {
	e.t.Helper()
	var environ []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SUDO_") {
			environ = append(environ, kv)
		}
	}
	return e.cliIn(append(environ, env...), args...)
}

// capabilities are the capability lines of /proc/self/status, and
// NoNewPrivs, as `interceptd run` prints them for a command.
const statusLines = "grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):' /proc/self/status"

func TestRunDropsRootAndEveryCapabilityUnlessAskedNotTo(t *testing.T) {
	e := NewEnv(t, Options{})
	// The daemon's files as on a real host: the directories above them
	// open to all (like /var/lib and /run), so only the modes the daemon
	// gives its data dir and socket, and the operator's secret file, stand
	// in the way.
	for _, d := range []string{filepath.Dir(e.Dir), e.Dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	secret := filepath.Join(e.Dir, "upstream-token")
	if err := os.WriteFile(secret, []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(e.Dir, "data")
	noCaps := "CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n"

	t.Run("by default the command runs as nobody with no capabilities", func(t *testing.T) {
		out, errOut, code := e.runCLI(nil, "run", "--", "sh", "-c", "id -u; id -g; id -G; echo $HOME; "+statusLines)
		want := "65534\n65534\n65534\n/nonexistent\n" + noCaps
		if code != 0 || out != want {
			t.Errorf("exit %d, printed:\n%s\nwant:\n%s\nstderr: %s", code, out, want, errOut)
		}
	})
	t.Run("under sudo the command runs as the user who ran sudo", func(t *testing.T) {
		out, errOut, code := e.runCLI([]string{"SUDO_USER=daemon", "SUDO_UID=1", "SUDO_GID=1"}, "run", "--", "sh", "-c", "id -un; id -u; id -g; echo $HOME $USER; "+statusLines)
		want := "daemon\n1\n1\n/usr/sbin daemon\n" + noCaps
		if code != 0 || out != want {
			t.Errorf("exit %d, printed:\n%s\nwant:\n%s\nstderr: %s", code, out, want, errOut)
		}
	})
	t.Run("--user names the user and group", func(t *testing.T) {
		out, errOut, code := e.runCLI(nil, "run", "--user", "4242:4343", "--", "sh", "-c", "id -u; id -g; id -G; "+statusLines)
		want := "4242\n4343\n4343\n" + noCaps
		if code != 0 || out != want {
			t.Errorf("exit %d, printed:\n%s\nwant:\n%s\nstderr: %s", code, out, want, errOut)
		}
	})
	t.Run("the command cannot use the admin socket or read the data dir or a secret", func(t *testing.T) {
		for _, cmd := range []string{
			"ls " + data,
			"cat " + filepath.Join(data, "interceptd.db") + " >/dev/null",
			"cat " + secret,
			"test -S " + e.Socket + " && curl -sS -f -m 5 --unix-socket " + e.Socket + " http://admin/v1/sandboxes",
		} {
			// Refused for want of permission, not for anything else.
			out, errOut, code := e.runCLI(nil, "run", "--", "sh", "-c", cmd)
			if code == 0 || !strings.Contains(errOut, "Permission denied") && !strings.Contains(errOut, "Couldn't connect") {
				t.Errorf("%s in the sandbox: exit %d\n%s%s", cmd, code, out, errOut)
			}
		}
	})
	t.Run("the command still reaches the sandbox's network", func(t *testing.T) {
		out, errOut, code := e.runCLI(nil, "run", "--", "sh", "-c", "curl -sS -X PUT --data hi http://my.kv/k && curl -sS http://my.kv/k && curl -sS -o /dev/null -w ' %{http_code}' http://example.test/")
		if code != 0 || out != "hi 200" {
			t.Errorf("exit %d, printed %q, want \"hi 200\"; stderr: %s", code, out, errOut)
		}
	})
	t.Run("--privileged keeps root, as before", func(t *testing.T) {
		out, errOut, code := e.runCLI(nil, "run", "--privileged", "--", "sh", "-c", "id -u; cat "+secret)
		if code != 0 || out != "0\ns3cret" {
			t.Errorf("exit %d, printed %q; stderr: %s", code, out, errOut)
		}
	})
	t.Run("--user root is refused, pointing at --privileged", func(t *testing.T) {
		_, errOut, code := e.runCLI(nil, "run", "--user", "root", "--", "true")
		if code == 0 || !strings.Contains(errOut, "--privileged") {
			t.Errorf("exit %d, stderr %q", code, errOut)
		}
	})
	if list, _, _ := e.CLI("sandbox", "list"); strings.Contains(list, "run-") {
		t.Errorf("run left a sandbox behind:\n%s", list)
	}
}
