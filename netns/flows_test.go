package netns

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/interceptd/interceptd/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeFlowSets stands for the kernel's flow sets: what `nft -j list set`
// prints for each, from counters the test sets.
type fakeFlowSets struct {
	mu sync.Mutex
	// elems: set → element value as JSON → packets, bytes.
	elems map[string]map[string][2]uint64
}

func (k *fakeFlowSets) set(set, val string, packets, bytes uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.elems == nil {
		k.elems = map[string]map[string][2]uint64{}
	}
	if k.elems[set] == nil {
		k.elems[set] = map[string][2]uint64{}
	}
	k.elems[set][val] = [2]uint64{packets, bytes}
}

// list is `nft -j list table ip interceptd`: the flow sets, and the dns
// flood limit's, whose elements are no flows.
func (k *fakeFlowSets) list() ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	sets := []string{`{"set": {"family": "ip", "name": "dnsflood", "table": "interceptd", "elem": [{"elem": {"val": "10.213.0.2", "counter": {"packets": 99, "bytes": 9999}}}]}}`}
	for set, elems := range k.elems {
		var es []string
		for val, c := range elems {
			es = append(es, fmt.Sprintf(`{"elem": {"val": %s, "counter": {"packets": %d, "bytes": %d}}}`, val, c[0], c[1]))
		}
		sets = append(sets, fmt.Sprintf(`{"set": {"family": "ip", "name": %q, "table": "interceptd", "elem": [%s]}}`, set, strings.Join(es, ", ")))
	}
	return []byte(`{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"table": {"family": "ip", "name": "interceptd"}}, ` + strings.Join(sets, ", ") + `]}`), nil
}

func TestRoutedFlowsAndBytesAreCountedForTheSandboxThatHoldsTheAddress(t *testing.T) {
	e := newFakeEnv(t, "10.213.0.0/29", nil) // two slots: c holds one, and b gets a's
	e.m.reapWait = 0
	kernel := &fakeFlowSets{}
	reg := prometheus.NewRegistry()
	labels := metrics.NewSandboxLabels(10)
	f := NewFlowMetrics(reg, labels)
	e.m.cfg.Flows = f
	f.list, f.owner = kernel.list, e.m.sandboxAt
	e.setup(t)
	a, err := e.m.Create("a", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Create("c", nil); err != nil {
		t.Fatal(err)
	}
	addr := func(sb Sandbox) string { return `"` + sb.Addr.String() + `"` }
	flows := func(sandbox, proto string) float64 {
		return testutil.ToFloat64(f.flows.WithLabelValues(sandbox, proto))
	}
	bytes := func(sandbox, dir string) float64 { return testutil.ToFloat64(f.bytes.WithLabelValues(sandbox, dir)) }
	scrape := func() {
		if _, err := reg.Gather(); err != nil {
			t.Fatal(err)
		}
	}

	kernel.set(NFTSetFlows, `{"concat": [`+addr(a)+`, "tcp"]}`, 2, 120)
	kernel.set(NFTSetFlows, `{"concat": [`+addr(a)+`, "udp"]}`, 1, 60)
	kernel.set(NFTSetFlowsOther, addr(a), 1, 40)
	kernel.set(NFTSetSent, addr(a), 10, 1500)
	kernel.set(NFTSetReceived, addr(a), 8, 9000)
	// An address no sandbox holds: counted for no one.
	kernel.set(NFTSetSent, `"10.213.9.9"`, 1, 777)
	scrape()
	for _, tt := range []struct {
		name      string
		got, want float64
	}{
		{"tcp flows are the counted packets", flows("a", "tcp"), 2},
		{"udp flows", flows("a", "udp"), 1},
		{"other protocols' flows", flows("a", "other"), 1},
		{"bytes sent", bytes("a", "sent"), 1500},
		{"bytes received", bytes("a", "received"), 9000},
	} {
		if tt.got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, tt.got, tt.want)
		}
	}

	// A second scrape adds only the growth.
	kernel.set(NFTSetFlows, `{"concat": [`+addr(a)+`, "tcp"]}`, 5, 300)
	scrape()
	scrape()
	if got := flows("a", "tcp"); got != 5 {
		t.Errorf("after growth: %v tcp flows, want 5", got)
	}

	// What grew until the read after a's delete is a's; the address given
	// to b after starts b from there.
	kernel.set(NFTSetSent, addr(a), 11, 1600)
	if err := e.m.Delete("a"); err != nil {
		t.Fatal(err)
	}
	scrape() // or the reaper's read, whichever comes first
	if got := bytes("a", "sent"); got != 1600 {
		t.Errorf("a's bytes sent after its delete: %v, want 1600", got)
	}
	kernel.set(NFTSetSent, addr(a), 12, 1650) // after that read: no one's
	scrape()
	var b Sandbox
	for i := 0; i < 500; i++ { // its slot is free once its link is reaped
		if b, err = e.m.Create("b", nil); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil || b.Addr != a.Addr {
		t.Fatalf("b: %+v, %v", b, err)
	}
	kernel.set(NFTSetSent, addr(a), 13, 1700)
	scrape()
	if got, ga := bytes("b", "sent"), bytes("a", "sent"); got != 50 || ga != 1600 {
		t.Errorf("bytes sent: b %v (want 50), a %v (want 1600)", got, ga)
	}
	// The table replaced (a restart of rules): counters start again.
	kernel.set(NFTSetSent, addr(a), 1, 30)
	scrape()
	if got := bytes("b", "sent"); got != 80 {
		t.Errorf("after the counters restarted: b sent %v, want 80", got)
	}
}

func TestAFlowSetListingThatIsNotNftsJSONCountsNothing(t *testing.T) {
	for _, raw := range []string{"", "{", `{"nftables": [{"set": {"name": "sent", "elem": [{"elem": {"val": "not an address"}}]}}]}`} {
		got, _ := parseFlowSets([]byte(raw))
		if len(got) != 0 {
			t.Errorf("%q: %v", raw, got)
		}
	}
}
