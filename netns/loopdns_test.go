package netns

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestTheLoopbackDNSTableMatchesItsGoldenFile(t *testing.T) {
	sb := &Sandbox{Name: "web1", Interface: "eth0",
		Addr: netip.MustParseAddr("10.213.0.2"), Gateway: netip.MustParseAddr("10.213.0.1")}
	got := loopbackDNSTable(sb)
	const golden = "testdata/loopdns.golden"
	if *update {
		os.WriteFile(golden, []byte(got), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("the table differs from %s (run with -update if intended):\n%s", golden, got)
	}
}

func TestEverySandboxCapturesLoopbackDNSAndADetachedNamespaceIsLeftWithout(t *testing.T) {
	e := newFakeEnv(t, "10.213.0.0/16", nil)
	e.setup(t)
	if _, err := e.m.Create("made", nil); err != nil {
		t.Fatal(err)
	}
	ext := filepath.Join(e.dir, "runtime-ns")
	os.WriteFile(ext, nil, 0o444)
	if _, err := e.m.Attach("attached", ext, "eth1", nil); err != nil {
		t.Fatal(err)
	}
	captured := func() []string {
		e.k.mu.Lock()
		defer e.k.mu.Unlock()
		var out []string
		for n := range e.k.loopDNS {
			out = append(out, n)
		}
		slices.Sort(out)
		return out
	}
	if got := captured(); !slices.Equal(got, []string{"attached", "made"}) {
		t.Fatalf("captured after create and attach: %v", got)
	}
	// A detached namespace lives on with its container: the table leaves it.
	if err := e.m.Delete("attached"); err != nil {
		t.Fatal(err)
	}
	if got := captured(); !slices.Equal(got, []string{"made"}) {
		t.Errorf("captured after detaching: %v", got)
	}

	// A restart sets it up again in what it re-adopts (a sandbox of a
	// version without it, or one whose table was removed).
	recs := e.recs.m
	e2 := newFakeEnv(t, "10.213.0.0/16", recs)
	e2.dir = e.dir
	e2.m.cfg.NetnsDir, e2.m.cfg.ResolvConfDir = e.m.cfg.NetnsDir, e.m.cfg.ResolvConfDir
	links, _ := e.k.Links()
	for _, l := range links {
		e2.k.links[l.Name] = l.Type
	}
	e2.setup(t)
	if _, ok := e2.m.Get("made"); !ok {
		t.Fatal("the sandbox was not re-adopted")
	}
	e2.k.mu.Lock()
	defer e2.k.mu.Unlock()
	if !e2.k.loopDNS["made"] {
		t.Error("the re-adopted sandbox does not capture loopback dns")
	}
}
