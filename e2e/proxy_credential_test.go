package e2e

import (
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func TestAProxyInjectsASystemdCredentialTheSandboxNeverSees(t *testing.T) {
	creds := t.TempDir()
	// A name with an x and a 0 in it, as systemd allows.
	if err := os.WriteFile(filepath.Join(creds, "api-token0x"), []byte("cr3d-from-systemd\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := `handlers:
  - {host: my.kv, kind: kv}
  - host: cred.example.test
    kind: proxy
    upstream: http://api.test:8081/
    inject:
      - {header: Authorization, template: "Bearer {secret}", credential: api-token0x}
`
	e := NewEnv(t, Options{ExtraConfig: cfg, Env: []string{"CREDENTIALS_DIRECTORY=" + creds}})
	var mu sync.Mutex
	var auth string
	ln := e.ListenIn("/run/netns/"+e.UpNS, upstreamIP+":8081")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = r.Header.Get("Authorization")
		mu.Unlock()
		w.Write([]byte("echo " + r.Header.Get("Authorization")))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	sb := e.Create("agent")
	out, code := e.In(sb, "curl", "-sS", "-i", "-m", "5", "http://cred.example.test/")
	if code != 0 || !strings.Contains(out, "HTTP/1.1 200") {
		t.Fatalf("proxy request (exit %d):\n%s", code, out)
	}
	mu.Lock()
	got := auth
	mu.Unlock()
	if got != "Bearer cr3d-from-systemd" {
		t.Errorf("the upstream got Authorization %q, want the credential's", got)
	}
	if strings.Contains(out, "cr3d") {
		t.Errorf("the sandbox saw the credential:\n%s", out)
	}
}

func TestAProxyToAnUpstreamItsCANeverSignedSendsItNothing(t *testing.T) {
	cert, _ := testCA(t, "api.test")
	_, otherCA := testCA(t, "api.test") // another CA, for the same name
	secretFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(secretFile, []byte("s3cret-tls\n"), 0o600)
	cfg := `handlers:
  - {host: my.kv, kind: kv}
  - host: api.example.test
    kind: proxy
    upstream: https://api.test:8443/
    ca_file: ` + otherCA + `
    inject:
      - {header: Authorization, template: "Bearer {secret}", file: ` + secretFile + `}
`
	e := NewEnv(t, Options{ExtraConfig: cfg})
	var reached atomic.Int32
	ln := e.ListenIn("/run/netns/"+e.UpNS, upstreamIP+":8443")
	srv := &http.Server{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		Handler:   http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached.Add(1) }),
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })

	sb := e.Create("agent")
	out, _ := e.In(sb, "curl", "-sS", "-i", "-m", "5", "http://api.example.test/")
	if !strings.Contains(out, "HTTP/1.1 502") || !strings.Contains(out, "X-Interceptd-Error: upstream certificate") {
		t.Errorf("want a 502 naming the certificate:\n%s", out)
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("the impostor upstream got %d requests", n)
	}
	if strings.Contains(out, "s3cret") || strings.Contains(e.Log(), "s3cret") {
		t.Error("the secret reached the sandbox or the log")
	}
}
