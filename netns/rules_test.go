package netns

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/interceptd/interceptd/policy"
	"github.com/vishvananda/netlink"
)

var update = flag.Bool("update", false, "rewrite golden files")

func testParams() RuleParams {
	return RuleParams{InterfacePrefix: "icd", HTTPListenIP: "127.0.0.1", HTTPListenPort: 15380, HTTPSListenPort: 15443, DNSPort: 15353,
		Pool: "10.213.0.0/16", Protected: []string{"10.213.0.0/16", "198.18.213.0/24", "127.0.0.0/8", "169.254.0.0/16"},
		Private: []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "198.18.0.0/15"}, DNSQPS: 2000}
}

func TestRulesRenderAsTheGoldenText(t *testing.T) {
	got := Rules(testParams()).Render()
	const golden = "testdata/rules.golden"
	if *update {
		os.WriteFile(golden, []byte(got), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("rules differ from %s (run with -update if intended):\n%s", golden, got)
	}
}

func TestTheDNSFloodLimitIsThereOnlyWhenARateIsSet(t *testing.T) {
	for _, tt := range []struct {
		qps  int
		want string
	}{
		{2000, `update @dnsflood { ip saddr limit rate over 2000/second burst 4000 packets } drop`},
		{0, ""},
	} {
		p := testParams()
		p.DNSQPS = tt.qps
		table := Rules(p).TProxy
		if got := strings.Contains(table, "dnsflood"); got != (tt.want != "") {
			t.Errorf("at %d/s the table has a flood limit: %v, want %v:\n%s", tt.qps, got, tt.want != "", table)
		}
		if tt.want != "" && !strings.Contains(table, tt.want) {
			t.Errorf("at %d/s the table lacks %q:\n%s", tt.qps, tt.want, table)
		}
		if !strings.Contains(table, "tproxy to 127.0.0.1:15380") {
			t.Errorf("at %d/s the table lost the interception:\n%s", tt.qps, table)
		}
	}
}

func TestCountRulesCountsRulesNotTablesChainsOrSets(t *testing.T) {
	save := "*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -i icd+ -j INTERCEPTD-ANTISPOOF\n-A INTERCEPTD-ANTISPOOF -j DROP\nCOMMIT\n"
	nft := `table ip interceptd { # handle 7
	set dnsflood { # handle 1
		type ipv4_addr
	}
	chain dnslimit { # handle 2
		iifname "icd*" udp dport 53 update @dnsflood { ip saddr limit rate over 2000/second burst 4000 packets } drop # handle 3
	}
	chain prerouting { # handle 4
		iifname "icd*" tcp dport 80 tproxy to 127.0.0.1:15380 meta mark set meta mark | 0x01000000 accept # handle 5
	}
}
`
	if got := CountRules(save, nft); got != 4 {
		t.Errorf("counted %d rules, want 4 (two iptables, two nftables)", got)
	}
}

func TestTheFloodSetHoldsEveryAddressOfThePool(t *testing.T) {
	for _, tt := range []struct {
		pool string
		want int
	}{
		{"10.213.0.0/16", 1 << 16},
		{"10.0.0.0/12", 1 << 20},
		{"10.213.0.0/24", 1 << 16},
		{"not a prefix", 1 << 16},
	} {
		if got := floodSetSize(tt.pool); got != tt.want {
			t.Errorf("pool %s: set size %d, want %d", tt.pool, got, tt.want)
		}
	}
}

func TestEveryRuleMatchesOnlySandboxInterfaces(t *testing.T) {
	rs := Rules(testParams())
	ours := map[string]bool{}
	for _, c := range rs.Chains {
		ours[c.Name] = true
	}
	for _, r := range rs.Rules {
		if !ours[r.Chain] {
			t.Errorf("rule %s is outside the daemon's chains", r)
		}
	}
	for _, j := range rs.Jumps {
		s := strings.Join(j.Spec, " ")
		// POSTROUTING has no input interface: it matches the pool, which
		// only sandboxes can send from (anti-spoofing).
		if !strings.Contains(s, "-i icd+") && !strings.Contains(s, "-o icd+") && !strings.Contains(s, "-s 10.213.0.0/16") {
			t.Errorf("jump %s does not match the sandbox interface prefix", j)
		}
	}
}

// fakeIPTables is an in-memory iptables: tables → chains → ordered rules.
type fakeIPTables struct {
	chains map[string][]string // "table/chain" → rules
}

func newFake() *fakeIPTables {
	f := &fakeIPTables{chains: map[string][]string{}}
	for _, c := range []string{"raw/PREROUTING", "mangle/PREROUTING", "nat/PREROUTING", "nat/POSTROUTING", "filter/INPUT", "filter/FORWARD"} {
		f.chains[c] = nil
	}
	return f
}

func (f *fakeIPTables) ChainExists(table, chain string) (bool, error) {
	_, ok := f.chains[table+"/"+chain]
	return ok, nil
}
func (f *fakeIPTables) ClearChain(table, chain string) error {
	f.chains[table+"/"+chain] = []string{}
	return nil
}
func (f *fakeIPTables) DeleteChain(table, chain string) error {
	if len(f.chains[table+"/"+chain]) > 0 {
		return fmt.Errorf("chain %s/%s is not empty", table, chain)
	}
	delete(f.chains, table+"/"+chain)
	return nil
}
func (f *fakeIPTables) ClearAndDeleteChain(table, chain string) error {
	delete(f.chains, table+"/"+chain)
	return nil
}
func (f *fakeIPTables) Exists(table, chain string, spec ...string) (bool, error) {
	return slices.Contains(f.chains[table+"/"+chain], strings.Join(spec, " ")), nil
}
func (f *fakeIPTables) Insert(table, chain string, pos int, spec ...string) error {
	k := table + "/" + chain
	c, ok := f.chains[k]
	if !ok {
		return fmt.Errorf("no chain %s", k)
	}
	f.chains[k] = slices.Insert(c, pos-1, strings.Join(spec, " "))
	return nil
}
func (f *fakeIPTables) Append(table, chain string, spec ...string) error {
	k := table + "/" + chain
	if _, ok := f.chains[k]; !ok {
		return fmt.Errorf("no chain %s", k)
	}
	f.chains[k] = append(f.chains[k], strings.Join(spec, " "))
	return nil
}
func (f *fakeIPTables) DeleteIfExists(table, chain string, spec ...string) error {
	k := table + "/" + chain
	f.chains[k] = slices.DeleteFunc(f.chains[k], func(s string) bool { return s == strings.Join(spec, " ") })
	return nil
}

func (f *fakeIPTables) count() int {
	n := 0
	for _, c := range f.chains {
		n += len(c)
	}
	return n
}

func TestApplyTwiceLeavesOneCopyAndTeardownLeavesTheCanary(t *testing.T) {
	f := newFake()
	canary := []string{"-s", "192.0.2.1", "-j", "ACCEPT"}
	f.Append("filter", "INPUT", canary...)
	rs := Rules(testParams())
	sets := fakeSets{}
	for i := 0; i < 2; i++ {
		if err := rs.Apply(f, sets, &fakeNFT{}); err != nil {
			t.Fatal(err)
		}
	}
	if want := len(rs.Rules) + len(rs.Jumps) + 1; f.count() != want {
		t.Errorf("after two applies: %d rules, want %d", f.count(), want)
	}
	if got := f.chains["filter/INPUT"][0]; !strings.Contains(got, "INTERCEPTD-INPUT") {
		t.Errorf("jump is not first in INPUT: %q", got)
	}
	if len(sets) != len(rs.Sets) {
		t.Errorf("%d sets after two applies, want %d", len(sets), len(rs.Sets))
	}
	if got := f.chains["filter/FORWARD"]; len(got) != 2 || !strings.HasPrefix(got[0], "-i") || !strings.HasPrefix(got[1], "-o") {
		t.Errorf("FORWARD jumps out of order: %q", got)
	}
	if err := rs.Teardown(f, sets, &fakeNFT{}); err != nil {
		t.Fatal(err)
	}
	if len(sets) != 0 {
		t.Errorf("sets survived teardown: %v", sets)
	}
	if err := rs.Teardown(f, sets, &fakeNFT{}); err != nil {
		t.Fatalf("second teardown: %v", err)
	}
	if f.count() != 1 || f.chains["filter/INPUT"][0] != strings.Join(canary, " ") {
		t.Errorf("teardown touched something else: %v", f.chains)
	}
	for _, c := range rs.Chains {
		if ok, _ := f.ChainExists(c.Table, c.Name); ok {
			t.Errorf("chain %s/%s survived teardown", c.Table, c.Name)
		}
	}
}

// fakeNFT keeps the last script it was given.
type fakeNFT struct{ last string }

func (n *fakeNFT) Run(script string) error { n.last = script; return nil }

// fakeSets is an in-memory ipset: set name → its type and entries.
// Timeouts are kept, never run out.
type fakeSets map[string]*fakeSet

type fakeSet struct {
	typ     string
	entries []netlink.IPSetEntry
}

func (s fakeSets) Create(name, typ string) error {
	if _, ok := s[name]; !ok {
		s[name] = &fakeSet{typ: typ}
	}
	return nil
}
func (s fakeSets) Destroy(name string) error { delete(s, name); return nil }

// entryKey is what tells entries apart (ipset ignores the timeout).
func entryKey(e *netlink.IPSetEntry) string {
	var port uint16
	var proto uint8
	if e.Port != nil {
		port, proto = *e.Port, *e.Protocol
	}
	return fmt.Sprintf("%v/%d %d:%d %v/%d %s", e.IP.To4(), e.CIDR, proto, port, e.IP2.To4(), e.CIDR2, e.IFace)
}

func (s fakeSets) Add(set string, e *netlink.IPSetEntry) error {
	st, ok := s[set]
	if !ok {
		return fmt.Errorf("no set %s", set)
	}
	for i := range st.entries {
		if entryKey(&st.entries[i]) == entryKey(e) {
			if !e.Replace {
				return fmt.Errorf("%s: entry exists", set)
			}
			st.entries[i] = *e
			return nil
		}
	}
	st.entries = append(st.entries, *e)
	return nil
}

func (s fakeSets) Del(set string, e *netlink.IPSetEntry) error {
	st, ok := s[set]
	if !ok {
		return fmt.Errorf("no set %s", set)
	}
	n := len(st.entries)
	st.entries = slices.DeleteFunc(st.entries, func(x netlink.IPSetEntry) bool { return entryKey(&x) == entryKey(e) })
	if len(st.entries) == n {
		return fmt.Errorf("%s: no such entry", set)
	}
	return nil
}

func (s fakeSets) List(set string) ([]netlink.IPSetEntry, error) {
	st, ok := s[set]
	if !ok {
		return nil, fmt.Errorf("no set %s", set)
	}
	return slices.Clone(st.entries), nil
}

// recordingIPT logs every call, to check the order of operations.
type recordingIPT struct {
	*fakeIPTables
	log []string
}

func (r *recordingIPT) ClearChain(table, chain string) error {
	// Which of the built-in chains that jump to ours hold a guard, and
	// for which match: every way in must be shut, not only INPUT.
	var guarded []string
	for _, builtin := range []string{"filter/INPUT", "filter/FORWARD"} {
		for _, rule := range r.chains[builtin] {
			if strings.Contains(rule, "reloading rules") {
				f := strings.Fields(rule)
				guarded = append(guarded, builtin+" "+f[0]+" "+f[1])
			}
		}
	}
	slices.Sort(guarded)
	r.log = append(r.log, fmt.Sprintf("clear %s/%s guarded=[%s]", table, chain, strings.Join(guarded, ", ")))
	return r.fakeIPTables.ClearChain(table, chain)
}

func TestARestartRefillsTheChainsBehindGuards(t *testing.T) {
	f := &recordingIPT{fakeIPTables: newFake()}
	rs := Rules(testParams())
	sets := fakeSets{}
	if err := rs.Apply(f, sets, &fakeNFT{}); err != nil { // first start: no guards needed
		t.Fatal(err)
	}
	if len(f.log) == 0 {
		t.Fatal("the first start cleared no chain")
	}
	for _, l := range f.log {
		if !strings.HasSuffix(l, "guarded=[]") {
			t.Errorf("first start: %s", l)
		}
	}
	f.log = nil
	before := f.count()
	if err := rs.Apply(f, sets, &fakeNFT{}); err != nil { // a restart
		t.Fatal(err)
	}
	// Each built-in chain a sandbox's packets enter ours from.
	const all = "guarded=[filter/FORWARD -i icd+, filter/FORWARD -o icd+, filter/INPUT -i icd+]"
	if len(f.log) == 0 {
		t.Fatal("the restart cleared no chain")
	}
	for _, l := range f.log {
		if !strings.HasSuffix(l, all) {
			t.Errorf("restart: %s, want every way in guarded: %s", l, all)
		}
	}
	if f.count() != before {
		t.Errorf("%d rules after the restart, %d before: the guards were not removed", f.count(), before)
	}
}

func TestApplyRemovesTheIptablesTPROXYChainOfEarlierVersions(t *testing.T) {
	f := newFake()
	rs := Rules(testParams())
	for _, c := range rs.ObsoleteChains {
		f.ClearChain(c.Table, c.Name)
		f.Append(c.Table, c.Name, "-p", "tcp", "--dport", "80", "-j", "TPROXY")
	}
	for _, j := range rs.ObsoleteJumps {
		f.Insert(j.Table, j.Chain, 1, j.Spec...)
	}
	nft := &fakeNFT{}
	if err := rs.Apply(f, fakeSets{}, nft); err != nil {
		t.Fatal(err)
	}
	for _, c := range rs.ObsoleteChains {
		if ok, _ := f.ChainExists(c.Table, c.Name); ok {
			t.Errorf("obsolete chain %s/%s is still there", c.Table, c.Name)
		}
	}
	if got := f.chains["mangle/PREROUTING"]; len(got) != 0 {
		t.Errorf("obsolete jump is still there: %q", got)
	}
	if !strings.Contains(nft.last, "tproxy to 127.0.0.1:15380") || !strings.HasPrefix(nft.last, "table ip interceptd\ndelete table ip interceptd\n") {
		t.Errorf("nft script:\n%s", nft.last)
	}
}

func TestEveryRefusalReasonIsAPolicyReason(t *testing.T) {
	// The prefixes become the reason label of the decision metric, a
	// closed set.
	seen := 0
	for _, r := range Rules(testParams()).Rules {
		if i := slices.Index(r.Spec, "--nflog-prefix"); i >= 0 {
			seen++
			if !slices.Contains(policy.Reasons, r.Spec[i+1]) {
				t.Errorf("chain %s logs reason %q, not one of policy.Reasons", r.Chain, r.Spec[i+1])
			}
		}
	}
	if seen != 6 {
		t.Errorf("%d refusal chains, want 6 (denied, protected, private, not allowed, internet off, quic)", seen)
	}
}
