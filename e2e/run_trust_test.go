package e2e

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// hostBundles are the system CA bundles `interceptd run` covers, as the
// host has them: path to content.
func hostBundles(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, p := range []string{"/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
		"/etc/ssl/ca-bundle.pem", "/etc/pki/tls/cacert.pem", "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", "/etc/ssl/cert.pem"} {
		if b, err := os.ReadFile(p); err == nil {
			out[p] = b
		}
	}
	return out
}

// mountsOver lists the host's mounts at any of paths or on /tmp's tmpfs
// staging file.
func mountsOver(t *testing.T, paths map[string][]byte) []string {
	t.Helper()
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, line := range strings.Split(string(mi), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		for p := range paths {
			if real, _ := filepath.EvalSymlinks(p); f[4] == p || f[4] == real {
				found = append(found, line)
			}
		}
		if f[3] == "/ca-bundle.crt" {
			found = append(found, line)
		}
	}
	return found
}

// runCLIWithoutTrustVars is runCLI with none of the variables that name a
// CA bundle in the caller's environment (CI shells often set them).
func (e *Env) runCLIWithoutTrustVars(args ...string) (stdout, stderr string, code int) {
	e.t.Helper()
	var environ []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO":
		default:
			if !strings.HasPrefix(k, "SUDO_") {
				environ = append(environ, kv)
			}
		}
	}
	return e.cliIn(environ, args...)
}

// newInterceptingEnv is a daemon with a proxy handler for api.example.test
// marked https, in front of an upstream that echoes the path and the
// Authorization it got (the setup of
// TestAnInterceptedHTTPSHandlerInjectsATokenTheSandboxNeverSees), and the
// daemon's CA as `interceptd ca` prints it; seenAuth says the Authorization
// the upstream got last.
func newInterceptingEnv(t *testing.T) (e *Env, caPEM string, seenAuth func() string) {
	t.Helper()
	cert, upstreamCA := testCA(t, "api.test")
	secretFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(secretFile, []byte("s3cret-https\n"), 0o600)
	cfg := `handlers:
  - {host: my.kv, kind: kv}
  - host: api.example.test
    kind: proxy
    https: true
    upstream: https://api.test:8443/v1
    ca_file: ` + upstreamCA + `
    inject:
      - {header: Authorization, template: "Bearer {secret}", file: ` + secretFile + `}
`
	e = NewEnv(t, Options{ExtraConfig: cfg})
	var seen atomic.Value
	seen.Store("")
	ln := e.ListenIn("/run/netns/"+e.UpNS, upstreamIP+":8443")
	srv := &http.Server{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen.Store(r.Header.Get("Authorization"))
			// A careless API that echoes the credential back.
			fmt.Fprintf(w, "upstream %s saw %s", r.URL.Path, r.Header.Get("Authorization"))
		}),
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	caPEM, errOut, code := e.CLI("ca", "--config", e.Config)
	if code != 0 || !strings.HasPrefix(caPEM, "-----BEGIN CERTIFICATE-----") {
		t.Fatalf("interceptd ca: exit %d %s", code, errOut)
	}
	return e, caPEM, func() string { return seen.Load().(string) }
}

func TestRunTrustsInterceptdsCAWithNoChangeToTheCommandOrTheHost(t *testing.T) {
	before := hostBundles(t)
	if len(before) == 0 {
		t.Skip("no system CA bundle on this host")
	}
	e, caPEM, _ := newInterceptingEnv(t)

	t.Run("curl without --cacert", func(t *testing.T) {
		out, errOut, code := e.runCLIWithoutTrustVars("run", "--", "curl", "-sS", "-m", "5", "https://api.example.test/repos")
		if code != 0 || !strings.HasPrefix(out, "upstream /v1/repos saw") {
			t.Errorf("exit %d, printed %q; stderr: %s", code, out, errOut)
		}
		if strings.Contains(out, "s3cret") {
			t.Errorf("the command saw the token: %q", out)
		}
	})
	t.Run("python3 urllib", func(t *testing.T) {
		out, errOut, code := e.runCLIWithoutTrustVars("run", "--", "/usr/bin/python3", "-c",
			"import urllib.request; print(urllib.request.urlopen('https://api.example.test/py', timeout=5).read().decode(), end='')")
		if code != 0 || !strings.HasPrefix(out, "upstream /v1/py saw") {
			t.Errorf("exit %d, printed %q; stderr: %s", code, out, errOut)
		}
	})
	t.Run("the bundle is the system's roots and the CA, named by the usual variables, read-only", func(t *testing.T) {
		out, errOut, code := e.runCLIWithoutTrustVars("run", "--", "sh", "-c",
			`for v in SSL_CERT_FILE NODE_EXTRA_CA_CERTS REQUESTS_CA_BUNDLE CURL_CA_BUNDLE GIT_SSL_CAINFO; do printenv $v; done; `+
				`env | grep -c INTERCEPTD_RUN_CA; cat "$SSL_CERT_FILE"; if (: >> "$SSL_CERT_FILE") 2>/dev/null; then echo WRITABLE; fi`)
		base := "/etc/ssl/certs/ca-certificates.crt"
		if _, ok := before[base]; !ok {
			t.Skipf("the host's first bundle is not %s", base)
		}
		want := strings.Repeat(base+"\n", 5) + "0\n"
		if code != 0 || !strings.HasPrefix(out, want) {
			t.Fatalf("exit %d, printed %.400q, want it to start %q; stderr: %s", code, out, want, errOut)
		}
		bundle := []byte(strings.TrimPrefix(out, want))
		if !bytes.HasPrefix(bundle, before[base]) || !bytes.HasSuffix(bytes.TrimSpace(bundle), bytes.TrimSpace([]byte(caPEM))) {
			t.Errorf("the bundle is not the system's followed by interceptd's CA (%d bytes, the system's %d)", len(bundle), len(before[base]))
		}
		if strings.Contains(out, "WRITABLE") {
			t.Errorf("the bundle is writable in the command")
		}
	})
	t.Run("--privileged too", func(t *testing.T) {
		out, errOut, code := e.runCLIWithoutTrustVars("run", "--privileged", "--", "sh", "-c",
			`id -u; curl -sS -m 5 https://api.example.test/root; if (: >> "$SSL_CERT_FILE") 2>/dev/null; then echo WRITABLE; fi`)
		if code != 0 || !strings.HasPrefix(out, "0\nupstream /v1/root saw") || strings.Contains(out, "WRITABLE") {
			t.Errorf("exit %d, printed %q; stderr: %s", code, out, errOut)
		}
	})
	t.Run("the host's trust is untouched", func(t *testing.T) {
		after := hostBundles(t)
		if len(after) != len(before) {
			t.Errorf("bundles before %d, after %d", len(before), len(after))
		}
		for p, b := range before {
			if !bytes.Equal(after[p], b) {
				t.Errorf("%s changed on the host (%d bytes, was %d)", p, len(after[p]), len(b))
			}
		}
		if m := mountsOver(t, before); len(m) > 0 {
			t.Errorf("mounts left on the host:\n%s", strings.Join(m, "\n"))
		}
		// And a client on the host still does not trust interceptd's CA.
		if out := run(t, "sh", "-c", "grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt || true"); strings.TrimSpace(out) != strconv.Itoa(bytes.Count(before["/etc/ssl/certs/ca-certificates.crt"], []byte("BEGIN CERTIFICATE"))) {
			t.Errorf("the host's bundle holds %s certificates", out)
		}
	})
	if list, _, _ := e.CLI("sandbox", "list"); strings.Contains(list, "run-") {
		t.Errorf("run left a sandbox behind:\n%s", list)
	}
}

func TestRunWithoutInterceptionSetsUpNoTrust(t *testing.T) {
	e := NewEnv(t, Options{Listen: `  https: ""`})
	out, errOut, code := e.runCLIWithoutTrustVars("run", "--", "sh", "-c", `echo "[$SSL_CERT_FILE]"; curl -sS http://my.kv/nothing -o /dev/null -w '%{http_code}'`)
	if code != 0 || out != "[]\n404" {
		t.Errorf("exit %d, printed %q; stderr: %s", code, out, errOut)
	}
}
