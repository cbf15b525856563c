package netns

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/interceptd/interceptd/policy"
)

// twoDaemons are two managers on one host: one /run/netns, one /etc/netns,
// one owner directory, one namespace prefix; each its own kernel (links
// live in each daemon's own namespace), records and data dir (Owner).
func twoDaemons(t *testing.T) (dirs string, mk func(owner string) *Manager) {
	t.Helper()
	dirs = t.TempDir()
	os.MkdirAll(filepath.Join(dirs, "netns"), 0o755)
	return dirs, func(owner string) *Manager {
		m, err := New(Config{
			Pool: netip.MustParsePrefix("10.213.0.0/16"), NetnsPrefix: "icd-", InterfacePrefix: "icdt",
			NetnsDir: filepath.Join(dirs, "netns"), ResolvConfDir: filepath.Join(dirs, "etc-netns"),
			Owner: owner, OwnerDir: filepath.Join(dirs, "owners"),
			Rules: testParams(), Records: &fakeRecords{m: map[string][]byte{}}, Kernel: newFakeKernel(),
			IPTables: newFake(), IPSets: &failingSets{fakeSets: fakeSets{}}, NFT: &fakeNFT{},
			DefaultPolicy: policy.Policy{Internet: true}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
}

func namespaces(dirs string) []string {
	ents, _ := os.ReadDir(filepath.Join(dirs, "netns"))
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestADaemonNeverRemovesAnotherDaemonsNamespaces(t *testing.T) {
	dirs, mk := twoDaemons(t)
	a := mk("/var/lib/a")
	if err := a.Setup(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Create("probe1", nil); err != nil {
		t.Fatal(err)
	}
	// A second daemon with the same prefix refuses to start while the
	// first runs, and names it.
	b := mk("/var/lib/b")
	err := b.Setup()
	if !errors.Is(err, ErrPrefixInUse) || !strings.Contains(err.Error(), "/var/lib/a") {
		t.Fatalf("a second daemon on the same prefix: %v", err)
	}
	b.Close()
	// With the first stopped (its sandboxes stay), the second starts and
	// sweeps: the first's namespace is not its to remove.
	a.Close()
	b = mk("/var/lib/b")
	if err := b.Setup(); err != nil {
		t.Fatal(err)
	}
	if got := namespaces(dirs); !slices.Equal(got, []string{"icd-probe1"}) {
		t.Fatalf("after the second daemon's start: %v", got)
	}
	// Nor is it the second's cleanup's.
	removed, left, err := b.Cleanup()
	if err != nil || len(removed) != 0 || !slices.Equal(left, []string{"icd-probe1"}) {
		t.Errorf("the second's cleanup: removed %v, left %v, %v", removed, left, err)
	}
	if got := namespaces(dirs); !slices.Equal(got, []string{"icd-probe1"}) {
		t.Fatalf("after the second daemon's cleanup: %v", got)
	}
	b.Close()
	// The first's own cleanup (no store needed: the marker proves it)
	// removes it, its resolv.conf and its marker.
	a2 := mk("/var/lib/a")
	defer a2.Close()
	removed, left, err = a2.Cleanup()
	if err != nil || !slices.Equal(removed, []string{"icd-probe1"}) || len(left) != 0 {
		t.Errorf("the owner's cleanup: removed %v, left %v, %v", removed, left, err)
	}
	for _, d := range []string{"netns", "etc-netns", "owners"} {
		ents, _ := os.ReadDir(filepath.Join(dirs, d))
		for _, e := range ents {
			if !strings.HasSuffix(e.Name(), ".lock") {
				t.Errorf("left in %s: %s", d, e.Name())
			}
		}
	}
}

func TestANamespaceWithoutAMarkerIsLeftAndAResolvConfWithoutANamespaceGoes(t *testing.T) {
	dirs, mk := twoDaemons(t)
	os.WriteFile(filepath.Join(dirs, "netns", "icd-older"), nil, 0o644) // no marker: not provably ours
	os.MkdirAll(filepath.Join(dirs, "etc-netns", "icd-gone"), 0o755)    // its namespace is gone
	m := mk("/var/lib/a")
	defer m.Close()
	removed, left, err := m.Cleanup()
	if err != nil || len(removed) != 0 || !slices.Equal(left, []string{"icd-older"}) {
		t.Errorf("removed %v, left %v, %v", removed, left, err)
	}
	if _, err := os.Stat(filepath.Join(dirs, "etc-netns", "icd-gone")); err == nil {
		t.Error("a resolv.conf directory whose namespace is gone was kept")
	}
}

func TestASandboxWhoseNamespaceDisappearsIsNoticedListedAndCounted(t *testing.T) {
	_, mk := twoDaemons(t)
	m := mk("/var/lib/a")
	defer m.Close()
	m.lostEvery = 20 * time.Millisecond
	if err := m.Setup(); err != nil {
		t.Fatal(err)
	}
	sb, err := m.Create("web1", nil)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(sb.NetnsPath) // someone else's `ip netns del`
	for deadline := time.Now().Add(5 * time.Second); m.Lost() == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if m.Lost() != 1 {
		t.Fatal("the lost namespace was not noticed")
	}
	got, _ := m.Get("web1")
	if !got.Lost {
		t.Error("Get does not say the sandbox is lost")
	}
}

func TestASecondDaemonInTheSameNetworkNamespaceRefusesNamingTheFirst(t *testing.T) {
	dirs := t.TempDir()
	os.MkdirAll(filepath.Join(dirs, "netns"), 0o755)
	// Two daemons with their own data dirs and namespace prefixes (so the
	// prefix lock does not stop them), started in one network namespace.
	mk := func(owner, prefix, ifPrefix, nsID string) *Manager {
		k := newFakeKernel()
		k.nsID = nsID
		m, err := New(Config{
			Pool: netip.MustParsePrefix("10.213.0.0/16"), NetnsPrefix: prefix, InterfacePrefix: ifPrefix,
			NetnsDir: filepath.Join(dirs, "netns"), Owner: owner, OwnerDir: filepath.Join(dirs, "owners"),
			Rules: testParams(), Records: &fakeRecords{m: map[string][]byte{}}, Kernel: k,
			IPTables: newFake(), IPSets: &failingSets{fakeSets: fakeSets{}}, NFT: &fakeNFT{},
			DefaultPolicy: policy.Policy{Internet: true}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	for _, tc := range []struct {
		name           string
		ifPrefix, nsID string
		wantRefused    bool
	}{
		{"the same interface prefix in the same namespace is refused", "icdt", "net:[4026531840]", true},
		{"another interface prefix in the same namespace is refused too, as the rules are one per namespace", "icdu", "net:[4026531840]", true},
		{"the same interface prefix in another namespace starts", "icdt", "net:[4026532001]", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := mk("/var/lib/a", "icda-", "icdt", "net:[4026531840]")
			if err := a.Setup(); err != nil {
				t.Fatal(err)
			}
			closed := false
			defer func() {
				if !closed {
					a.Close()
				}
			}()
			sb, err := a.Create("probe1", nil)
			if err != nil {
				t.Fatal(err)
			}
			b := mk("/var/lib/b", "icdb-", tc.ifPrefix, tc.nsID)
			err = b.Setup()
			b.Close()
			if !tc.wantRefused {
				if err != nil {
					t.Fatalf("a daemon in another namespace: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrNamespaceInUse) || !strings.Contains(err.Error(), `daemon of /var/lib/a, interface prefix "icdt", (pid `) {
				t.Fatalf("the second daemon's start: %v", err)
			}
			// Nor does the second's cleanup take the first's links and rules.
			b = mk("/var/lib/b", "icdb-", tc.ifPrefix, tc.nsID)
			if _, _, err := b.Cleanup(); !errors.Is(err, ErrNamespaceInUse) {
				t.Errorf("the second's cleanup beside the first: %v", err)
			}
			b.Close()
			// The refusals touched nothing of the first's.
			if _, err := os.Stat(sb.NetnsPath); err != nil {
				t.Errorf("the first's namespace: %v", err)
			}
			if typ, err := a.k.LinkType(sb.HostInterface); err != nil || typ != "veth" {
				t.Errorf("the first's link: %q, %v", typ, err)
			}
			// Once the first stops, the second starts.
			a.Close()
			closed = true
			b = mk("/var/lib/b", "icdb-", tc.ifPrefix, tc.nsID)
			if err := b.Setup(); err != nil {
				t.Errorf("after the first stopped: %v", err)
			}
			b.Close()
		})
	}
}
