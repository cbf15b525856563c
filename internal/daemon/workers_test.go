package daemon

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/interceptd/interceptd/internal/config"
	"github.com/interceptd/interceptd/router/worker"
)

func testWorker(t *testing.T, name string, hosts ...string) *worker.Worker {
	t.Helper()
	var fns []string
	for _, h := range hosts {
		fns = append(fns, `"`+h+`": () => new Response("x")`)
	}
	p := filepath.Join(t.TempDir(), name+".js")
	os.WriteFile(p, []byte("export default { outboundByHost: {"+strings.Join(fns, ",")+"} };"), 0o644)
	w, err := worker.New(worker.Config{Name: name, Script: p})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestWorkerNamesGetVirtualAddressesAfterTheHandlers(t *testing.T) {
	cfg := config.Default()
	handlers := VirtualAddrs(cfg) // my.kv, my.r2, state.do: .1 to .3
	ws := &workerSet{byName: map[string]*worker.Worker{}, addrs: map[string]netip.Addr{}, virt: map[netip.Addr]string{},
		end: netip.MustParsePrefix(cfg.DNS.VirtualCIDR), next: netip.MustParseAddr("198.18.213.3"), handlerAddrs: handlers}
	a := testWorker(t, "a", "my.fn", "*.fn.test", "api.test", "my.kv", "10.0.0.0/8")
	b := testWorker(t, "b", "my.fn")
	for _, w := range []*worker.Worker{a, b} {
		ws.byName[w.Name()] = w
		if err := ws.assign(w); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		worker, name string
		want         string
	}{
		{"a", "api.test", "198.18.213.5"},  // sorted: *.fn.test, api.test, my.fn
		{"a", "x.fn.test", "198.18.213.4"}, // a glob's one address
		{"a", "my.fn", "198.18.213.6"},
		{"b", "my.fn", "198.18.213.6"}, // a name two workers serve has one address
		{"a", "my.kv", "198.18.213.1"}, // a handler's host keeps the handler's address
		{"b", "api.test", ""},          // b does not serve it
		{"a", "fn.test", ""},           // a glob does not match its own suffix
	}
	for _, tt := range tests {
		got, ok := ws.dnsName(tt.worker, tt.name)
		if (tt.want == "" && ok) || (tt.want != "" && got.String() != tt.want) {
			t.Errorf("worker %s, %s: %v %v, want %q", tt.worker, tt.name, got, ok, tt.want)
		}
	}
	virt := map[netip.Addr]string{}
	ws.virtual(virt)
	if virt[netip.MustParseAddr("198.18.213.4")] != "*.fn.test" || len(virt) != 3 {
		t.Errorf("the router's map of worker addresses: %v", virt)
	}
	small := &workerSet{addrs: map[string]netip.Addr{}, virt: map[netip.Addr]string{},
		end: netip.MustParsePrefix("198.18.213.0/29"), next: netip.MustParseAddr("198.18.213.3")} // .4 to .6 left
	if err := small.assign(testWorker(t, "c", "a.test", "b.test", "c.test")); err != nil {
		t.Errorf("three names in the three addresses left: %v", err)
	}
	if err := small.assign(testWorker(t, "d", "d.test")); err == nil || !strings.Contains(err.Error(), "no address left") {
		t.Errorf("a fourth name: %v, want no address left", err)
	}
}
