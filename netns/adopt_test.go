package netns

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/interceptd/interceptd/policy"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// throwawayNetlink returns a netlink handle inside a network namespace of
// the test's own, gone when the test ends: links made and deleted there
// never touch the host's (or another test's) sandboxes.
func throwawayNetlink(t *testing.T) *netlink.Handle {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_SYS_ADMIN) to make a network namespace")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New() // moves this thread into it
	if err != nil {
		t.Fatalf("making a network namespace: %v", err)
	}
	if err := netns.Set(orig); err != nil {
		t.Fatalf("leaving the new namespace: %v", err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(); ns.Close() })
	return h
}

func TestARestartReadoptsWhatSurvivedAndRemovesTheRest(t *testing.T) {
	nl := throwawayNetlink(t)
	dir := t.TempDir()
	pool, err := NewPool(netip.MustParsePrefix("10.213.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	sets := fakeSets{}
	p := testParams()
	p.InterfacePrefix = "icdt"
	for _, st := range Rules(p).Sets {
		sets.Create(st.Name, st.Type)
	}
	recs := &fakeRecords{m: map[string][]byte{}}
	var announced []string
	var mu sync.Mutex
	m := &Manager{
		cfg: Config{Rules: p, IPSets: sets, Records: recs, InterfacePrefix: "icdt", NetnsDir: dir,
			DefaultPolicy: policy.Policy{Internet: true},
			OnPolicy:      func(sb Sandbox) { mu.Lock(); announced = append(announced, sb.Name); mu.Unlock() }},
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), k: netlinkKernel{nl}, pool: pool,
		closedNets: closedNets(p), byName: map[string]*Sandbox{}, byAddr: map[netip.Addr]*Sandbox{},
	}

	// A sandbox's remains: a namespace file and the host end of its veth.
	remains := func(name string, slot int, withLink, withNS bool) Sandbox {
		gw, addr, subnet := pool.Link(slot)
		sb := Sandbox{Name: name, Netns: "icd-" + name, NetnsPath: filepath.Join(dir, "icd-"+name),
			HostInterface: fmt.Sprintf("icdt%x", slot), Addr: addr, Gateway: gw, Subnet: subnet, Slot: slot, Interface: "eth0",
			Policy: policy.Policy{AllowedHosts: []string{"192.0.2.0/24"}}}
		if withNS {
			if err := os.WriteFile(sb.NetnsPath, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if withLink {
			if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: sb.HostInterface}, PeerName: "peer" + sb.HostInterface[4:]}); err != nil {
				t.Fatalf("making a veth in the test's namespace: %v", err)
			}
		}
		raw, _ := json.Marshal(sb)
		recs.m[name] = raw
		return sb
	}
	alive := remains("alive", 1, true, true)
	noLink := remains("nolink", 2, false, true)
	noNS := remains("nons", 3, true, false)
	old := remains("old", 4, true, true)
	// A record from before policies: no "policy" field at all.
	var m0 map[string]any
	json.Unmarshal(recs.m["old"], &m0)
	delete(m0, "policy")
	recs.m["old"], _ = json.Marshal(m0)
	// The record of a deleted sandbox whose slot was given again: its
	// namespace went with it, its link name is now alive's.
	remains("stale", 1, false, false)
	// A record claiming another's slot.
	clash := alive
	clash.Name, clash.Netns, clash.NetnsPath = "clash", "icd-clash", filepath.Join(dir, "icd-clash")
	os.WriteFile(clash.NetnsPath, nil, 0o600)
	raw, _ := json.Marshal(clash)
	recs.m["clash"] = raw
	// A link of ours with no record (a crash between creating and
	// recording), one of someone else's, and a set entry of an earlier run.
	nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "icdt9"}, PeerName: "peer9"})
	nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "other0"}, PeerName: "other0p"})
	stale := Sandbox{HostInterface: "icdt7", Addr: netip.MustParseAddr("10.213.0.30"), Policy: policy.Policy{Internet: true, AllowedHosts: []string{"198.51.100.0/24"}}}
	for _, e := range policyEntries(&stale) {
		sets.Add(e.set, &e.entry)
	}

	if err := m.adopt(); err != nil {
		t.Fatalf("adopt: %v", err)
	}

	var names []string
	for _, sb := range m.List() {
		names = append(names, sb.Name)
	}
	// clash or alive: whichever came first keeps the slot; map order
	// decides, so only one of them may survive.
	if len(names) != 2 || !slices.Contains(names, "old") || (slices.Contains(names, "alive") == slices.Contains(names, "clash")) {
		t.Fatalf("re-adopted %v, want old and one of alive and clash", names)
	}
	survivor := "alive"
	if slices.Contains(names, "clash") {
		survivor = "clash"
	}
	if got, _ := m.Get("old"); !got.Policy.Internet {
		t.Errorf("a record from before policies got %+v, want the default", got.Policy)
	}
	if c, ok := m.Caller(alive.Addr); !ok || c.Sandbox != survivor || c.Policy == nil {
		t.Errorf("its address does not name it with a policy: %+v %v", c, ok)
	}
	for _, gone := range []string{"nolink", "nons", "stale"} {
		if _, ok := recs.m[gone]; ok {
			t.Errorf("the record of %s, which did not survive, is kept", gone)
		}
	}
	if _, err := os.Stat(noLink.NetnsPath); !os.IsNotExist(err) {
		t.Errorf("the namespace of a sandbox without its link is kept: %v", err)
	}
	for _, name := range []string{noNS.HostInterface, "icdt9"} {
		if _, err := nl.LinkByName(name); err == nil {
			t.Errorf("link %s, which belongs to no sandbox, is kept", name)
		}
	}
	for _, name := range []string{alive.HostInterface, old.HostInterface, "other0"} {
		if _, err := nl.LinkByName(name); err != nil {
			t.Errorf("link %s is gone: %v", name, err)
		}
	}
	// The sets hold what the survivors' policies say, and nothing of the
	// earlier run.
	want := map[string]bool{}
	for _, sb := range m.List() {
		for _, e := range policyEntries(&sb) {
			want[describeEntry(e)] = true
		}
	}
	got := map[string]bool{}
	for name, st := range sets {
		for _, e := range st.entries {
			got[describeEntry(setEntry{name, e})] = true
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("sets after adopt hold %v, want %v", got, want)
	}
	mu.Lock()
	slices.Sort(announced)
	if len(announced) != 2 {
		t.Errorf("OnPolicy announced %v, want the two survivors", announced)
	}
	mu.Unlock()
}
