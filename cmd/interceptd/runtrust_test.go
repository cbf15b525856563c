package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// testCertPEM is a fresh self-signed CA certificate named cn, in PEM.
func testCertPEM(t *testing.T, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func subjects(t *testing.T, b []byte) []string {
	t.Helper()
	certs, err := parsePEMCerts(b)
	if err != nil {
		t.Fatalf("bundle does not parse: %v\n%s", err, b)
	}
	var out []string
	for _, c := range certs {
		out = append(out, c.Subject.CommonName)
	}
	return out
}

func TestTheBundleIsTheSystemRootsUnchangedAndInterceptdsCA(t *testing.T) {
	root1, root2, ca := testCertPEM(t, "root one"), testCertPEM(t, "root two"), testCertPEM(t, "interceptd CA")
	system := append(append([]byte("# a comment the system bundle has\n"), root1...), root2...)
	tests := []struct {
		name   string
		system []byte
		want   []string
	}{
		{"a system bundle", system, []string{"root one", "root two", "interceptd CA"}},
		{"one without its last newline", []byte(strings.TrimRight(string(system), "\n")), []string{"root one", "root two", "interceptd CA"}},
		{"an empty one", nil, []string{"interceptd CA"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := buildBundle(tt.system, ca)
			if err != nil {
				t.Fatal(err)
			}
			if got := subjects(t, b); !slices.Equal(got, tt.want) {
				t.Errorf("bundle holds %q, want %q", got, tt.want)
			}
			if !strings.HasPrefix(string(b), string(tt.system)) {
				t.Errorf("the system's bundle is not the bundle's unchanged start")
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(b) {
				t.Errorf("a cert pool takes nothing from the bundle")
			}
		})
	}
	for name, bad := range map[string][]byte{
		"nothing":       nil,
		"not PEM":       []byte("hello"),
		"a key":         pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}),
		"a broken cert": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}),
	} {
		if _, err := buildBundle(system, bad); err == nil {
			t.Errorf("a CA of %s was taken", name)
		}
	}
}

func TestTheBundleGoesOverEverySystemBundleOnceAndTheFirstIsItsBase(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	os.WriteFile(p("debian.crt"), []byte("x"), 0o644)
	os.WriteFile(p("fedora.crt"), []byte("y"), 0o644)
	os.Symlink("debian.crt", p("alpine.pem")) // a link to another bundle
	os.Symlink("gone.crt", p("dangling.pem"))
	os.Mkdir(p("adir"), 0o755)

	base, targets := findBundles([]string{p("none.crt"), p("adir"), p("dangling.pem"), p("alpine.pem"), p("fedora.crt"), p("debian.crt")}, regularFile)
	if base != p("alpine.pem") {
		t.Errorf("base %q, want the first that exists, %q", base, p("alpine.pem"))
	}
	real := func(n string) string { r, _ := filepath.EvalSymlinks(p(n)); return r }
	if want := []string{real("debian.crt"), real("fedora.crt")}; !slices.Equal(targets, want) {
		t.Errorf("targets %q, want %q (each real file once)", targets, want)
	}
	if base, targets := findBundles([]string{p("none.crt")}, regularFile); base != "" || targets != nil {
		t.Errorf("no bundle: %q %q, want none", base, targets)
	}
	if _, targets := findBundles(systemBundles, func(string) (string, error) { return "", errors.New("no") }); targets != nil {
		t.Errorf("targets %q where nothing exists", targets)
	}
}

func TestTheCommandsEnvironmentNamesTheBundleForEveryClient(t *testing.T) {
	env := []string{"PATH=/bin", caEnv + "=-----BEGIN", "SSL_CERT_FILE=/mine.pem", "HOME=/root"}
	got := trustEnv(env, "/etc/ssl/certs/ca-certificates.crt")
	want := []string{"PATH=/bin", "HOME=/root",
		"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
		"NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt",
		"REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt",
		"CURL_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt",
		"GIT_SSL_CAINFO=/etc/ssl/certs/ca-certificates.crt"}
	if !slices.Equal(got, want) {
		t.Errorf("env %q\nwant %q", got, want)
	}
	if got := trustEnv(env, ""); !slices.Equal(got, []string{"PATH=/bin", "HOME=/root"}) {
		t.Errorf("env without a bundle: %q", got)
	}

	ca := []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
	if got := runExecEnv([]string{"A=1", caEnv + "=someone's"}, ca); !slices.Equal(got, []string{"A=1", caEnv + "=" + string(ca)}) {
		t.Errorf("run-exec's env: %q", got)
	}
	if got := runExecEnv([]string{"A=1", caEnv + "=someone's"}, nil); !slices.Equal(got, []string{"A=1"}) {
		t.Errorf("run-exec's env without a CA: %q", got)
	}
}

func TestMountsThatPropagateOutAreFound(t *testing.T) {
	// The host's view (systemd makes / shared) and ip netns exec's (slave).
	host := `22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/root rw
23 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs devtmpfs rw
24 22 0:21 / /my\040dir rw shared:9 master:3 - tmpfs tmpfs rw
25 22 0:22 / /private rw - tmpfs tmpfs rw
`
	got, err := sharedMounts(strings.NewReader(host))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/", "/dev", "/my dir"}; !slices.Equal(got, want) {
		t.Errorf("shared %q, want %q", got, want)
	}
	netnsExec := `522 521 259:1 / / rw,relatime master:1 - ext4 /dev/root rw
523 522 0:5 / /dev rw,nosuid master:2 - devtmpfs devtmpfs rw
524 522 0:48 / /etc/resolv.conf rw - ext4 /dev/root rw
`
	if got, err := sharedMounts(strings.NewReader(netnsExec)); err != nil || len(got) != 0 {
		t.Errorf("shared under ip netns exec: %q %v, want none", got, err)
	}
}
