package netns

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/interceptd/interceptd/policy"
	"github.com/vishvananda/netlink"
)

// fakeKernel is Kernel in memory. Namespaces are plain files (so that what
// the manager stats and lists on disk agrees with it); links are names with
// a type. It refuses, as the kernel does, a link whose name is taken and a
// namespace whose mount point exists.
type fakeKernel struct {
	mu     sync.Mutex
	cuts   []fakeCut         // CutInbound's calls
	forgot []netip.Addr      // ForgetConnections' calls
	links  map[string]string // daemon-side link name → type
	// failNS and failWire make the next CreateNamespace or Wire fail;
	// Wire fails after adding the link, as a half-made veth would.
	failNS, failWire error
	// deleting, when set, is told the name of the link the next
	// DeleteLink is to delete; holdDelete, when set, then blocks that
	// call until it is closed.
	deleting   chan string
	holdDelete chan struct{}
	routing    bool
	forwarding bool
	// loopDNS is whether each sandbox (by name) has loopback DNS capture;
	// failLoop makes the next LoopbackDNS(capture) fail.
	loopDNS  map[string]bool
	failLoop error
	// nsID is the namespace NamespaceID names; "" for one of its own.
	nsID string
}

var _ Kernel = (*fakeKernel)(nil)

func newFakeKernel() *fakeKernel {
	return &fakeKernel{links: map[string]string{}, loopDNS: map[string]bool{}}
}

func (k *fakeKernel) LinkType(name string) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	typ, ok := k.links[name]
	if !ok {
		return "", fmt.Errorf("link %s not found", name)
	}
	return typ, nil
}

func (k *fakeKernel) Links() ([]LinkInfo, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []LinkInfo
	for n, typ := range k.links {
		out = append(out, LinkInfo{Name: n, Type: typ})
	}
	return out, nil
}

func (k *fakeKernel) DeleteLink(name string) error {
	k.mu.Lock()
	deleting, hold := k.deleting, k.holdDelete
	k.deleting, k.holdDelete = nil, nil // the first call only
	k.mu.Unlock()
	if deleting != nil {
		deleting <- name
	}
	if hold != nil {
		<-hold
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.links, name)
	return nil
}

func (k *fakeKernel) CreateNamespace(path string) error {
	k.mu.Lock()
	err := k.failNS
	k.failNS = nil
	k.mu.Unlock()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("creating mount point %s: %w", path, err)
	}
	return f.Close()
}

func (k *fakeKernel) RemoveNamespace(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func (k *fakeKernel) Wire(s *Sandbox) (string, error) {
	if _, err := os.Stat(s.NetnsPath); err != nil {
		return "", fmt.Errorf("opening namespace: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.links[s.HostInterface]; ok {
		return "", fmt.Errorf("adding veth %s: file exists", s.HostInterface)
	}
	k.links[s.HostInterface] = "veth"
	if err := k.failWire; err != nil {
		k.failWire = nil
		return "", err
	}
	return fmt.Sprintf("02:00:00:00:%02x:%02x", s.Slot>>8, s.Slot&0xff), nil
}

// Chain renames the primary's link, which the test put in links, as the
// kernel would; it refuses a link that is not there or not a veth.
func (k *fakeKernel) Chain(s *Sandbox) (string, error) {
	if _, err := os.Stat(s.NetnsPath); err != nil {
		return "", fmt.Errorf("opening namespace: %w", err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if typ, ok := k.links[s.Chained]; !ok || typ != "veth" {
		return "", fmt.Errorf("%w: host interface %s: not a veth here", ErrInvalidChain, s.Chained)
	}
	delete(k.links, s.Chained)
	k.links[s.HostInterface] = "veth"
	return "02:00:00:00:ff:ff", nil
}

func (k *fakeKernel) LoopbackDNS(s *Sandbox, capture bool) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if capture && k.failLoop != nil {
		err := k.failLoop
		k.failLoop = nil
		return err
	}
	if capture {
		k.loopDNS[s.Name] = true
	} else {
		delete(k.loopDNS, s.Name)
	}
	return nil
}

func (k *fakeKernel) CheckWiring(s *Sandbox) error { return nil }
func (k *fakeKernel) ApplyRouting() error          { k.routing = true; return nil }
func (k *fakeKernel) TeardownRouting() error       { k.routing = false; return nil }
func (k *fakeKernel) EnableForwarding() (bool, error) {
	was := k.forwarding
	k.forwarding = true
	return !was, nil
}
func (k *fakeKernel) Close() {}

func (k *fakeKernel) NamespaceID() (string, error) {
	if k.nsID != "" {
		return k.nsID, nil
	}
	return fmt.Sprintf("fake:[%p]", k), nil
}

func (k *fakeKernel) linkNames() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for n := range k.links {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// failingSets is fakeSets whose Add fails with fail, when set.
type failingSets struct {
	fakeSets
	fail error
}

func (s *failingSets) Add(set string, e *netlink.IPSetEntry) error {
	if s.fail != nil {
		return s.fail
	}
	return s.fakeSets.Add(set, e)
}

// fakeEnv is a Manager built by New over fakes only: the kernel, the
// firewall, the sets and the records. Its namespaces are files in dir.
type fakeEnv struct {
	m    *Manager
	k    *fakeKernel
	sets *failingSets
	recs *fakeRecords
	dir  string
}

func newFakeEnv(t *testing.T, pool string, recs map[string][]byte) *fakeEnv {
	t.Helper()
	if recs == nil {
		recs = map[string][]byte{}
	}
	p := testParams()
	p.InterfacePrefix = "icdt"
	e := &fakeEnv{k: newFakeKernel(), sets: &failingSets{fakeSets: fakeSets{}}, recs: &fakeRecords{m: recs}, dir: t.TempDir()}
	m, err := New(Config{
		Pool: netip.MustParsePrefix(pool), NetnsPrefix: "icd-", InterfacePrefix: "icdt",
		NetnsDir: filepath.Join(e.dir, "netns"), ResolvConfDir: filepath.Join(e.dir, "etc-netns"),
		Rules: p, Records: e.recs, Kernel: e.k, IPTables: newFake(), IPSets: e.sets, NFT: &fakeNFT{},
		DefaultPolicy: policy.Policy{Internet: true},
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(m.cfg.NetnsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	e.m = m
	return e
}

// setup runs the manager's Setup: rules (with their sets), routing, adopt.
func (e *fakeEnv) setup(t *testing.T) {
	t.Helper()
	if err := e.m.Setup(); err != nil {
		t.Fatalf("setup: %v", err)
	}
}

// leftovers lists what exists of the sandboxes' kernel and disk state:
// links, namespaces, resolv.conf directories, records and set entries.
func (e *fakeEnv) leftovers(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, l := range e.k.linkNames() {
		out = append(out, "link "+l)
	}
	for _, d := range []string{e.m.cfg.NetnsDir, e.m.cfg.ResolvConfDir} {
		ents, _ := os.ReadDir(d)
		for _, x := range ents {
			out = append(out, "file "+filepath.Join(filepath.Base(d), x.Name()))
		}
	}
	for n := range e.recs.m {
		out = append(out, "record "+n)
	}
	for name, st := range e.sets.fakeSets {
		for _, x := range st.entries {
			out = append(out, "entry "+name+" "+entryKey(&x))
		}
	}
	sort.Strings(out)
	return out
}

func TestCreateGivesEachSandboxItsOwnSlotLinkNamespaceAndRecord(t *testing.T) {
	e := newFakeEnv(t, "10.213.0.0/29", nil) // two slots
	e.setup(t)
	a, err := e.m.Create("a", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.m.Create("b", &policy.Policy{AllowedHosts: []string{"192.0.2.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	if a.Slot == b.Slot || a.Addr == b.Addr || a.HostInterface == b.HostInterface {
		t.Fatalf("two sandboxes share a slot: %+v %+v", a, b)
	}
	for _, sb := range []Sandbox{a, b} {
		gw, addr, _ := e.m.pool.Link(sb.Slot)
		if sb.Addr != addr || sb.Gateway != gw || sb.HostInterface != fmt.Sprintf("icdt%x", sb.Slot) || sb.MAC == "" {
			t.Errorf("sandbox %s on slot %d: %+v", sb.Name, sb.Slot, sb)
		}
		if c, ok := e.m.Caller(sb.Addr); !ok || c.Sandbox != sb.Name {
			t.Errorf("its address does not name %s: %+v", sb.Name, c)
		}
		var rec Sandbox
		if err := json.Unmarshal(e.recs.m[sb.Name], &rec); err != nil || rec.Slot != sb.Slot || rec.HostInterface != sb.HostInterface {
			t.Errorf("record of %s: %+v %v", sb.Name, rec, err)
		}
		if body, err := os.ReadFile(filepath.Join(e.m.cfg.ResolvConfDir, sb.Netns, "resolv.conf")); err != nil || !strings.Contains(string(body), "nameserver "+sb.Gateway.String()) {
			t.Errorf("resolv.conf of %s: %q %v", sb.Name, body, err)
		}
	}
	var want []string
	for _, x := range policyEntries(&b) {
		want = append(want, describeEntry(x))
	}
	slices.Sort(want)
	if got := inSets(e.sets.fakeSets, &b); len(got) == 0 || !slices.Equal(got, want) {
		t.Errorf("b's set entries: %q, want %q", got, want)
	}
	if _, err := e.m.Create("c", nil); !errors.Is(err, ErrPoolExhausted) {
		t.Errorf("a third sandbox in a two-slot pool: %v", err)
	}
}

func TestACreateThatFailsLeavesNothingBehindAndFreesItsSlot(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(e *fakeEnv)
		wantMsg string
	}{
		{"the namespace cannot be made", func(e *fakeEnv) { e.k.failNS = errors.New("no namespaces left") }, "no namespaces left"},
		{"the veth is made but cannot be wired", func(e *fakeEnv) { e.k.failWire = errors.New("addressing: no buffer space") }, "no buffer space"},
		{"a leftover link has the slot's name", func(e *fakeEnv) { e.k.links["icdt0"] = "veth" }, "file exists"},
		{"resolv.conf cannot be written", func(e *fakeEnv) {
			os.WriteFile(e.m.cfg.ResolvConfDir, nil, 0o600) // a file where the directory goes
		}, "etc-netns"},
		{"loopback dns cannot be captured in it", func(e *fakeEnv) { e.k.failLoop = errors.New("nft: no such table") }, "no such table"},
		{"the policy sets cannot be filled", func(e *fakeEnv) { e.sets.fail = errors.New("set is full") }, "policy sets: "},
		{"the record cannot be written", func(e *fakeEnv) { e.recs.failOn = errors.New("disk full") }, "recording: disk full"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newFakeEnv(t, "10.213.0.0/29", nil) // two slots
			e.setup(t)
			tt.breakIt(e)
			before := e.leftovers(t)
			if _, err := e.m.Create("a", &policy.Policy{AllowedHosts: []string{"192.0.2.0/24"}}); err == nil || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("got %v, want an error saying %q", err, tt.wantMsg)
			}
			if tt.name == "a leftover link has the slot's name" {
				before = nil // that link is the failure's cause: it goes too
			}
			if got := e.leftovers(t); !slices.Equal(got, before) {
				t.Errorf("a failed create left %q (before: %q)", got, before)
			}
			if _, ok := e.m.Get("a"); ok || len(e.m.List()) != 0 {
				t.Error("a failed create is registered")
			}
			// Unbroken, both slots are free: the failure kept none.
			e.k.failNS, e.k.failWire, e.k.failLoop, e.sets.fail, e.recs.failOn = nil, nil, nil, nil, nil
			os.Remove(e.m.cfg.ResolvConfDir)
			for _, name := range []string{"a", "b"} {
				if _, err := e.m.Create(name, nil); err != nil {
					t.Errorf("creating %s after the failure: %v", name, err)
				}
			}
		})
	}
}

func TestADeletedSandboxsSlotIsGivenAgainOnlyOnceItsLinkIsGone(t *testing.T) {
	e := newFakeEnv(t, "10.213.0.0/29", nil) // two slots
	e.setup(t)
	e.m.reapWait = 0
	hold, deleting := make(chan struct{}), make(chan string, 1)
	e.k.holdDelete, e.k.deleting = hold, deleting
	var release sync.Once
	releaseReaper := func() { release.Do(func() { close(hold) }) }
	t.Cleanup(releaseReaper) // before Close, which waits for the reaper
	a, err := e.m.Create("a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.m.Delete("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(a.NetnsPath); !os.IsNotExist(err) {
		t.Errorf("the namespace outlives the delete: %v", err)
	}
	if _, ok := e.recs.m["a"]; ok || !slices.Contains(e.recs.calls, "forget a") {
		t.Errorf("the record of a made namespace is forgotten at once: calls %q", e.recs.calls)
	}
	if _, ok := e.m.Caller(a.Addr); ok {
		t.Error("the deleted sandbox's address still names it")
	}
	// The reaper is deleting its link (and held there): its slot is not
	// given until the link is gone.
	select {
	case name := <-deleting:
		if name != a.HostInterface {
			t.Fatalf("reaping link %s, want %s", name, a.HostInterface)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the deleted sandbox's link was never reaped")
	}
	b, err := e.m.Create("b", nil)
	if err != nil || b.Slot == a.Slot {
		t.Fatalf("while a's link is there, b got slot %d (a's was %d): %v", b.Slot, a.Slot, err)
	}
	if _, err := e.m.Create("c", nil); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("a slot whose link is not yet reaped was given again: %v", err)
	}
	releaseReaper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		e.m.mu.RLock()
		_, used := e.m.pool.used[a.Slot]
		e.m.mu.RUnlock()
		if !used {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the reaper did not free the slot")
		}
		time.Sleep(time.Millisecond)
	}
	if slices.Contains(e.k.linkNames(), a.HostInterface) {
		t.Error("the slot was freed before its link went")
	}
	c, err := e.m.Create("c", nil)
	if err != nil || c.Slot != a.Slot || c.HostInterface != a.HostInterface {
		t.Fatalf("after the reap c got slot %d (%v), want a's %d", c.Slot, err, a.Slot)
	}
	if got := e.m.List(); len(got) != 2 || got[0].Name != "b" || got[1].Name != "c" {
		t.Errorf("sandboxes: %+v", got)
	}
}

func TestARestartReadoptsTheRecordsThatSurvivedAndDropsTheRest(t *testing.T) {
	pool, _ := NewPool(netip.MustParsePrefix("10.213.0.0/16"))
	// rec is the record of a sandbox on slot; the kernel state each case
	// starts with is set up below.
	rec := func(name string, slot int, edit func(*Sandbox)) Sandbox {
		gw, addr, subnet := pool.Link(slot)
		sb := Sandbox{Name: name, Netns: "icd-" + name, HostInterface: fmt.Sprintf("icdt%x", slot),
			Addr: addr, Gateway: gw, Subnet: subnet, Slot: slot, Interface: "eth0",
			Policy: policy.Policy{AllowedHosts: []string{"192.0.2.0/24"}}}
		if edit != nil {
			edit(&sb)
		}
		return sb
	}
	type state struct {
		ns   bool   // its namespace exists
		link string // type of its host link, "" for none
	}
	tests := []struct {
		name     string
		sb       Sandbox
		raw      string // the record as stored, when not sb's JSON
		has      state
		survives bool
	}{
		{"a sandbox whose namespace and veth survived", rec("alive", 1, nil), "", state{true, "veth"}, true},
		{"a record from before policies gets the default", rec("old", 2, nil), "nopolicy", state{true, "veth"}, true},
		{"a sandbox whose link is gone", rec("nolink", 3, nil), "", state{true, ""}, false},
		{"a sandbox whose namespace is gone", rec("nons", 4, nil), "", state{false, "veth"}, false},
		{"a link of its name that is no veth", rec("dummy", 5, nil), "", state{true, "dummy"}, false},
		{"a record that does not match the pool", rec("moved", 6, func(s *Sandbox) { s.Addr = netip.MustParseAddr("10.99.0.2") }), "", state{true, "veth"}, false},
		{"a stale record naming a live sandbox's slot", rec("stale", 1, nil), "", state{false, ""}, false},
		{"a record that is not JSON", Sandbox{Name: "junk"}, "{not json", state{}, false},
		{"a record with an invalid policy", rec("badpol", 7, func(s *Sandbox) { s.Policy.AllowedHosts = []string{"bad host!"} }), "", state{true, "veth"}, false},
		{"a chained sandbox keeps the primary plugin's address", rec("chained", 9, func(s *Sandbox) {
			s.Chained, s.External, s.Addr, s.Gateway = "vethprim", true, netip.MustParseAddr("10.22.0.9"), netip.MustParseAddr("10.22.0.1")
		}), "", state{true, "veth"}, true},
		{"a chained record whose address is in the pool", rec("chainedpool", 10, func(s *Sandbox) { s.Chained, s.External = "vethprim", true }), "", state{true, "veth"}, false},
	}
	recs := map[string][]byte{}
	e := newFakeEnv(t, "10.213.0.0/16", recs)
	for i := range tests {
		tt := &tests[i]
		tt.sb.NetnsPath = filepath.Join(e.m.cfg.NetnsDir, "icd-"+tt.sb.Name)
		raw, _ := json.Marshal(tt.sb)
		switch tt.raw {
		case "":
		case "nopolicy":
			var m0 map[string]any
			json.Unmarshal(raw, &m0)
			delete(m0, "policy")
			raw, _ = json.Marshal(m0)
		default:
			raw = []byte(tt.raw)
		}
		recs[tt.sb.Name] = raw
		if tt.has.ns {
			os.WriteFile(tt.sb.NetnsPath, nil, 0o444)
		}
		if tt.has.link != "" {
			e.k.links[tt.sb.HostInterface] = tt.has.link
		}
	}
	// Leftovers without a record (a crash between creating and recording),
	// and what is not the daemon's.
	e.k.links["icdt99"], e.k.links["other0"], e.k.links["icdtx"] = "veth", "veth", "bridge"
	os.WriteFile(filepath.Join(e.m.cfg.NetnsDir, "icd-norecord"), nil, 0o444)
	os.WriteFile(filepath.Join(e.m.cfg.NetnsDir, "theirs"), nil, 0o444)
	// A set entry of an earlier run, on a slot nobody holds now.
	earlier := rec("earlier", 8, nil)
	for _, x := range policyEntries(&earlier) {
		e.sets.fakeSets.Create(x.set, "")
		e.sets.fakeSets.Add(x.set, &x.entry)
	}
	var announced []string
	e.m.cfg.OnPolicy = func(sb Sandbox) { announced = append(announced, sb.Name) }

	e.setup(t)
	if !e.k.routing || !e.k.forwarding {
		t.Errorf("setup left routing %v, forwarding %v", e.k.routing, e.k.forwarding)
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, registered := e.m.Get(tt.sb.Name)
			_, recorded := recs[tt.sb.Name]
			if registered != tt.survives || recorded != tt.survives {
				t.Fatalf("registered %v, record kept %v; want both %v", registered, recorded, tt.survives)
			}
			_, nsErr := os.Stat(tt.sb.NetnsPath)
			if tt.survives {
				if c, ok := e.m.Caller(tt.sb.Addr); !ok || c.Sandbox != tt.sb.Name || c.Policy == nil {
					t.Errorf("its address does not name it with a policy: %+v", c)
				}
				if nsErr != nil {
					t.Errorf("its namespace is gone: %v", nsErr)
				}
				if !slices.Contains(announced, tt.sb.Name) {
					t.Errorf("its policy was not announced: %q", announced)
				}
				if tt.raw == "nopolicy" && !got.Policy.Internet {
					t.Errorf("policy %+v, want the default", got.Policy)
				}
				return
			}
			if nsErr == nil {
				t.Error("its namespace is kept")
			}
		})
	}
	t.Run("a survivor that follows the default loses the connections the default no longer admits; a dropped one's go", func(t *testing.T) {
		var cut []string
		for _, c := range e.k.cuts {
			cut = append(cut, c.addr.String())
		}
		if want := []string{rec("old", 2, nil).Addr.String()}; !slices.Equal(cut, want) {
			t.Errorf("inbound cuts for %q, want %q (the default-following survivor only)", cut, want)
		}
		if !slices.Contains(e.k.forgot, rec("nons", 4, nil).Addr) {
			t.Errorf("a dropped sandbox's connections were kept: forgot %v", e.k.forgot)
		}
		if slices.Contains(e.k.forgot, rec("alive", 1, nil).Addr) {
			t.Errorf("a survivor's connections were forgotten (a stale record of its slot): forgot %v", e.k.forgot)
		}
	})
	t.Run("a dropped record's link is removed unless a survivor holds its slot", func(t *testing.T) {
		want := []string{"icdt1", "icdt2", "icdt9", "other0", "icdtx"}
		sort.Strings(want)
		if got := e.k.linkNames(); !slices.Equal(got, want) {
			t.Errorf("links after adopt %q, want %q: the survivors', and what is not a veth of ours", got, want)
		}
	})
	t.Run("namespaces without a record are swept, others' kept", func(t *testing.T) {
		if _, err := os.Stat(filepath.Join(e.m.cfg.NetnsDir, "icd-norecord")); !os.IsNotExist(err) {
			t.Errorf("an unrecorded namespace of ours is kept: %v", err)
		}
		if _, err := os.Stat(filepath.Join(e.m.cfg.NetnsDir, "theirs")); err != nil {
			t.Errorf("another's namespace was removed: %v", err)
		}
	})
	t.Run("the sets hold what the survivors' policies say and nothing of the earlier run", func(t *testing.T) {
		var want, got []string
		for _, sb := range e.m.List() {
			for _, x := range policyEntries(&sb) {
				want = append(want, describeEntry(x))
			}
		}
		for name, st := range e.sets.fakeSets {
			for _, x := range st.entries {
				got = append(got, describeEntry(setEntry{name, x}))
			}
		}
		sort.Strings(want)
		sort.Strings(got)
		if !slices.Equal(got, want) {
			t.Errorf("sets hold\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
	})
	t.Run("a new sandbox never gets a survivor's slot", func(t *testing.T) {
		for i := 0; i < 8; i++ {
			sb, err := e.m.Create(fmt.Sprintf("new%d", i), nil)
			if err != nil {
				t.Fatal(err)
			}
			if sb.Slot == 1 || sb.Slot == 2 {
				t.Fatalf("%s got slot %d, a survivor's", sb.Name, sb.Slot)
			}
		}
	})
}

// CutInbound records the policy each call was for; it cuts nothing.
func (k *fakeKernel) CutInbound(addr netip.Addr, admits Admits) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.cuts = append(k.cuts, fakeCut{addr, admits})
	return 0, nil
}

// ForgetConnections records the address; it cuts nothing.
func (k *fakeKernel) ForgetConnections(addr netip.Addr) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.forgot = append(k.forgot, addr)
	return 0, nil
}

type fakeCut struct {
	addr   netip.Addr
	admits Admits
}
