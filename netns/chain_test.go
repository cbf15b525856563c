package netns

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// chainEnv is a fake manager with a runtime's namespace and a primary
// plugin's host link (veth "vethprim") in it, as ptp leaves them.
func chainEnv(t *testing.T) (e *fakeEnv, nsPath string) {
	t.Helper()
	e = newFakeEnv(t, "10.213.0.0/16", nil)
	e.setup(t)
	e.m.reapWait = time.Millisecond
	nsPath = filepath.Join(e.dir, "runtime-ns")
	if err := os.WriteFile(nsPath, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	e.k.links["vethprim"] = "veth"
	return e, nsPath
}

func primary(addr, gw string) *Primary {
	return &Primary{HostInterface: "vethprim", Addr: netip.MustParsePrefix(addr), Gateway: netip.MustParseAddr(gw)}
}

func TestChainingToAPrimaryPluginsWiringTakesItsAddressAndRenamesItsLink(t *testing.T) {
	e, nsPath := chainEnv(t)
	sb, err := e.m.AttachSpec("pod", nsPath, "eth0", Spec{Chain: primary("10.22.0.5/24", "10.22.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	if sb.Addr != netip.MustParseAddr("10.22.0.5") || sb.Gateway != netip.MustParseAddr("10.22.0.1") ||
		sb.Subnet != netip.MustParsePrefix("10.22.0.0/24") || sb.Chained != "vethprim" || !sb.External ||
		!strings.HasPrefix(sb.HostInterface, "icdt") {
		t.Fatalf("chained sandbox: %+v", sb)
	}
	if got := e.k.linkNames(); !slices.Equal(got, []string{sb.HostInterface}) {
		t.Errorf("links %q: the primary's link should be renamed %s, under the prefix the rules match", got, sb.HostInterface)
	}
	if c, ok := e.m.Caller(sb.Addr); !ok || c.Sandbox != "pod" {
		t.Errorf("the container's address does not name its sandbox: %+v", c)
	}
	if !e.k.loopDNS["pod"] {
		t.Error("no loopback dns capture in the chained namespace")
	}
	if err := e.m.Delete("pod"); err != nil {
		t.Fatal(err)
	}
	// The reaper deletes the link: fail closed, the container keeps no
	// path around the daemon under a name the rules no longer know.
	deadline := time.Now().Add(5 * time.Second)
	for len(e.k.linkNames()) > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := e.leftovers(t); len(got) != 0 {
		t.Errorf("left after delete: %q", got)
	}
	if _, err := os.Stat(nsPath); err != nil {
		t.Errorf("the runtime's namespace was removed: %v", err)
	}
}

func TestChainingIsRefusedBeforeTheKernelIsTouchedWhenTheWiringCannotCarryIdentity(t *testing.T) {
	e, nsPath := chainEnv(t)
	if _, err := e.m.AttachSpec("first", nsPath, "eth0", Spec{Chain: primary("10.22.0.5/24", "10.22.0.1")}); err != nil {
		t.Fatal(err)
	}
	e.k.links["vethprim"] = "veth" // a second primary link for the cases below
	e.k.links["cni0"] = "bridge"
	tests := []struct {
		name    string
		do      func() (Sandbox, error)
		wantMsg string
	}{
		{"a namespace the daemon makes has no primary's wiring", func() (Sandbox, error) {
			return e.m.CreateSpec("new", Spec{Chain: primary("10.22.0.6/24", "10.22.0.1")})
		}, "only an attached namespace"},
		{"an IPv6 address would be a path the IPv4 rules do not see", func() (Sandbox, error) {
			return e.m.AttachSpec("new", nsPath, "eth0", Spec{Chain: &Primary{HostInterface: "vethprim", Addr: netip.MustParsePrefix("fd00::5/64"), Gateway: netip.MustParseAddr("fd00::1")}})
		}, "IPv4 only"},
		{"a gateway that is the container itself", func() (Sandbox, error) {
			return e.m.AttachSpec("new", nsPath, "eth0", Spec{Chain: primary("10.22.0.6/24", "10.22.0.6")})
		}, "own address"},
		{"an address inside the daemon's pool", func() (Sandbox, error) {
			return e.m.AttachSpec("new", nsPath, "eth0", Spec{Chain: primary("10.213.0.6/30", "10.213.0.5")})
		}, "inside the daemon's pool"},
		{"another sandbox's address", func() (Sandbox, error) {
			return e.m.AttachSpec("new", nsPath, "eth0", Spec{Chain: primary("10.22.0.5/24", "10.22.0.1")})
		}, "sandbox first's"},
		{"an address among the handlers' virtual ones", func() (Sandbox, error) {
			return e.m.AttachSpec("new", nsPath, "eth0", Spec{Chain: primary("198.18.213.9/24", "198.18.213.1")})
		}, "which the daemon protects"},
		{"a link-local address", func() (Sandbox, error) {
			return e.m.AttachSpec("new", nsPath, "eth0", Spec{Chain: primary("169.254.1.9/16", "169.254.1.1")})
		}, "which the daemon protects"},
		{"a loopback address", func() (Sandbox, error) {
			return e.m.AttachSpec("new", nsPath, "eth0", Spec{Chain: primary("127.0.0.5/8", "127.0.0.1")})
		}, "127.0.0.5"},
		{"a multicast address", func() (Sandbox, error) {
			return e.m.AttachSpec("new", nsPath, "eth0", Spec{Chain: primary("224.0.0.5/4", "224.0.0.1")})
		}, "cannot be a container's"},
		{"a host interface name that no link can have", func() (Sandbox, error) {
			return e.m.AttachSpec("new", nsPath, "eth0", Spec{Chain: &Primary{HostInterface: "veth; rm -rf", Addr: netip.MustParsePrefix("10.22.0.6/24"), Gateway: netip.MustParseAddr("10.22.0.1")}})
		}, "host interface"},
		{"a bridge rather than a veth of the container's own", func() (Sandbox, error) {
			return e.m.AttachSpec("new", nsPath, "eth0", Spec{Chain: &Primary{HostInterface: "cni0", Addr: netip.MustParsePrefix("10.22.0.6/24"), Gateway: netip.MustParseAddr("10.22.0.1")}})
		}, "not a veth"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.k.linkNames()
			_, err := tt.do()
			if !errors.Is(err, ErrInvalidChain) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("got %v, want ErrInvalidChain containing %q", err, tt.wantMsg)
			}
			if got := e.k.linkNames(); !slices.Equal(got, before) {
				t.Errorf("links %q after a refused chain, were %q", got, before)
			}
			if _, ok := e.m.Get("new"); ok {
				t.Error("a refused chain left a sandbox")
			}
		})
	}
}
