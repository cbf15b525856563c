package netns

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/interceptd/interceptd/policy"
)

// fakeRecords is Records in memory; fail makes the next writes fail.
type fakeRecords struct {
	mu     sync.Mutex
	m      map[string][]byte
	calls  []string
	failOn error
}

func (r *fakeRecords) op(what, name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, what+" "+name)
	return r.failOn
}

func (r *fakeRecords) SaveSandbox(name string, rec []byte) error {
	if err := r.op("save", name); err != nil {
		return err
	}
	r.mu.Lock()
	r.m[name] = rec
	r.mu.Unlock()
	return nil
}

func (r *fakeRecords) DeleteSandbox(name string) error {
	if err := r.op("delete", name); err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.m, name)
	r.mu.Unlock()
	return nil
}

func (r *fakeRecords) ForgetSandbox(name string) error {
	if err := r.op("forget", name); err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.m, name)
	r.mu.Unlock()
	return nil
}

func (r *fakeRecords) Sandboxes() (map[string][]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]byte{}
	for k, v := range r.m {
		out[k] = v
	}
	return out, nil
}

func TestTheEntriesEachPolicyPutsInTheSets(t *testing.T) {
	sb := func(p policy.Policy) *Sandbox {
		return &Sandbox{Name: "a", HostInterface: "icd1", Addr: netip.MustParseAddr("10.213.0.6"), Policy: p}
	}
	tests := []struct {
		name string
		pol  policy.Policy
		want []string
	}{
		{"internet off and no list: nothing, so everything is refused", policy.Policy{}, nil},
		{"internet on: the sandbox's address in the internet set", policy.Policy{Internet: true}, []string{
			"interceptd-inet 10.213.0.6",
		}},
		{"an allowlist of names binds the sandbox to it even with internet on", policy.Policy{Internet: true, AllowedHosts: []string{"*.good.test"}}, []string{
			"interceptd-listed 10.213.0.6",
		}},
		{"an address entry without a port opens every protocol to it, by interface", policy.Policy{AllowedHosts: []string{"192.0.2.0/24"}}, []string{
			"interceptd-allow-any 192.0.2.0/24 icd1",
			"interceptd-listed 10.213.0.6",
		}},
		{"an address entry with a port opens that port over tcp and udp", policy.Policy{AllowedHosts: []string{"192.0.2.7:5432"}}, []string{
			"interceptd-allow-port 10.213.0.6 tcp:5432 192.0.2.7/32",
			"interceptd-allow-port 10.213.0.6 udp:5432 192.0.2.7/32",
			"interceptd-listed 10.213.0.6",
		}},
		{"denied addresses, with a port and without", policy.Policy{Internet: true, DeniedHosts: []string{"198.51.100.1", "203.0.113.0/24:22", "bad.test"}}, []string{
			"interceptd-deny-any 198.51.100.1/32 icd1",
			"interceptd-deny-port 10.213.0.6 tcp:22 203.0.113.0/24",
			"interceptd-deny-port 10.213.0.6 udp:22 203.0.113.0/24",
			"interceptd-inet 10.213.0.6",
		}},
		{"inbound entries without a port open the sandbox's link to the source nets, and its address once", policy.Policy{Inbound: []string{"10.244.0.0/16", "192.0.2.7"}}, []string{
			"interceptd-inbound-any 10.244.0.0/16 icd1",
			"interceptd-inbound-any 192.0.2.7/32 icd1",
			"interceptd-inbound-dst 10.213.0.6/32 icd1",
		}},
		{"an inbound entry with a port range and protocol: one entry per port", policy.Policy{Inbound: []string{"192.0.2.7:5000-5001/udp"}}, []string{
			"interceptd-inbound-port 10.213.0.6 udp:5000 192.0.2.7/32",
			"interceptd-inbound-port 10.213.0.6 udp:5001 192.0.2.7/32",
		}},
		{"an inbound entry with a port and no protocol: tcp and udp", policy.Policy{Inbound: []string{"10.96.0.0/12:53"}}, []string{
			"interceptd-inbound-port 10.213.0.6 tcp:53 10.96.0.0/12",
			"interceptd-inbound-port 10.213.0.6 udp:53 10.96.0.0/12",
		}},
		{"an inbound entry from anywhere is two halves: the kernel takes no /0", policy.Policy{Inbound: []string{"0.0.0.0/0:80/tcp"}}, []string{
			"interceptd-inbound-port 10.213.0.6 tcp:80 0.0.0.0/1",
			"interceptd-inbound-port 10.213.0.6 tcp:80 128.0.0.0/1",
		}},
		{"IPv6 entries have no place in the IPv4 sets", policy.Policy{AllowedHosts: []string{"2001:db8::/32"}}, []string{
			"interceptd-listed 10.213.0.6",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, e := range policyEntries(sb(tt.pol)) {
				got = append(got, describeEntry(e))
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("entries:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tt.want, "\n  "))
			}
		})
	}
}

// inSets lists, sorted, the entries of sb's in the sets.
func inSets(sets fakeSets, sb *Sandbox) []string {
	var out []string
	for name, st := range sets {
		for _, e := range st.entries {
			if e.IFace == sb.HostInterface || (e.IP != nil && e.IP.Equal(sb.Addr.AsSlice())) {
				out = append(out, describeEntry(setEntry{name, e}))
			}
		}
	}
	slices.Sort(out)
	return out
}

// describeEntry is one set entry as `ipset list` would show it, roughly.
func describeEntry(e setEntry) string {
	x := e.entry
	switch {
	case x.IFace != "":
		return fmt.Sprintf("%s %s/%d %s", e.set, x.IP, x.CIDR, x.IFace)
	case x.Port != nil:
		proto := map[uint8]string{6: "tcp", 17: "udp"}[*x.Protocol]
		return fmt.Sprintf("%s %s %s:%d %s/%d", e.set, x.IP, proto, *x.Port, x.IP2, x.CIDR2)
	}
	return fmt.Sprintf("%s %s", e.set, x.IP)
}

func TestCreatingOrAttachingRefusesBadRequestsBeforeTouchingTheKernel(t *testing.T) {
	m, _ := testManager(t)
	m.cfg.NetnsDir = t.TempDir()
	m.cfg.NetnsPrefix = "icd-"
	pool, err := NewPool(netip.MustParsePrefix("10.213.0.0/29")) // two slots
	if err != nil {
		t.Fatal(err)
	}
	m.pool = pool
	for slot, name := range []string{"taken", "full"} {
		if err := pool.Reserve(slot); err != nil {
			t.Fatal(err)
		}
		m.addTestSandbox(t, name, slot, policy.Policy{})
	}
	if err := os.WriteFile(filepath.Join(m.cfg.NetnsDir, "icd-theirs"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		do      func() error
		wantErr error
		wantMsg string
	}{
		{"an invalid name", func() error { _, err := m.Create("../x", nil); return err }, ErrInvalidName, "starting with a letter or digit"},
		{"an invalid policy", func() error {
			_, err := m.Create("new", &policy.Policy{AllowedHosts: []string{"bad host!"}})
			return err
		}, ErrInvalidPolicy, "bad host!"},
		{"a name in use", func() error { _, err := m.Create("taken", nil); return err }, ErrExists, "taken"},
		{"a full pool", func() error { _, err := m.Create("new", nil); return err }, ErrPoolExhausted, ""},
		{"attach without a namespace", func() error { _, err := m.Attach("new", "", "eth0", nil); return err }, nil, "needs a namespace path"},
		{"attach with a bad interface name", func() error { _, err := m.Attach("new", "/proc/self/ns/net", "eth0; rm", nil); return err }, nil, "interface name"},
		{"attach of a namespace that does not exist", func() error {
			_, err := m.Attach("new", filepath.Join(m.cfg.NetnsDir, "none"), "eth0", nil)
			return err
		}, nil, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do()
			if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("got %v, want %v containing %q", err, tt.wantErr, tt.wantMsg)
			}
			if got := len(m.List()); got != 2 {
				t.Errorf("%d sandboxes after a refused request, want 2", got)
			}
		})
	}
	t.Run("a namespace the daemon did not make is never taken over", func(t *testing.T) {
		m.pool.Release(0)
		defer m.pool.Reserve(0)
		_, err := m.Create("theirs", nil)
		if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "not made by this daemon") {
			t.Fatalf("got %v, want ErrExists: not made by this daemon", err)
		}
		if _, err := m.pool.Allocate(); err != nil {
			t.Errorf("the refused create kept its slot: %v", err)
		}
	})
}

func TestAPolicyChangeIsRecordedInForceAndAnnounced(t *testing.T) {
	m, sets := testManager(t)
	recs := &fakeRecords{m: map[string][]byte{}}
	m.cfg.Records = recs
	sb := m.addTestSandbox(t, "web1", 1, policy.Policy{})
	other := m.addTestSandbox(t, "web2", 2, policy.Policy{Internet: true})
	announced := make(chan Sandbox, 1)
	m.cfg.OnPolicy = func(s Sandbox) {
		// Called outside the manager's locks: reading it back must not
		// block.
		if got, ok := m.Get(s.Name); !ok || !got.Policy.Internet {
			t.Errorf("OnPolicy ran before the change was in force: %+v", got.Policy)
		}
		announced <- s
	}
	if _, err := m.SetPolicy("web1", policy.Policy{Internet: true, DeniedHosts: []string{"bad.test"}}); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-announced:
		if s.Name != "web1" {
			t.Errorf("announced %s", s.Name)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnPolicy was not called (or deadlocked)")
	}
	c, ok := m.Caller(sb.Addr)
	if !ok || c.Sandbox != "web1" || !c.Policy.Policy.Internet {
		t.Errorf("Caller after the change: %+v %v", c, ok)
	}
	var rec Sandbox
	if err := json.Unmarshal(recs.m["web1"], &rec); err != nil || !rec.Policy.Internet || !slices.Equal(rec.Policy.DeniedHosts, []string{"bad.test"}) {
		t.Errorf("record after the change: %+v %v", rec.Policy, err)
	}
	if got, _ := m.Get("web2"); !got.Policy.Internet || len(got.Policy.DeniedHosts) != 0 {
		t.Errorf("the change touched another sandbox: %+v", got.Policy)
	}
	_ = other

	want := inSets(sets, sb)
	tests := []struct {
		name    string
		sandbox string
		pol     policy.Policy
		fail    error
		wantErr error
	}{
		{"an invalid policy changes nothing", "web1", policy.Policy{DeniedHosts: []string{"bad host!"}}, nil, ErrInvalidPolicy},
		{"an unknown sandbox", "none", policy.Policy{}, nil, ErrNotFound},
		{"a policy that cannot be recorded is not put in force", "web1", policy.Policy{}, errors.New("disk full"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs.failOn = tt.fail
			defer func() { recs.failOn = nil }()
			_, err := m.SetPolicy(tt.sandbox, tt.pol)
			if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
			if got, _ := m.Get("web1"); !got.Policy.Internet {
				t.Errorf("a failed change is in force: %+v", got.Policy)
			}
			if got := inSets(sets, sb); !slices.Equal(got, want) {
				t.Errorf("a failed change left the sets holding\n  %s\nwant what the policy in force puts there:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
			select {
			case s := <-announced:
				t.Errorf("a failed change was announced: %s", s.Name)
			default:
			}
		})
	}
}

func TestDeleteForgetsTheSandboxEverywhereBeforeItsLinkGoes(t *testing.T) {
	m, sets := testManager(t)
	recs := &fakeRecords{m: map[string][]byte{}}
	m.cfg.Records = recs
	var deleted []string
	m.cfg.OnDelete = func(name string) { deleted = append(deleted, name) }
	sb := m.addTestSandbox(t, "web1", 1, policy.Policy{Internet: true, AllowedHosts: []string{"192.0.2.0/24"}})
	keep := m.addTestSandbox(t, "web2", 2, policy.Policy{Internet: true})
	recs.m["web1"], recs.m["web2"] = []byte("{}"), []byte("{}")

	if err := m.Delete("web1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Get("web1"); ok {
		t.Error("Get still finds it")
	}
	if _, ok := m.Caller(sb.Addr); ok {
		t.Error("its address still has a policy")
	}
	for name, st := range sets {
		for _, e := range st.entries {
			if e.IFace == sb.HostInterface || (e.IP != nil && e.IP.Equal(sb.Addr.AsSlice())) {
				t.Errorf("set %s keeps an entry of the deleted sandbox: %s", name, entryKey(&e))
			}
		}
	}
	if _, ok := recs.m["web1"]; ok || !slices.Contains(recs.calls, "delete web1") {
		t.Errorf("the record of an attached sandbox must be deleted durably: calls %q", recs.calls)
	}
	if !slices.Equal(deleted, []string{"web1"}) {
		t.Errorf("OnDelete called for %q", deleted)
	}
	select {
	case it := <-m.reapq:
		if it.s.Name != "web1" {
			t.Errorf("reaping %s", it.s.Name)
		}
	default:
		t.Error("its link was not queued for removal")
	}
	if got, ok := m.Get("web2"); !ok || got.Addr != keep.Addr {
		t.Error("the delete touched another sandbox")
	}
	if c, ok := m.Caller(keep.Addr); !ok || c.Sandbox != "web2" {
		t.Error("another sandbox lost its policy")
	}

	t.Run("an unknown sandbox is ErrNotFound", func(t *testing.T) {
		if err := m.Delete("web1"); !errors.Is(err, ErrNotFound) {
			t.Errorf("got %v", err)
		}
	})
	t.Run("a record that cannot be deleted is an error, and the daemon forgets the sandbox all the same", func(t *testing.T) {
		recs.failOn = errors.New("disk full")
		defer func() { recs.failOn = nil }()
		deleted = nil
		if err := m.Delete("web2"); err == nil || !strings.Contains(err.Error(), "disk full") {
			t.Errorf("got %v", err)
		}
		// It has left the manager (a retry is ErrNotFound), so its tunnels
		// and learned addresses must go now or never.
		if _, ok := m.Get("web2"); ok {
			t.Error("Get still finds it")
		}
		if !slices.Equal(deleted, []string{"web2"}) {
			t.Errorf("OnDelete called for %q, want web2", deleted)
		}
	})
}

func TestNewNeedsAValidPoolAndFillsTheDefaults(t *testing.T) {
	if _, err := New(Config{Pool: netip.MustParsePrefix("10.213.0.0/31"), IPTables: newFake(), IPSets: fakeSets{}, NFT: &fakeNFT{}}); err == nil {
		t.Error("a pool without room for one /30 was accepted")
	}
	m, err := New(Config{Pool: netip.MustParsePrefix("10.213.0.0/16"), IPTables: newFake(), IPSets: fakeSets{}, NFT: &fakeNFT{}, Rules: testParams()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.cfg.NetnsDir != "/run/netns" || m.log == nil {
		t.Errorf("defaults: netns dir %q, logger %v", m.cfg.NetnsDir, m.log)
	}
	if m.rules.Render() != Rules(testParams()).Render() {
		t.Error("the manager's rules are not those of its parameters")
	}
	if len(m.List()) != 0 {
		t.Error("a new manager has sandboxes")
	}
}

// ipv4Packet builds an IPv4 header with ihl 32-bit words (5 to 15), proto,
// and then the transport bytes.
func ipv4Packet(ihl int, proto byte, src, dst string, transport []byte) []byte {
	p := make([]byte, ihl*4)
	p[0] = 4<<4 | byte(ihl)
	p[9] = proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	binary.BigEndian.PutUint16(p[2:4], uint16(len(p)+len(transport)))
	return append(p, transport...)
}

func ports(src, dst uint16) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint16(b[0:2], src)
	binary.BigEndian.PutUint16(b[2:4], dst)
	return b
}

func TestARefusalIsReadFromTheLoggedPacket(t *testing.T) {
	const from, to = "10.213.0.6", "192.0.2.9"
	tests := []struct {
		name   string
		packet []byte
		want   string // "" for not a refusal
	}{
		{"tcp names its destination port", ipv4Packet(5, 6, from, to, ports(40000, 5432)), "not_allowed tcp 10.213.0.6 -> 192.0.2.9:5432"},
		{"udp names its destination port", ipv4Packet(5, 17, from, to, ports(40000, 53)), "not_allowed udp 10.213.0.6 -> 192.0.2.9:53"},
		{"IP options move the transport header", ipv4Packet(6, 6, from, to, ports(40000, 22)), "not_allowed tcp 10.213.0.6 -> 192.0.2.9:22"},
		{"icmp has no port", ipv4Packet(5, 1, from, to, []byte{8, 0, 0, 0}), "not_allowed icmp 10.213.0.6 -> 192.0.2.9:0"},
		{"another protocol is other", ipv4Packet(5, 47, from, to, nil), "not_allowed other 10.213.0.6 -> 192.0.2.9:0"},
		{"a transport header cut short gives no port", ipv4Packet(5, 6, from, to, []byte{0x9c}), "not_allowed tcp 10.213.0.6 -> 192.0.2.9:0"},
		{"an IPv6 packet is not read", append([]byte{0x60}, make([]byte, 39)...), ""},
		{"a packet shorter than an IPv4 header is not read", ipv4Packet(5, 6, from, to, nil)[:19], ""},
		{"nothing is not read", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, ok := parseRefusal("not_allowed", tt.packet)
			got := ""
			if ok {
				got = fmt.Sprintf("%s %s %s -> %s", r.Reason, r.Proto, r.Src, r.Dst)
			}
			if got != tt.want {
				t.Errorf("parseRefusal = %q, want %q", got, tt.want)
			}
		})
	}
}
