package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// testCA makes a CA and a server certificate for names, and writes the CA
// certificate to a PEM file.
func testCA(t *testing.T, names ...string) (tls.Certificate, string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "interceptd test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, path
}

func TestTheProxyInjectsCredentialsTheSandboxNeverSees(t *testing.T) {
	cert, caFile := testCA(t, "api.test")
	secretFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(secretFile, []byte("s3cret-v1\n"), 0o600)
	cfg := `handlers:
  - {host: "*", kind: respond, body: "catch-all\n"}
  - {host: my.kv, kind: kv}
  - host: api.example.test
    kind: proxy
    upstream: https://api.test:8443/v1
    ca_file: ` + caFile + `
    set_headers: {X-Proxied-By: interceptd}
    remove_headers: [Cookie]
    inject:
      - {header: Authorization, template: "Bearer {secret}", file: ` + secretFile + `}
      - {header: X-Sandbox-Token, kv_namespace: tokens}
  - {host: stub.test, kind: respond, status: 201, headers: {X-Stub: "yes"}, body: "stubbed\n"}
  - {host: blocked.test, kind: deny}
`
	e := NewEnv(t, Options{ExtraConfig: cfg})
	// The TLS upstream, in the upstream namespace: it echoes what it got,
	// secrets included, as a careless or hostile API might.
	var mu sync.Mutex
	var seenH http.Header
	seen := func() http.Header { mu.Lock(); defer mu.Unlock(); return seenH }
	ln := e.ListenIn("/run/netns/"+e.UpNS, upstreamIP+":8443")
	srv := &http.Server{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			seenH = r.Header.Clone()
			mu.Unlock()
			w.Header().Set("X-Echo-Auth", r.Header.Get("Authorization"))
			json.NewEncoder(w).Encode(map[string]any{"path": r.URL.Path, "host": r.Host, "headers": r.Header})
		}),
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })

	sb := e.Create("agent")
	if _, errOut, code := e.CLI("kv", "put", "--namespace", "tokens", "agent", "tok-agent"); code != 0 {
		t.Fatalf("seeding the per-sandbox secret: %s", errOut)
	}
	get := func(sb Sandbox) (string, int) {
		return e.In(sb, "curl", "-sS", "-i", "-m", "5", "-H", "Authorization: Bearer container-made-this-up", "-H", "Cookie: a=b", "http://api.example.test/repos?x=1")
	}
	out, code := get(sb)
	if code != 0 || !strings.Contains(out, "HTTP/1.1 200") {
		t.Fatalf("proxy request (exit %d):\n%s", code, out)
	}
	checks := []struct{ what, got, want string }{
		{"Authorization at the upstream", seen().Get("Authorization"), "Bearer s3cret-v1"},
		{"the per-sandbox token at the upstream", seen().Get("X-Sandbox-Token"), "tok-agent"},
		{"a set header", seen().Get("X-Proxied-By"), "interceptd"},
		{"a removed header", seen().Get("Cookie"), ""},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
		}
	}
	if !strings.Contains(out, `"path":"/v1/repos"`) || !strings.Contains(out, `"host":"api.test:8443"`) {
		t.Errorf("the upstream URL was not the configured one:\n%s", out)
	}
	for _, secret := range []string{"s3cret-v1", "tok-agent"} {
		if strings.Contains(out, secret) {
			t.Errorf("the sandbox saw the secret %q:\n%s", secret, out)
		}
	}
	if strings.Contains(e.Log(), "s3cret") || strings.Contains(e.Scrape(), "s3cret") {
		t.Error("a secret reached the log or the metrics")
	}

	t.Run("a changed secret file is picked up on SIGHUP", func(t *testing.T) {
		os.WriteFile(secretFile, []byte("s3cret-v2\n"), 0o600)
		e.daemon.Process.Signal(syscall.SIGHUP)
		deadline := time.Now().Add(5 * time.Second)
		for seen().Get("Authorization") != "Bearer s3cret-v2" && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			out, _ = get(sb)
		}
		if seen().Get("Authorization") != "Bearer s3cret-v2" || strings.Contains(out, "s3cret-v2") {
			t.Errorf("after SIGHUP the upstream saw %q; the sandbox got:\n%s", seen().Get("Authorization"), out)
		}
	})
	t.Run("a sandbox without a per-sandbox secret gets a 502 that names no secret", func(t *testing.T) {
		other := e.Create("unseeded")
		out, _ := get(other)
		if !strings.Contains(out, "HTTP/1.1 502") || !strings.Contains(out, "credential for X-Sandbox-Token is unavailable") || strings.Contains(out, "s3cret") {
			t.Errorf("got:\n%s", out)
		}
	})
	t.Run("respond, deny and the catch-all, whatever their order", func(t *testing.T) {
		for url, want := range map[string]string{
			"http://stub.test/x":      "201 stubbed\n",
			"http://blocked.test/":    "403 ",
			"http://example.test/any": "200 catch-all\n",
			"http://my.kv/missing":    "404 interceptd: key not found\n",
		} {
			out, _ := e.In(sb, "curl", "-sS", "-m", "5", "-w", "%{http_code} ", "-o", "/dev/stderr", url)
			// -o /dev/stderr then -w: body first, code after; rebuild "code body".
			code := out[len(out)-4:]
			body := out[:len(out)-4]
			if got := strings.TrimSpace(code) + " " + body; !strings.HasPrefix(got, want) {
				t.Errorf("%s: got %q, want %q", url, got, want)
			}
		}
	})
}
