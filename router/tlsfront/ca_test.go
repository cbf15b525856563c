package tlsfront

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTheCAIsMadeOnceWithAPrivateKeyAndLoadedAfter(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	for file, mode := range map[string]os.FileMode{CAKeyFile: 0o600, CACertFile: 0o644} {
		st, err := os.Stat(filepath.Join(dir, file))
		if err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: %v, mode %v, want %v", file, err, st.Mode().Perm(), mode)
		}
	}
	if c := ca.Certificate(); !c.IsCA || c.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("CA certificate: IsCA %v, key %v", c.IsCA, c.PublicKeyAlgorithm)
	}
	again, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Certificate().Equal(ca.Certificate()) {
		t.Error("a second start made another CA")
	}
}

func TestACAHalfThereOrWithAnOpenKeyIsRefused(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadOrCreateCA(dir); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(dir, CAKeyFile), 0o644)
	if _, err := LoadOrCreateCA(dir); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Errorf("an open key: %v", err)
	}
	os.Remove(filepath.Join(dir, CAKeyFile))
	if _, err := LoadOrCreateCA(dir); err == nil || !strings.Contains(err.Error(), "half there") {
		t.Errorf("a certificate without its key: %v", err)
	}
}

func TestALeafNamesExactlyItsNameVerifiesAgainstTheCAAndIsReusedUntilNearItsEnd(t *testing.T) {
	ca, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ca.now = func() time.Time { return now }
	c, minted, err := ca.Leaf("api.github.com")
	if err != nil || !minted {
		t.Fatalf("first leaf: minted %v, %v", minted, err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: "api.github.com", Roots: roots, CurrentTime: now}); err != nil {
		t.Errorf("the leaf does not verify for its name: %v", err)
	}
	for _, other := range []string{"github.com", "x.api.github.com"} {
		if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: other, Roots: roots, CurrentTime: now}); err == nil {
			t.Errorf("the leaf verifies for %s too", other)
		}
	}
	if d := c.Leaf.NotAfter.Sub(now); d > 25*time.Hour {
		t.Errorf("the leaf lives %v", d)
	}
	if again, minted, _ := ca.Leaf("api.github.com"); minted || again != c {
		t.Error("the cached leaf was not reused")
	}
	now = now.Add(23*time.Hour + 30*time.Minute) // within the last hour of its life
	if again, minted, _ := ca.Leaf("api.github.com"); !minted || again == c {
		t.Error("a leaf near its end was not renewed")
	}
}

func TestALeafIsMintedOnlyForAHostName(t *testing.T) {
	ca, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	label := strings.Repeat("a", 63)
	for _, name := range []string{"api.test", "x_y.example.com", "a-b.c", label + ".test", strings.Repeat(label+".", 3) + strings.Repeat("b", 61)} {
		if _, _, err := ca.Leaf(name); err != nil {
			t.Errorf("%q: %v", name, err)
		}
	}
	// What a sandbox can put in an SNI that a glob handler (*.example.com)
	// matches: no certificate may name it, and one that could be 16 KiB
	// long, cached by the thousand, would be a memory flood.
	for _, name := range []string{
		"*.example.com", "a.*.example.com", strings.Repeat("a", 16000) + ".example.com",
		strings.Repeat(label+".", 4) + "example.com", strings.Repeat("a", 64) + ".example.com",
		"a b.example.com", "a/b.example.com", "a\x00.example.com", "a..example.com", ".example.com", "", "A.example.com",
		"é.example.com",
	} {
		if _, _, err := ca.Leaf(name); err == nil {
			t.Errorf("a leaf was minted for %.40q (%d bytes)", name, len(name))
		}
	}
	ca.mu.Lock()
	n := len(ca.leaves)
	ca.mu.Unlock()
	if n != 5 {
		t.Errorf("%d leaves cached, want the 5 host names", n)
	}
}
