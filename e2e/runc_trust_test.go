package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A runc container made to trust interceptd's CA as docs/runtimes.md says
// ("Trusting interceptd's CA"): a bundle of the system's roots and
// `interceptd ca`, bind-mounted read-only over the image's
// /etc/ssl/certs/ca-certificates.crt through config.json's mounts. The
// image is the busybox one of runc_test.go with the host's /usr mounted
// read-only in it, for a curl that checks certificates (busybox's wget does
// not).
func TestARuncContainerTrustsInterceptdsCAThroughABindMountedBundle(t *testing.T) {
	e, caPEM, _ := newInterceptingEnv(t)
	const system = "/etc/ssl/certs/ca-certificates.crt"
	roots, err := os.ReadFile(system)
	if err != nil {
		t.Skipf("no %s on this host", system)
	}
	if _, err := os.Stat("/usr/bin/curl"); err != nil {
		t.Skip("no /usr/bin/curl on this host")
	}
	// cat /etc/ssl/certs/ca-certificates.crt; interceptd ca
	trusted := filepath.Join(t.TempDir(), "ca-bundle.crt")
	if err := os.WriteFile(trusted, append(roots, caPEM...), 0o644); err != nil {
		t.Fatal(err)
	}

	id := "runc-ca-" + e.ID
	sb := e.Create(id)
	script := `curl -sS -m 5 https://api.example.test/runc; echo " exit=$?"
curl -sS -m 5 -o /dev/null --cacert /etc/ssl/system-only.crt https://api.example.test/runc 2>/dev/null; echo "system roots only: exit=$?"
`
	dir := bundle(t, sb.NetnsPath, script)
	rootfs := filepath.Join(dir, "rootfs")
	for _, l := range []string{"lib", "lib64"} {
		if target, err := os.Readlink("/" + l); err == nil {
			os.Symlink(target, filepath.Join(rootfs, l)) // merged /usr: lib -> usr/lib
		}
	}
	var spec map[string]any
	raw, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	if err := json.Unmarshal(raw, &spec); err != nil {
		t.Fatal(err)
	}
	bind := func(src, dst string) map[string]any {
		return map[string]any{"destination": dst, "type": "bind", "source": src, "options": []string{"rbind", "ro"}}
	}
	spec["mounts"] = append(spec["mounts"].([]any),
		bind("/usr", "/usr"),
		bind(trusted, system), // the mount docs/runtimes.md shows
		bind(system, "/etc/ssl/system-only.crt"),
	)
	proc := spec["process"].(map[string]any)
	proc["env"] = []string{"PATH=/usr/bin:/bin"} // no SSL_CERT_FILE: the mount alone
	raw, _ = json.MarshalIndent(spec, "", "  ")
	os.WriteFile(filepath.Join(dir, "config.json"), raw, 0o644)

	out := runContainer(t, id, dir)
	if !strings.Contains(out, "upstream /v1/runc saw Bearer ") || !strings.Contains(out, " exit=0\n") {
		t.Errorf("curl in the container without --cacert:\n%s", out)
	}
	if strings.Contains(out, "s3cret") {
		t.Errorf("the container saw the token:\n%s", out)
	}
	if !strings.Contains(out, "system roots only: exit=60") {
		t.Errorf("a curl trusting the system roots only was not refused:\n%s", out)
	}
	if now, _ := os.ReadFile(system); string(now) != string(roots) {
		t.Errorf("the host's %s changed", system)
	}
}
