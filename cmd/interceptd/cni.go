package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	cniversion "github.com/containernetworking/cni/pkg/version"
	"github.com/interceptd/interceptd/internal/admin"
	"github.com/interceptd/interceptd/internal/buildinfo"
	"github.com/interceptd/interceptd/netns"
	"github.com/interceptd/interceptd/policy"
	"golang.org/x/sys/unix"
)

// The CNI plugin is this same binary run under the name interceptd-cni (a
// link placed in the runtime's CNI bin dir). It asks the daemon to attach
// the runtime's namespace as a sandbox, so containers started by
// containerd, podman or Kubernetes get the same addressing, rules, DNS
// capture and identity as sandboxes the daemon creates; or, chained after
// a primary plugin, to take that plugin's wiring over (cni_chain.go).
const cniName = "interceptd-cni"

// cniConf is the network configuration the runtime passes on stdin.
type cniConf struct {
	types.NetConf
	// Socket is the daemon's admin socket; default $INTERCEPTD_SOCKET or
	// the daemon's default.
	Socket string `json:"socket,omitempty"`
	// Worker names the containers' worker (the daemon config's
	// workers[].name); "" for none; absent: the config's default_worker.
	Worker *string `json:"worker,omitempty"`
	// DataRetention is how long what a container stored (its state, its
	// per-sandbox keys and objects) outlives its DEL: a duration ("1h",
	// "30m"), "0s" to purge at DEL, or "keep" to never purge (then
	// `interceptd sandbox delete --purge ID` does). Default
	// defaultDataRetention. Runtimes make a new container id per container,
	// so data kept forever builds up; a grace period lets a container that
	// is re-added under its id (podman restart: DEL then ADD) keep it.
	// Not applied to a Kubernetes pod's sandbox (cni_chain.go): its name
	// outlives the pod's containers, and the pod may run on another host.
	DataRetention string `json:"dataRetention,omitempty"`
	// StateDir is where the plugin keeps the purges it has pending, one
	// file per container id; default defaultCNIStateDir.
	StateDir string `json:"stateDir,omitempty"`
	// Limits are the containers' own limits ({"max_rps": N, "max_conns":
	// N, "max_dns_qps": N}; a field left out: the daemon's default, 0: no
	// limit), and Quota their store quotas ({"kv.bytes": N, ...}), as
	// `sandbox create --max-rps … --quota …` gives them.
	Limits policy.Limits    `json:"limits,omitempty"`
	Quota  map[string]int64 `json:"quota,omitempty"`
}

// defaultDataRetention is DataRetention when the config does not say.
const defaultDataRetention = time.Hour

// defaultCNIStateDir is StateDir when the config does not say: beside
// the state other CNI plugins keep (host-local's /var/lib/cni/networks),
// on disk so that pending purges survive a reboot.
const defaultCNIStateDir = "/var/lib/cni/interceptd"

// retention reads DataRetention: keep says never purge.
func (c *cniConf) retention() (d time.Duration, keep bool, err error) {
	switch c.DataRetention {
	case "":
		return defaultDataRetention, false, nil
	case "keep":
		return 0, true, nil
	}
	d, err = time.ParseDuration(c.DataRetention)
	if err != nil || d < 0 {
		return 0, false, types.NewError(types.ErrInvalidNetworkConfig, "dataRetention",
			fmt.Sprintf("%q is not a duration (30m, 1h, 0s to purge at DEL) or keep", c.DataRetention))
	}
	return d, false, nil
}

func (c *cniConf) stateDir() string {
	if c.StateDir != "" {
		return c.StateDir
	}
	return defaultCNIStateDir
}

func isCNI() bool { return filepath.Base(os.Args[0]) == cniName }

func runCNI() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cniAdd, Del: cniDel, Check: cniCheck, Status: cniStatus},
		cniversion.PluginSupports("0.4.0", "1.0.0", "1.1.0"), "interceptd CNI plugin "+buildinfo.Version())
}

// errPluginNotAvailable is CNI 1.1's STATUS code for "the plugin cannot
// serve ADD now" (the library has no name for it).
const errPluginNotAvailable uint = 50

func cniClient(stdin []byte) (*cniConf, *admin.Client, error) {
	conf := &cniConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, nil, types.NewError(types.ErrDecodingFailure, "parsing network config", err.Error())
	}
	if _, _, err := conf.retention(); err != nil {
		return nil, nil, err
	}
	return conf, client(conf.Socket), nil
}

// cniError turns a daemon error into a CNI error with a code a runtime acts on.
func cniError(what string, err error) error {
	if errors.Is(err, admin.ErrUnreachable) {
		return types.NewError(types.ErrTryAgainLater, "interceptd daemon not reachable", err.Error())
	}
	return types.NewError(types.ErrInternal, what, err.Error())
}

func cniAdd(args *skel.CmdArgs) error {
	conf, c, err := cniClient(args.StdinData)
	if err != nil {
		return err
	}
	id, err := sandboxIdentity(args)
	if err != nil {
		return err
	}
	prev, err := prevResult(conf)
	if err != nil {
		return err
	}
	p, err := lockPurges(conf.stateDir())
	if err != nil {
		return err
	}
	defer p.unlock()
	// A container re-added under its id (podman restart) keeps its data.
	p.cancel(id.name)
	p.due(c)
	if id.pod {
		dropStalePod(c, id.name, args.Netns)
	}
	req := admin.CreateRequest{Name: id.name, NetnsPath: args.Netns, Interface: args.IfName, Worker: conf.Worker,
		Limits: conf.Limits, Quota: conf.Quota}
	if prev != nil {
		return cniChainAdd(args, conf, c, req, prev)
	}
	sb, err := c.AttachWith(req)
	if err != nil {
		return cniError("attaching the container's namespace", err)
	}
	mac, _ := net.ParseMAC(sb.MAC)
	_, all, _ := net.ParseCIDR("0.0.0.0/0")
	idx := 0
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: sb.Interface, Mac: mac.String(), Sandbox: args.Netns}},
		IPs: []*current.IPConfig{{
			Interface: &idx,
			Address:   net.IPNet{IP: net.IP(sb.Addr.AsSlice()), Mask: net.CIDRMask(sb.Subnet.Bits(), 32)},
			Gateway:   net.IP(sb.Gateway.AsSlice()),
		}},
		Routes: []*types.Route{{Dst: *all, GW: net.IP(sb.Gateway.AsSlice())}},
		DNS:    types.DNS{Nameservers: []string{sb.Gateway.String()}},
	}
	return types.PrintResult(res, conf.CNIVersion)
}

func cniDel(args *skel.CmdArgs) error {
	conf, c, err := cniClient(args.StdinData)
	if err != nil {
		return err
	}
	id, err := sandboxIdentity(args)
	if err != nil {
		return err
	}
	p, err := lockPurges(conf.stateDir())
	if err != nil {
		return err
	}
	defer p.unlock()
	if id.pod && !podSandboxIsThis(c, id.name, args.Netns) {
		// A late DEL of an earlier sandbox of the pod (the runtime's
		// garbage collection): the sandbox of that name is the pod's
		// current one, not this DEL's to remove.
		p.due(c)
		return nil
	}
	err = c.DeleteSandbox(id.name, false)
	if err != nil && !isNotFound(err) { // DEL is idempotent: already gone is done
		return cniError("detaching the container", err)
	}
	retain, keep, _ := conf.retention()
	switch {
	case keep || id.pod:
		// A pod's data outlives it here: the pod may be running on
		// another host already, whose daemon reads it from the shared
		// store, and this host cannot know (docs/runtimes.md).
	case retain == 0:
		if err := purge(c, id.name); err != nil {
			return cniError("purging the container's data", err)
		}
	default:
		// Purged by the first ADD, DEL or STATUS after the deadline.
		if err := p.schedule(id.name, p.now().Add(retain)); err != nil {
			return types.NewError(types.ErrIOFailure, "scheduling the purge of the container's data", err.Error())
		}
	}
	p.due(c)
	return nil
}

func isNotFound(err error) bool {
	var ae *admin.APIError
	return errors.As(err, &ae) && ae.Status == 404
}

// purge drops what the container id stored. Its sandbox is gone (DEL);
// nothing stored is success.
func purge(c *admin.Client, id string) error {
	if err := c.DeleteSandbox(id, true); err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

func cniCheck(args *skel.CmdArgs) error {
	conf, c, err := cniClient(args.StdinData)
	if err != nil {
		return err
	}
	id, err := sandboxIdentity(args)
	if err != nil {
		return err
	}
	sb, err := c.Get(id.name)
	if err != nil {
		return cniError("finding the container's sandbox", err)
	}
	if sb.NetnsPath != args.Netns || sb.Interface != args.IfName {
		return types.NewError(types.ErrInternal, "the sandbox does not match",
			fmt.Sprintf("sandbox %s is %s in %s, the runtime says %s in %s", sb.Name, sb.Interface, sb.NetnsPath, args.IfName, args.Netns))
	}
	if sb.Chained != "" {
		// The result the runtime kept must still say what the sandbox is.
		prev, err := prevResult(conf)
		if err != nil {
			return err
		}
		if prev == nil {
			return types.NewError(types.ErrInvalidNetworkConfig, "CHECK of a chained sandbox needs prevResult", "")
		}
		if err := matchesResult(sb, prev, args); err != nil {
			return err
		}
	}
	if err := c.Check(id.name); err != nil {
		return cniError("checking the sandbox's wiring", err)
	}
	return nil
}

func cniStatus(args *skel.CmdArgs) error {
	conf, c, err := cniClient(args.StdinData)
	if err != nil {
		return err
	}
	if _, err := c.Status(); err != nil {
		return types.NewError(errPluginNotAvailable, "interceptd daemon not reachable", err.Error())
	}
	// Runtimes call STATUS periodically (CNI 1.1): a chance to purge what
	// is due when no container comes or goes.
	if p, err := lockPurges(conf.stateDir()); err == nil {
		p.due(c)
		p.unlock()
	}
	return nil
}

// purges are the purges of detached containers' data the plugin has
// pending: one file per container id in <state dir>/purges, holding the
// time after which it is due. The plugin runs once per runtime call, so
// the purges are done by whichever call comes first after that time; all
// of them hold the state dir's lock, so that a purge never races the ADD
// of the same id.
type purges struct {
	dir  string
	lock *os.File
	now  func() time.Time
}

func lockPurges(stateDir string) (*purges, error) {
	dir := filepath.Join(stateDir, "purges")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, types.NewError(types.ErrIOFailure, "making the plugin's state dir", err.Error())
	}
	f, err := os.OpenFile(filepath.Join(stateDir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, types.NewError(types.ErrIOFailure, "opening the plugin's lock", err.Error())
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, types.NewError(types.ErrIOFailure, "locking the plugin's state dir", err.Error())
	}
	return &purges{dir: dir, lock: f, now: cniNow}, nil
}

// cniNow is the plugin's clock; tests move it.
var cniNow = time.Now

func (p *purges) unlock() { p.lock.Close() }

// file is the pending purge of id; "" for an id that cannot name a file
// (the daemon refuses such a sandbox name anyway).
func (p *purges) file(id string) string {
	if !netns.ValidName(id) {
		return ""
	}
	return filepath.Join(p.dir, id)
}

func (p *purges) schedule(id string, at time.Time) error {
	f := p.file(id)
	if f == "" {
		return nil
	}
	return os.WriteFile(f, []byte(at.UTC().Format(time.RFC3339)+"\n"), 0o600)
}

func (p *purges) cancel(id string) {
	if f := p.file(id); f != "" {
		os.Remove(f)
	}
}

// due purges what is due. A container id that has a sandbox again (its
// container was re-added without this plugin) keeps its data; a purge
// the daemon cannot do now stays pending.
func (p *purges) due(c *admin.Client) {
	ents, _ := os.ReadDir(p.dir)
	for _, e := range ents {
		id := e.Name()
		raw, err := os.ReadFile(filepath.Join(p.dir, id))
		if err != nil {
			continue
		}
		at, err := time.Parse(time.RFC3339, strings.TrimSpace(string(raw)))
		if err == nil && p.now().Before(at) {
			continue
		}
		if _, err := c.Get(id); err == nil {
			p.cancel(id)
			continue
		} else if !isNotFound(err) {
			continue
		}
		if purge(c, id) == nil {
			p.cancel(id)
		}
	}
}
