package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
)

// primaryPlugins is where Debian's containernetworking-plugins puts ptp
// and host-local.
const primaryPlugins = "/usr/lib/cni"

// chainEnv is a runtime's view of a conflist with Debian's ptp (and
// host-local) as the primary plugin and interceptd-cni chained after it,
// executed through libcni as containerd and CRI-O execute it.
type chainEnv struct {
	*cniEnv
	cni      *libcni.CNIConfig
	list     *libcni.NetworkConfigList
	ipamDir  string
	subnet   string
	gateway  string
	netName  string
	cacheDir string
}

func newChain(t *testing.T) *chainEnv { return newChainWith(t, Options{}) }

func newChainWith(t *testing.T, o Options) *chainEnv {
	for _, p := range []string{"ptp", "host-local"} {
		if _, err := os.Stat(filepath.Join(primaryPlugins, p)); err != nil {
			t.Fatalf("%s/%s is missing: apt-get install containernetworking-plugins (.ci/test does)", primaryPlugins, p)
		}
	}
	c := &chainEnv{cniEnv: newCNIWith(t, o), subnet: "10.22.0.0/24", gateway: "10.22.0.1"}
	c.ipamDir = filepath.Join(c.dir, "ipam")
	c.cacheDir = filepath.Join(c.dir, "cache")
	c.netName = "chain-" + c.ID
	// The conflist docs/runtimes.md shows, with the test's own paths: no
	// masquerading (the upstream namespace routes back to the test's
	// addresses), leases, socket and plugin state in the test's directory.
	raw, err := os.ReadFile("../deploy/cni/10-ptp-interceptd.conflist")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	doc["name"] = c.netName
	plugins := doc["plugins"].([]any)
	ptp, icd := plugins[0].(map[string]any), plugins[1].(map[string]any)
	ptp["ipMasq"] = false
	ipam := ptp["ipam"].(map[string]any)
	ipam["subnet"], ipam["gateway"], ipam["dataDir"] = c.subnet, c.gateway, c.ipamDir
	icd["socket"], icd["stateDir"] = c.Socket, filepath.Join(c.dir, "state")
	conf, _ := json.Marshal(doc)
	list, err := libcni.ConfListFromBytes(conf)
	if err != nil {
		t.Fatal(err)
	}
	c.list = list
	c.cni = libcni.NewCNIConfigWithCacheDir([]string{c.dir, primaryPlugins}, c.cacheDir, nil)
	return c
}

// rt is the runtime's call for a container in nsPath, as a pod when pod
// is "namespace/name" (kubelet's CNI_ARGS).
func (c *chainEnv) rt(id, nsPath, pod string) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: nsPath, IfName: "eth0"}
	if ns, name, ok := strings.Cut(pod, "/"); ok {
		rt.Args = [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", ns}, {"K8S_POD_NAME", name}}
	}
	return rt
}

// inHost runs fn on a thread in the daemon's host namespace: the plugins
// it executes make their host-side links there, as on a node where the
// daemon runs with hostNetwork.
func (c *chainEnv) inHost(fn func() error) error { return inNetns("/run/netns/"+c.HostNS, fn) }

func (c *chainEnv) add(t *testing.T, rt *libcni.RuntimeConf) *current.Result {
	t.Helper()
	var res *current.Result
	err := c.inHost(func() error {
		r, err := c.cni.AddNetworkList(context.Background(), c.list, rt)
		if err != nil {
			return err
		}
		res, err = current.NewResultFromResult(r)
		return err
	})
	if err != nil {
		t.Fatalf("ADD of %s: %v", rt.ContainerID, err)
	}
	// Whatever the test does next, the runtime's DEL comes last.
	t.Cleanup(func() { c.del(rt) })
	return res
}

func (c *chainEnv) del(rt *libcni.RuntimeConf) error {
	return c.inHost(func() error { return c.cni.DelNetworkList(context.Background(), c.list, rt) })
}

// container is a runtime's namespace with the resolv.conf the runtime
// writes from the result.
func (c *chainEnv) container(t *testing.T, name string, res *current.Result) Sandbox {
	t.Helper()
	os.MkdirAll("/etc/netns/"+name, 0o755)
	t.Cleanup(func() { os.RemoveAll("/etc/netns/" + name) })
	body := ""
	for _, ns := range res.DNS.Nameservers {
		body += "nameserver " + ns + "\n"
	}
	os.WriteFile("/etc/netns/"+name+"/resolv.conf", []byte(body), 0o644)
	return Sandbox{Netns: name, NetnsPath: "/run/netns/" + name}
}

func TestInterceptdCNIChainedAfterPTPInterceptsTheContainerAndDELLeavesNothing(t *testing.T) {
	c := newChain(t)
	ns1, ns2 := "ie2echain1-"+c.ID, "ie2echain2-"+c.ID
	p1, p2 := c.runtimeNetns(ns1), c.runtimeNetns(ns2)
	rt1 := c.rt("ctr1-"+c.ID, p1, "team-a/web-0")
	rt2 := c.rt("ctr2-"+c.ID, p2, "")

	res := c.add(t, rt1)
	b, _ := json.Marshal(res)
	var host, ctr *current.Interface
	for _, ifc := range res.Interfaces {
		if ifc.Sandbox == "" {
			host = ifc
		} else {
			ctr = ifc
		}
	}
	if host == nil || ctr == nil || !strings.HasPrefix(host.Name, "icd") || ctr.Name != "eth0" || ctr.Sandbox != p1 ||
		len(res.IPs) != 1 || !strings.HasPrefix(res.IPs[0].Address.String(), "10.22.0.") ||
		len(res.DNS.Nameservers) != 1 || res.DNS.Nameservers[0] != c.gateway {
		t.Fatalf("the chain's result: %s\nwant ptp's wiring, its host link under the daemon's prefix, the gateway as nameserver", b)
	}
	addr1 := res.IPs[0].Address.IP.String()
	sb1 := c.container(t, ns1, res)
	sb1.Name = "team-a.web-0"

	t.Run("the daemon's probes say it lives and is ready", func(t *testing.T) {
		for _, path := range []string{"/healthz", "/readyz"} {
			out, err := exec.Command("nsenter", "--net=/run/netns/"+c.HostNS, "curl", "-sS", "-f", "-m", "5", "http://"+c.Metrics+path).CombinedOutput()
			if err != nil || string(out) != "ok\n" {
				t.Errorf("%s: %q %v", path, out, err)
			}
		}
	})
	t.Run("the chain is counted apart from other attaches", func(t *testing.T) {
		if v, _ := sample(c.Scrape(), `interceptd_sandbox_operations_total{op="chain",result="ok"}`); v != 1 {
			t.Errorf("chain operations: %v, want 1", v)
		}
	})
	t.Run("the pod's sandbox is named after the pod and holds ptp's address", func(t *testing.T) {
		out, _, _ := c.CLI("sandbox", "show", "team-a.web-0")
		if !strings.Contains(out, addr1) || !strings.Contains(out, p1) {
			t.Errorf("sandbox show team-a.web-0:\n%s", out)
		}
	})
	t.Run("DNS to any resolver is answered by the daemon", func(t *testing.T) {
		if got := c.MustIn(sb1, "dig", "+short", "+time=2", "+tries=1", "@"+nowhereIP, "my.kv"); got != virtualKV+"\n" {
			t.Errorf("dig @%s my.kv: %q", nowhereIP, got)
		}
		if got := c.MustIn(sb1, "dig", "+short", "+time=2", "+tries=1", "my.kv"); got != virtualKV+"\n" {
			t.Errorf("dig my.kv through the result's nameserver: %q", got)
		}
	})
	t.Run("port 80 reaches the handlers with the pod's identity", func(t *testing.T) {
		c.MustIn(sb1, "curl", "-sS", "-f", "-m", "5", "-X", "PUT", "--data", "chained", "http://my.kv/chain")
		if got := c.MustIn(sb1, "curl", "-sS", "-m", "5", "http://my.kv/chain"); got != "chained" {
			t.Errorf("my.kv/chain: %q", got)
		}
		c.MustIn(sb1, "curl", "-sS", "-f", "-m", "5", "-X", "PUT", "--data", "pod state", "http://state.do/k")
		if got, errOut, _ := c.CLI("state", "get", "team-a.web-0", "k"); got != "pod state" {
			t.Errorf("state of team-a.web-0: %q %s", got, errOut)
		}
	})
	t.Run("the host is reached only through interception", func(t *testing.T) {
		// The gateway is a host address: the daemon's DNS port there
		// answers only queries captured on port 53.
		if out, _ := c.In(sb1, "dig", "+short", "+time=2", "+tries=1", "-p", "15353", "@"+c.gateway, "my.kv"); strings.Contains(out, virtualKV) {
			t.Errorf("the daemon's DNS port, asked directly: %q", out)
		}
	})
	t.Run("the sandbox's policy is enforced", func(t *testing.T) {
		if got := c.MustIn(sb1, "curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "http://"+upstreamIP+"/"); got != "200" {
			t.Fatalf("an allowed host: %s", got)
		}
		if _, errOut, code := c.CLI("sandbox", "policy", "team-a.web-0", "--internet", "off"); code != 0 {
			t.Fatalf("sandbox policy: %s", errOut)
		}
		if got, _ := c.In(sb1, "curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "http://"+upstreamIP+"/"); got != "403" {
			t.Errorf("port 80 with internet off: %q, want the router's 403", got)
		}
		if _, code := c.In(sb1, "curl", "-sS", "-m", "3", "http://"+upstreamIP+":53/"); code == 0 {
			t.Error("routed TCP with internet off got through")
		}
	})

	res2 := c.add(t, rt2)
	addr2 := res2.IPs[0].Address.IP.String()
	sb2 := c.container(t, ns2, res2)
	sb2.Name = rt2.ContainerID
	t.Run("a container without pod args is named after its id", func(t *testing.T) {
		if got := c.MustIn(sb2, "curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "http://"+upstreamIP+"/"); got != "200" {
			t.Errorf("the second container keeps its own (default) policy: %s", got)
		}
		if list, _, _ := c.CLI("sandbox", "list"); !strings.Contains(list, rt2.ContainerID) {
			t.Errorf("sandbox list:\n%s", list)
		}
	})
	t.Run("a container cannot take its neighbour's address", func(t *testing.T) {
		// The first container (internet off) claims the second's address
		// (internet on): strict reverse-path filtering drops it, as the
		// host routes that address out of the other link.
		// Its own address is answered (the router's 403: internet off),
		// so a silence below is the kernel's drop, not a broken client.
		if got := c.MustIn(sb1, "curl", "-sS", "-m", "3", "--interface", addr1, "-o", "/dev/null", "-w", "%{http_code}", "http://"+upstreamIP+"/"); got != "403" {
			t.Fatalf("from its own address: %q", got)
		}
		c.MustIn(sb1, "ip", "addr", "add", addr2+"/32", "dev", "eth0")
		if out, code := c.In(sb1, "curl", "-sS", "-m", "3", "--interface", addr2, "-o", "/dev/null", "-w", "%{http_code}", "http://"+upstreamIP+"/"); code == 0 {
			t.Errorf("from the neighbour's address: %s", out)
		}
		if out, _ := c.In(sb1, "dig", "+short", "+time=2", "+tries=1", "-b", addr2, "@"+nowhereIP, "my.kv"); strings.Contains(out, virtualKV) {
			t.Errorf("DNS from the neighbour's address was answered: %q", out)
		}
		c.MustIn(sb1, "ip", "addr", "del", addr2+"/32", "dev", "eth0")
	})
	t.Run("a restarted daemon re-adopts the chained sandboxes", func(t *testing.T) {
		c.Stop()
		c.Start()
		if got := c.MustIn(sb1, "curl", "-sS", "-m", "5", "http://my.kv/chain"); got != "chained" {
			t.Errorf("my.kv after the restart: %q", got)
		}
		if got, _ := c.In(sb1, "curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", "http://"+upstreamIP+"/"); got != "403" {
			t.Errorf("the pod's policy after the restart: %q, want 403 (internet off)", got)
		}
	})
	t.Run("CHECK passes on intact wiring and fails when the address is no longer bound to the link", func(t *testing.T) {
		check := func() error {
			return c.inHost(func() error { return c.cni.CheckNetworkList(context.Background(), c.list, rt1) })
		}
		if err := check(); err != nil {
			t.Fatalf("CHECK: %v", err)
		}
		// ptp's own CHECK looks inside the container only: this one is ours.
		run(t, "ip", "-n", c.HostNS, "route", "del", addr1+"/32")
		if err := check(); err == nil || !strings.Contains(err.Error(), "route to "+addr1) && !strings.Contains(err.Error(), "route "+addr1) {
			t.Errorf("CHECK without the host's route to the container: %v", err)
		}
		run(t, "ip", "-n", c.HostNS, "route", "add", addr1+"/32", "dev", host.Name)
	})

	if got := c.setEntriesOf(t, addr1, addr2); !slices.Contains(got, "interceptd-inet "+addr2) {
		t.Errorf("the second container's policy entries before DEL: %q", got)
	}
	// DEL in reverse order (libcni does that) leaves nothing of either.
	for _, rt := range []*libcni.RuntimeConf{rt1, rt2} {
		for i := 0; i < 2; i++ {
			if err := c.del(rt); err != nil {
				t.Fatalf("DEL #%d of %s: %v", i+1, rt.ContainerID, err)
			}
		}
	}
	t.Run("DEL leaves no sandbox, link, route, rule or lease", func(t *testing.T) {
		if list, _, _ := c.CLI("sandbox", "list"); strings.Contains(list, "team-a.web-0") || strings.Contains(list, rt2.ContainerID) {
			t.Errorf("sandboxes left:\n%s", list)
		}
		waitChain(t, func() bool {
			out, _ := exec.Command("ip", "-n", c.HostNS, "-o", "link", "show", "type", "veth").Output()
			return !strings.Contains(string(out), "icd") && !strings.Contains(string(out), "veth")
		})
		if got := c.setEntriesOf(t, addr1, addr2); len(got) != 0 {
			t.Errorf("policy entries left: %q", got)
		}
		if out, _ := exec.Command("ip", "-n", c.HostNS, "route").Output(); strings.Contains(string(out), "10.22.0.") {
			t.Errorf("host routes left:\n%s", out)
		}
		if out, _ := exec.Command("ip", "-n", c.HostNS, "addr").Output(); strings.Contains(string(out), c.gateway) {
			t.Errorf("host addresses left:\n%s", out)
		}
		for _, ns := range []string{ns1, ns2} {
			if out, _ := exec.Command("ip", "-n", ns, "-o", "link").Output(); strings.Count(string(out), "\n") != 1 {
				t.Errorf("links left in %s:\n%s", ns, out)
			}
			if out, _ := exec.Command("ip", "netns", "exec", ns, "nft", "list", "tables").Output(); len(out) != 0 {
				t.Errorf("nft tables left in %s:\n%s", ns, out)
			}
		}
		ents, _ := os.ReadDir(filepath.Join(c.ipamDir, c.netName))
		for _, e := range ents {
			if e.Name() != "lock" && !strings.HasPrefix(e.Name(), "last_reserved_ip") {
				t.Errorf("an IPAM lease is left: %s", e.Name())
			}
		}
	})

	t.Run("the pod re-added in a new sandbox finds its state", func(t *testing.T) {
		ns3 := "ie2echain3-" + c.ID
		p3 := c.runtimeNetns(ns3)
		rt3 := c.rt("ctr3-"+c.ID, p3, "team-a/web-0")
		res3 := c.add(t, rt3)
		sb3 := c.container(t, ns3, res3)
		if got := c.MustIn(sb3, "curl", "-sS", "-m", "5", "http://state.do/k"); got != "pod state" {
			t.Errorf("the pod's state after its sandbox was made again: %q", got)
		}
		if err := c.del(rt3); err != nil {
			t.Fatal(err)
		}
	})
}

// waitChain polls cond for up to 5 s (the daemon removes a deleted
// sandbox's link in the background).
func waitChain(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Error("condition not met within 5s")
}

func TestInterceptdCNIRefusesToChainBehindABridge(t *testing.T) {
	c := newChain(t)
	// The same conflist with Debian's bridge as the primary: its containers
	// share the bridge, one host interface, so no address is bound to one.
	var doc map[string]any
	json.Unmarshal(c.list.Bytes, &doc)
	plugins := doc["plugins"].([]any)
	br := plugins[0].(map[string]any)
	br["type"], br["bridge"], br["isGateway"] = "bridge", "icdtbr"+c.ID[:4], true
	delete(br, "ipMasq")
	raw, _ := json.Marshal(doc)
	list, err := libcni.ConfListFromBytes(raw)
	if err != nil {
		t.Fatal(err)
	}
	c.list = list
	nsName := "ie2echainbr-" + c.ID
	rt := c.rt("ctrbr-"+c.ID, c.runtimeNetns(nsName), "team-a/web-1")
	err = c.inHost(func() error { _, err := c.cni.AddNetworkList(context.Background(), c.list, rt); return err })
	if err == nil || !strings.Contains(err.Error(), "more than one host-side link") {
		t.Errorf("ADD behind a bridge: %v", err)
	}
	if list, _, _ := c.CLI("sandbox", "list"); strings.Contains(list, "team-a.web-1") {
		t.Errorf("a refused chain left a sandbox:\n%s", list)
	}
	// The runtime's DEL after a failed ADD: the bridge's leftovers go.
	if err := c.del(rt); err != nil {
		t.Errorf("DEL after the refused ADD: %v", err)
	}
	run(t, "ip", "-n", c.HostNS, "link", "del", br["bridge"].(string))
}

// setEntriesOf lists the ipset entries in the host namespace that name
// one of addrs (the per-sandbox policy entries).
func (c *chainEnv) setEntriesOf(t *testing.T, addrs ...string) []string {
	t.Helper()
	var out []string
	c.inHost(func() error {
		sets, err := netlink.IpsetListAll()
		if err != nil {
			t.Errorf("listing ipsets: %v", err)
		}
		for _, st := range sets {
			for _, e := range st.Entries {
				if slices.Contains(addrs, e.IP.String()) {
					out = append(out, st.SetName+" "+e.IP.String())
				}
			}
		}
		return nil
	})
	return out
}
