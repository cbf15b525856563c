package netns

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/interceptd/interceptd/policy"
	"github.com/vishvananda/netlink"
)

var (
	// ErrExists is returned when creating a sandbox whose name is taken.
	ErrExists = errors.New("sandbox already exists")
	// ErrNotFound is returned for a sandbox name that does not exist.
	ErrNotFound = errors.New("no such sandbox")
	// ErrInvalidName is returned for a name that cannot name a sandbox.
	ErrInvalidName = errors.New("invalid sandbox name")
	// ErrInvalidPolicy is returned for a policy with an invalid pattern.
	ErrInvalidPolicy = errors.New("invalid policy")
	// ErrUnknownWorker is returned (naming it) for a worker name the
	// config does not have (Config.Workers).
	ErrUnknownWorker = errors.New("unknown worker")
	// ErrInvalidLimits is returned for a negative limit, naming it.
	ErrInvalidLimits = errors.New("invalid limits")
	// ErrInvalidChain is returned, saying why, for a primary plugin's
	// wiring a sandbox cannot be chained to (Spec.Chain).
	ErrInvalidChain = errors.New("cannot chain to the primary plugin's wiring")
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// ValidName reports whether name can name a sandbox: 1-64 of [A-Za-z0-9_.-],
// starting with a letter or digit (so it is also a valid container id).
func ValidName(name string) bool { return nameRE.MatchString(name) }

// Config configures a Manager.
type Config struct {
	// Pool is the prefix sandbox links are carved from.
	Pool netip.Prefix
	// NetnsPrefix is prepended to sandbox names to name their namespaces.
	NetnsPrefix string
	// InterfacePrefix names the host side of each veth pair.
	InterfacePrefix string
	// NetnsDir is where namespaces are bind-mounted. Default /run/netns.
	NetnsDir string
	// Owner names this daemon in the namespace markers (its data dir), and
	// OwnerDir is where markers and prefix locks live (DefaultOwnerDir):
	// see owner.go. Without OwnerDir, every namespace with the prefix is
	// taken for the manager's own (tests on a fake kernel only).
	Owner    string
	OwnerDir string
	// ResolvConfDir, when set, gets <netns>/resolv.conf naming the gateway,
	// which `ip netns exec` bind-mounts over /etc/resolv.conf. Usually /etc/netns.
	ResolvConfDir string
	// Rules are the interception rule parameters.
	Rules RuleParams
	// Records persists sandboxes so a restarted daemon re-adopts them.
	Records Records
	// IPTables is the firewall; nil means go-iptables for IPv4.
	IPTables IPTables
	// IPSets holds per-sandbox policy for non-HTTP traffic; nil means
	// netlink in the calling namespace.
	IPSets IPSets
	// NFT installs the tproxy table; nil means the nft command.
	NFT NFT
	// Kernel makes and removes sandboxes' links and namespaces; nil means
	// netlink in the calling namespace.
	Kernel Kernel
	// DefaultPolicy is the policy of a sandbox created without one.
	DefaultPolicy policy.Policy
	// DefaultWorker is the worker of a sandbox created without one named
	// (config default_worker); "" for none.
	DefaultWorker string
	// Workers reports whether the config has a worker of that name; a
	// sandbox may only be given one it has. nil: the config has none.
	Workers func(name string) bool
	// OnDelete, when set, is called with the name of each deleted sandbox.
	OnDelete func(name string)
	// OnPolicy, when set, is called once a sandbox's policy is in force
	// (Caller returns it): after create, attach and re-adoption, and after
	// each policy change outside the manager's locks, so that what was
	// decided once under the old policy and lasts (an upgraded connection,
	// a deny of a name's addresses) is decided again.
	OnPolicy func(sb Sandbox)
	// Metrics; nil records nothing.
	Metrics *Metrics
	// Flows counts allowed routed flows per sandbox (flows.go); nil
	// counts nothing. NFTList lists a set of NFTTable for it; nil means
	// the nft command in the calling namespace.
	Flows   *FlowMetrics
	NFTList func() ([]byte, error)
	Logger  *slog.Logger
}

// Records persists sandbox records across daemon restarts.
type Records interface {
	SaveSandbox(name string, rec []byte) error
	DeleteSandbox(name string) error
	// ForgetSandbox removes a record without waiting for the disk: for
	// sandboxes whose namespace is already gone (see Manager.Delete).
	ForgetSandbox(name string) error
	Sandboxes() (map[string][]byte, error)
}

// Sandbox describes one sandbox.
type Sandbox struct {
	Name          string       `json:"name"`
	Netns         string       `json:"netns"`
	NetnsPath     string       `json:"netns_path"`
	HostInterface string       `json:"host_interface"`
	Addr          netip.Addr   `json:"addr"`
	Gateway       netip.Addr   `json:"gateway"`
	Subnet        netip.Prefix `json:"subnet"`
	Created       time.Time    `json:"created"`
	Slot          int          `json:"slot"`
	// Interface is the sandbox end of the veth; MAC its address.
	Interface string `json:"interface"`
	MAC       string `json:"mac"`
	// External: the namespace was made by someone else (attached).
	External bool `json:"external,omitempty"`
	// Chained names the host end of the veth a primary CNI plugin made
	// (ptp), as that plugin named it, when the sandbox was attached to
	// that wiring (Spec.Chain) rather than given a veth of its own; ""
	// otherwise. The link is renamed HostInterface, under the daemon's
	// prefix, so that every rule matches it as it matches a veth the
	// daemon made. Addr and Gateway are then the primary's, not the pool's.
	Chained string `json:"chained,omitempty"`
	// Policy is the sandbox's egress policy; Compiled is it, validated.
	Policy   policy.Policy    `json:"policy"`
	Compiled *policy.Compiled `json:"-"`
	// PolicyDefault: the sandbox was made without a policy of its own and
	// follows the daemon's default, also when a reload changes it
	// (SetDefaultPolicy); a `sandbox policy` makes it the sandbox's own.
	PolicyDefault bool `json:"policy_default,omitempty"`
	// Limits are the sandbox's own request, connection and DNS limits; a
	// nil field takes the daemon's configured default.
	Limits policy.Limits `json:"limits"`
	// Worker names the sandbox's worker (config workers[].name); "" for
	// none. Kept across restarts with the rest of the record, even if the
	// config no longer has it: the router then treats the sandbox as
	// having none, until the config has it again.
	Worker string `json:"worker,omitempty"`
	// Lost: the namespace disappeared under the daemon (watchLost); the
	// sandbox is listed so until it is deleted.
	Lost bool `json:"lost,omitempty"`
}

// Spec is what a sandbox is made with besides its name and namespace;
// its nil fields take the manager's defaults.
type Spec struct {
	// Policy; nil: Config.DefaultPolicy.
	Policy *policy.Policy
	// Worker; nil: Config.DefaultWorker; "" for none.
	Worker *string
	// Limits of the sandbox's own; a nil field: the daemon's default.
	Limits policy.Limits
	// Chain, for an attached namespace only, attaches to the wiring a
	// primary CNI plugin already made instead of building a veth.
	Chain *Primary
}

// Primary is the wiring a primary CNI plugin (ptp) made for a container, as
// its result names it: the sandbox takes it over instead of a veth and a
// /30 of the pool. The kernel checks every part of it before anything is
// changed (Kernel.Chain): the link must be a veth whose peer is the
// container's interface, the interface must hold Addr, and the host must
// route Addr out of that link and nowhere else, which is what lets strict
// reverse-path filtering bind the address to the container as it does for
// the daemon's own veths.
type Primary struct {
	// HostInterface is the primary's host end of the container's veth.
	HostInterface string
	// Addr is the container's IPv4 address, with the prefix length its
	// IPAM gave; Gateway its next hop (the primary's address on
	// HostInterface), to which the sandbox's loopback DNS is sent.
	Addr    netip.Prefix
	Gateway netip.Addr
}

// validate checks what needs no kernel: one IPv4 address and gateway
// outside the pool (the pool's are the daemon's own sandboxes') and the
// protected destinations (handlers' virtual addresses, link-local,
// loopback: what no container may be).
func (c *Primary) validate(pool netip.Prefix, protected []netip.Prefix) error {
	for _, p := range protected {
		if p.Contains(c.Addr.Addr()) && !pool.Contains(c.Addr.Addr()) {
			return fmt.Errorf("%w: address %s is inside %s, which the daemon protects", ErrInvalidChain, c.Addr.Addr(), p)
		}
	}
	switch {
	case !ifNameRE.MatchString(c.HostInterface):
		return fmt.Errorf("%w: host interface %q: 1-15 of [A-Za-z0-9_.-]", ErrInvalidChain, c.HostInterface)
	case !c.Addr.IsValid() || !c.Addr.Addr().Is4():
		return fmt.Errorf("%w: address %s: interception is IPv4 only", ErrInvalidChain, c.Addr)
	case !c.Gateway.Is4():
		return fmt.Errorf("%w: gateway %s: interception is IPv4 only, and the sandbox's loopback dns goes to it", ErrInvalidChain, c.Gateway)
	case c.Gateway == c.Addr.Addr():
		return fmt.Errorf("%w: the gateway is the container's own address %s", ErrInvalidChain, c.Gateway)
	case pool.Contains(c.Addr.Addr()) || pool.Contains(c.Gateway):
		return fmt.Errorf("%w: %s via %s is inside the daemon's pool %s: give the primary plugin's IPAM a range of its own", ErrInvalidChain, c.Addr, c.Gateway, pool)
	case c.Addr.Addr().IsLoopback() || c.Addr.Addr().IsUnspecified() || c.Addr.Addr().IsMulticast():
		return fmt.Errorf("%w: address %s cannot be a container's", ErrInvalidChain, c.Addr)
	}
	return nil
}

// Manager creates, tracks and deletes sandboxes. It is safe for concurrent use.
type Manager struct {
	cfg   Config
	log   *slog.Logger
	k     Kernel
	rules RuleSet
	// closedNets are the protected and private destinations of the rules,
	// which an address learned from DNS never opens.
	closedNets []netip.Prefix

	mu       sync.RWMutex // guards the maps and pool
	pool     *Pool
	byName   map[string]*Sandbox
	byAddr   map[netip.Addr]*Sandbox
	opMu     sync.Mutex    // serialises create/delete so kernel state follows the maps
	reapWait time.Duration // reapDelay; shorter in tests
	reapq    chan reapItem
	stopReap chan struct{}
	reaping  sync.WaitGroup
	// prefixLock holds the host-wide lock of NetnsPrefix (owner.go).
	prefixLock *os.File
	// linksLock holds the lock of the daemon's network namespace (owner.go).
	linksLock *os.File
	// linksHolder is who held it when lockLinks could not take it.
	linksHolder string
	// lostEvery is how often watchLost looks (lostCheck; shorter in tests).
	lostEvery time.Duration
	// dnsRate is the kernel's DNS flood limit in force (nftables, see
	// syncDNSRate); guarded by opMu.
	dnsRate int
}

// reapDelay is how long a deleted sandbox's link is left to the kernel: an
// unmounted namespace with nothing in it is destroyed asynchronously, veth
// pair included, in batches far cheaper than deleting each link (each
// deletion waits out an RCU grace period of its own). A link still there
// after it (a process kept the namespace alive, or the namespace was a
// runtime's) is deleted.
const reapDelay = 2 * time.Second

type reapItem struct {
	s     *Sandbox
	after time.Time
}

// reaper removes deleted sandboxes' links and then frees their slots, so a
// new sandbox never meets a leftover link of the same name.
func (m *Manager) reaper() {
	defer m.reaping.Done()
	for {
		var it reapItem
		select {
		case it = <-m.reapq:
		case <-m.stopReap:
			return
		}
		if !it.s.External {
			select {
			case <-time.After(time.Until(it.after)):
			case <-m.stopReap:
				return
			}
		}
		if err := m.k.DeleteLink(it.s.HostInterface); err != nil {
			m.log.Warn("deleting a deleted sandbox's link", "sandbox", it.s.Name, "link", it.s.HostInterface, "error", err)
		}
		// Its flow counters are read before its address can be another's.
		m.cfg.Flows.settle()
		m.mu.Lock()
		m.pool.Release(it.s.Slot)
		m.mu.Unlock()
	}
}

// New returns a Manager for the calling process's network namespace. Call
// Setup before creating sandboxes.
func New(cfg Config) (*Manager, error) {
	if cfg.NetnsDir == "" {
		cfg.NetnsDir = "/run/netns"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	pool, err := NewPool(cfg.Pool)
	if err != nil {
		return nil, err
	}
	if cfg.IPTables == nil {
		ipt, err := newIPTables()
		if err != nil {
			return nil, err
		}
		cfg.IPTables = ipt
	}
	if cfg.Kernel == nil || cfg.IPSets == nil {
		nl, err := netlink.NewHandle()
		if err != nil {
			return nil, fmt.Errorf("opening netlink: %w", err)
		}
		if cfg.Kernel == nil {
			cfg.Kernel = netlinkKernel{nl}
		}
		if cfg.IPSets == nil {
			cfg.IPSets = netlinkSets{nl}
		}
	}
	if cfg.NFT == nil {
		cfg.NFT = NFTExec{}
	}
	m := &Manager{
		cfg: cfg, log: cfg.Logger, k: cfg.Kernel, pool: pool, reapWait: reapDelay,
		rules: Rules(cfg.Rules), closedNets: closedNets(cfg.Rules),
		byName: map[string]*Sandbox{}, byAddr: map[netip.Addr]*Sandbox{},
		reapq: make(chan reapItem, 1<<16), stopReap: make(chan struct{}),
	}
	if f := cfg.Flows; f != nil {
		f.mu.Lock()
		f.list, f.owner = cfg.NFTList, m.sandboxAt
		if f.list == nil {
			f.list = nftList
		}
		f.mu.Unlock()
	}
	m.reaping.Add(1)
	go m.reaper()
	if m.lostEvery == 0 {
		m.lostEvery = lostCheck
	}
	return m, nil
}

// Close releases the kernel's netlink handle. Sandboxes and rules stay in place:
// while the daemon is away its sandboxes keep no way around it.
// Links of sandboxes deleted just before are left to the next start's sweep.
func (m *Manager) Close() {
	close(m.stopReap)
	m.reaping.Wait()
	m.k.Close()
	m.unlockLinks()
	m.unlockPrefix()
}

// Setup installs the interception rules and policy routing, then re-adopts
// the sandboxes recorded by a previous run whose namespace and link survived,
// and removes the remains of any others.
func (m *Manager) Setup() error {
	if err := m.lockPrefix(); err != nil {
		return err
	}
	if err := m.lockLinks(); err != nil {
		m.unlockPrefix()
		return err
	}
	if err := m.rules.Apply(m.cfg.IPTables, m.cfg.IPSets, m.cfg.NFT); err != nil {
		return err
	}
	if err := m.k.ApplyRouting(); err != nil {
		return err
	}
	if err := m.enableForwarding(); err != nil {
		return err
	}
	m.dnsRate = m.cfg.Rules.DNSQPS
	if err := m.adopt(); err != nil {
		return err
	}
	m.opMu.Lock()
	defer m.opMu.Unlock()
	return m.syncDNSRate()
}

// SetDNSDefault changes the default DNS rate per sandbox (a config
// reload), and with it the kernel's flood limit.
func (m *Manager) SetDNSDefault(qps int) error {
	m.opMu.Lock()
	defer m.opMu.Unlock()
	m.mu.Lock()
	m.cfg.Rules.DNSQPS = qps
	m.mu.Unlock()
	return m.syncDNSRate()
}

// syncDNSRate keeps the kernel's per-address DNS flood limit at the
// highest rate any sandbox may be answered at: the default, or a sandbox's
// own max_dns_qps above it (the DNS shim holds each sandbox to its own
// rate, answering REFUSED beyond it; the kernel's limit only keeps a flood
// from filling the socket all sandboxes share, so it must not cut a
// sandbox below its own rate). No default rate: no kernel limit. The table
// is replaced whole, in one transaction, only when the rate changes.
// Called with opMu held.
func (m *Manager) syncDNSRate() error {
	m.mu.RLock()
	want := m.cfg.Rules.DNSQPS
	if want > 0 {
		for _, sb := range m.byName {
			// A sandbox's 0 (no limit) lifts the shim's limit only:
			// the flood guard stays, at the highest rate in force.
			if sb.Limits.DNSQPS != nil {
				want = max(want, *sb.Limits.DNSQPS)
			}
		}
	}
	p := m.cfg.Rules
	m.mu.RUnlock()
	if want == m.dnsRate || m.cfg.NFT == nil {
		return nil
	}
	p.DNSQPS = want
	rs := Rules(p)
	// Only the flood limit's chain and set: replacing the table would
	// lose the routed-flow counters in its sets.
	if err := m.cfg.NFT.Run(nftDNSRate(p, m.dnsRate)); err != nil {
		return fmt.Errorf("setting the kernel's dns flood limit to %d/s: %w", want, err)
	}
	m.rules.TProxy, m.dnsRate = rs.TProxy, want
	m.log.Info("kernel dns flood limit changed", "qps", want)
	return nil
}

func (m *Manager) adopt() error {
	var recs map[string][]byte
	if m.cfg.Records != nil {
		var err error
		if recs, err = m.cfg.Records.Sandboxes(); err != nil {
			return fmt.Errorf("reading sandbox records: %w", err)
		}
	}
	// The sets are refilled from the records: whatever they hold goes
	// first, entries of sandboxes that do not survive (a sandbox given
	// their slot must inherit nothing) and of earlier versions included.
	// Routed flows that start meanwhile are refused, never let through.
	m.removeEntries(func(string, netip.Addr) bool { return true })
	var dropped []Sandbox
	for name, raw := range recs {
		var sb Sandbox
		err := json.Unmarshal(raw, &sb)
		if err == nil {
			err = m.check(&sb)
		}
		if sb.Interface == "" {
			sb.Interface = SandboxInterface // a record from before attach
		}
		followsDefault := err == nil && (sb.PolicyDefault || !bytes.Contains(raw, []byte(`"policy"`)))
		if followsDefault {
			// A record from before policies, or a sandbox that follows
			// the default: the config's, which may have changed while
			// the daemon was down.
			sb.Policy = m.cfg.DefaultPolicy
		}
		if err == nil {
			sb.Compiled, err = sb.Policy.Compile()
		}
		if err != nil {
			m.log.Warn("dropping sandbox that did not survive", "sandbox", name, "reason", err)
			if sb.Name != "" {
				dropped = append(dropped, sb)
			}
			m.cfg.Records.DeleteSandbox(name)
			continue
		}
		if _, taken := m.sandboxAt(sb.Addr); taken && sb.Chained != "" {
			// Two records of one chained address: neither the kernel nor
			// DNS could tell them apart, and the first one kept it.
			m.log.Warn("dropping chained sandbox with a conflicting address", "sandbox", name, "addr", sb.Addr)
			dropped = append(dropped, sb)
			m.cfg.Records.DeleteSandbox(name)
			continue
		}
		if err := m.pool.Reserve(sb.Slot); err != nil {
			m.log.Warn("dropping sandbox with a conflicting address", "sandbox", name, "reason", err)
			dropped = append(dropped, sb)
			m.cfg.Records.DeleteSandbox(name)
			continue
		}
		if err := m.syncSets(nil, &sb); err != nil {
			m.log.Warn("restoring a re-adopted sandbox's policy sets", "sandbox", sb.Name, "error", err)
		}
		if err := m.knownWorker(sb.Worker); err != nil {
			// Kept: the config may have it again after a reload or the
			// next start; meanwhile the sandbox is served as without one.
			m.log.Warn("re-adopted sandbox names a worker the config does not have; it has none until the config does", "sandbox", sb.Name, "worker", sb.Worker)
		}
		if !sb.External {
			if _, marked := m.ownerOf(sb.Netns); !marked {
				// A sandbox of a version before markers: its record proves it
				// ours, and from now on its marker does too.
				m.mark(sb.Netns)
			}
		}
		// Made before versions captured loopback DNS, or the table was
		// removed meanwhile: set up again (replaced whole, so idempotent).
		if err := m.k.LoopbackDNS(&sb, true); err != nil {
			m.log.Warn("re-adopted sandbox: its loopback resolvers will not be answered", "sandbox", sb.Name, "error", err)
		}
		m.register(&sb)
		m.policyApplied(sb)
		if followsDefault {
			// The default's inbound list may have lost an entry while the
			// daemon was down: what it had let in goes, as after a reload.
			// (A sandbox's own policy is the record's, in force before.)
			m.cutInbound(sb)
		}
		m.log.Info("re-adopted sandbox", "sandbox", sb.Name, "addr", sb.Addr)
	}
	// What did not survive goes once the survivors are known: its link is
	// named after its slot, which a survivor may hold now (a stale record
	// of a deleted sandbox whose slot was given again, two records of one
	// slot), and that link is the survivor's.
	m.mu.RLock()
	owned := map[string]bool{}
	for _, sb := range m.byName {
		owned[sb.HostInterface] = true
	}
	m.mu.RUnlock()
	for i := range dropped {
		if owned[dropped[i].HostInterface] {
			dropped[i].HostInterface = ""
		}
		// Its connections go too, as on a delete, unless its address is
		// a survivor's.
		if a := dropped[i].Addr; a.Is4() {
			if _, taken := m.sandboxAt(a); !taken {
				if _, err := m.k.ForgetConnections(a); err != nil {
					m.log.Warn("deleting a dropped sandbox's connections", "sandbox", dropped[i].Name, "error", err)
				}
			}
		}
		m.destroy(&dropped[i])
	}
	// Sweep what has the daemon's prefixes but no record: leftovers of a
	// crash between creating and recording, or of a lost data dir.
	_, _, err := m.sweep(false)
	m.reaping.Add(1)
	go m.watchLost()
	return err
}

// check verifies that a recorded sandbox's namespace and host link exist.
func (m *Manager) check(sb *Sandbox) error {
	if _, err := os.Stat(sb.NetnsPath); err != nil {
		return fmt.Errorf("namespace: %w", err)
	}
	typ, err := m.k.LinkType(sb.HostInterface)
	if err != nil {
		return fmt.Errorf("host link %s: %w", sb.HostInterface, err)
	}
	if typ != "veth" {
		return fmt.Errorf("host link %s is a %s", sb.HostInterface, typ)
	}
	if sb.Chained != "" {
		// Its addresses are the primary plugin's: nothing in the pool to
		// compare them with, but the address must not be a pool sandbox's.
		if m.cfg.Pool.Contains(sb.Addr) {
			return fmt.Errorf("chained address %s is inside pool %s", sb.Addr, m.cfg.Pool)
		}
		return nil
	}
	if gw, a, _ := m.pool.Link(sb.Slot); gw != sb.Gateway || a != sb.Addr {
		return fmt.Errorf("record does not match pool %s", m.pool.Prefix())
	}
	return nil
}

// sweep deletes namespaces and links that carry the daemon's prefixes but
// belong to no registered sandbox; with all, it deletes registered ones too.
// A namespace goes only if this daemon can prove it made it (owner.go);
// removed and left name the namespaces it removed and those it left.
func (m *Manager) sweep(all bool) (removed, left []string, err error) {
	var errs []error
	m.mu.RLock()
	keepNS, keepIf := map[string]bool{}, map[string]bool{}
	if !all {
		for _, sb := range m.byName {
			keepNS[sb.Netns], keepIf[sb.HostInterface] = true, true
		}
	}
	m.mu.RUnlock()
	links, err := m.k.Links()
	if err != nil {
		errs = append(errs, fmt.Errorf("listing links: %w", err))
	}
	for _, l := range links {
		if l.Type == "veth" && strings.HasPrefix(l.Name, m.cfg.InterfacePrefix) && !keepIf[l.Name] {
			if err := m.k.DeleteLink(l.Name); err != nil {
				errs = append(errs, fmt.Errorf("deleting link %s: %w", l.Name, err))
			}
		}
	}
	removed, left, err = m.sweepNamespaces(keepNS)
	errs = append(errs, err)
	return removed, left, errors.Join(errs...)
}

// Cleanup removes every sandbox, link, namespace, rule and route the daemon
// made, whether or not a daemon is running, and returns the namespaces it
// removed and those it left (another daemon's, or ones it cannot prove it
// made). Already gone is success.
func (m *Manager) Cleanup() (removed, left []string, err error) {
	// The prefix's lock file goes too when no daemon holds it (one killed
	// left it); with one running (cleanup --force), it stays that daemon's.
	if m.prefixLock == nil && m.lockPrefix() == nil {
		defer m.unlockPrefix()
	}
	// Another daemon's namespace lock means its links and rules are the
	// ones here, whatever their prefix: they are not this cleanup's to take.
	if m.linksLock == nil {
		if err := m.lockLinks(); err == nil {
			defer m.unlockLinks()
		} else if errors.Is(err, ErrNamespaceInUse) && m.linksHeldByOther() {
			return nil, nil, err
		}
	}
	removed, left, err = m.sweep(true)
	errs := []error{err}
	if m.cfg.Records != nil {
		if recs, err := m.cfg.Records.Sandboxes(); err == nil {
			for name, raw := range recs {
				var sb Sandbox
				if json.Unmarshal(raw, &sb) == nil && sb.NetnsPath != "" {
					m.destroy(&sb)
				}
				m.cfg.Records.DeleteSandbox(name)
			}
		}
	}
	errs = append(errs, m.rules.Teardown(m.cfg.IPTables, m.cfg.IPSets, m.cfg.NFT), m.k.TeardownRouting())
	m.mu.Lock()
	for _, sb := range m.byName {
		m.pool.Release(sb.Slot)
	}
	m.byName, m.byAddr = map[string]*Sandbox{}, map[netip.Addr]*Sandbox{}
	m.mu.Unlock()
	m.cfg.Metrics.setActive(0)
	return removed, left, errors.Join(errs...)
}

func (m *Manager) register(sb *Sandbox) {
	m.mu.Lock()
	m.byName[sb.Name] = sb
	m.byAddr[sb.Addr] = sb
	n := len(m.byName)
	m.mu.Unlock()
	m.cfg.Metrics.setActive(n)
}

// Count is how many sandboxes exist now (interceptd_sandbox_active).
func (m *Manager) Count() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.byName)
}

// Get returns the sandbox called name.
func (m *Manager) Get(name string) (Sandbox, bool) {
	m.mu.RLock()
	sb, ok := m.byName[name]
	m.mu.RUnlock()
	if !ok {
		return Sandbox{}, false
	}
	return *sb, true
}

// List returns all sandboxes sorted by name.
func (m *Manager) List() []Sandbox {
	m.mu.RLock()
	out := make([]Sandbox, 0, len(m.byName))
	for _, sb := range m.byName {
		out = append(out, *sb)
	}
	m.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Create builds the sandbox called name. The interception rules already
// match its interface prefix, so it has no path around the daemon from the
// moment its link exists; it becomes known to DNS and the router last.
func (m *Manager) Create(name string, pol *policy.Policy) (Sandbox, error) {
	return m.add(name, Spec{Policy: pol}, "", SandboxInterface)
}

// CreateSpec is Create with the sandbox's worker as well as its policy.
func (m *Manager) CreateSpec(name string, s Spec) (Sandbox, error) {
	return m.add(name, s, "", SandboxInterface)
}

// AttachSpec is Attach with the sandbox's worker as well as its policy.
func (m *Manager) AttachSpec(name, nsPath, ifName string, s Spec) (Sandbox, error) {
	if nsPath == "" {
		return Sandbox{}, errors.New("attach needs a namespace path")
	}
	if ifName == "" {
		ifName = SandboxInterface
	}
	if !ifNameRE.MatchString(ifName) {
		return Sandbox{}, fmt.Errorf("interface name %q: 1-15 of [A-Za-z0-9_.-]", ifName)
	}
	if _, err := os.Stat(nsPath); err != nil {
		return Sandbox{}, fmt.Errorf("namespace %s: %w", nsPath, err)
	}
	return m.add(name, s, nsPath, ifName)
}

// Attach makes a namespace someone else created (a container runtime, a
// CNI plugin call) a sandbox: same addressing, rules, DNS capture and
// identity as one the daemon creates, with the sandbox end of the veth named
// ifName. Deleting it removes the link and never the namespace.
func (m *Manager) Attach(name, nsPath, ifName string, pol *policy.Policy) (Sandbox, error) {
	return m.AttachSpec(name, nsPath, ifName, Spec{Policy: pol})
}

var ifNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)

// add creates (external == "") or attaches a sandbox; on any failure it
// leaves nothing behind.
func (m *Manager) add(name string, spec Spec, external, ifName string) (sb Sandbox, err error) {
	op := "create"
	if external != "" {
		op = "attach"
	}
	if spec.Chain != nil {
		op = "chain"
	}
	start := time.Now()
	defer func() { m.cfg.Metrics.observe(op, start, err) }()
	if !ValidName(name) {
		return Sandbox{}, fmt.Errorf("%w %q: use 1-64 of [A-Za-z0-9_.-], starting with a letter or digit", ErrInvalidName, name)
	}
	m.mu.RLock()
	p := m.cfg.DefaultPolicy
	m.mu.RUnlock()
	if spec.Policy != nil {
		p = *spec.Policy
	}
	if err := spec.Limits.Validate(); err != nil {
		return Sandbox{}, fmt.Errorf("%w: %v", ErrInvalidLimits, err)
	}
	compiled, err := p.Compile()
	if err != nil {
		return Sandbox{}, fmt.Errorf("%w: %v", ErrInvalidPolicy, err)
	}
	worker := m.cfg.DefaultWorker
	if spec.Worker != nil {
		worker = *spec.Worker
	}
	if err := m.knownWorker(worker); err != nil {
		return Sandbox{}, err
	}
	if spec.Chain != nil {
		if external == "" {
			return Sandbox{}, fmt.Errorf("%w: only an attached namespace has a primary plugin's wiring", ErrInvalidChain)
		}
		if err := spec.Chain.validate(m.cfg.Pool, parsePrefixes(m.cfg.Rules.Protected)); err != nil {
			return Sandbox{}, err
		}
	}
	m.opMu.Lock()
	defer m.opMu.Unlock()
	m.mu.Lock()
	if _, ok := m.byName[name]; ok {
		m.mu.Unlock()
		return Sandbox{}, fmt.Errorf("%w: %s", ErrExists, name)
	}
	if c := spec.Chain; c != nil {
		// The address is the identity: two sandboxes at one address would
		// be told apart by nothing.
		if other, ok := m.byAddr[c.Addr.Addr()]; ok {
			m.mu.Unlock()
			return Sandbox{}, fmt.Errorf("%w: address %s is sandbox %s's", ErrInvalidChain, c.Addr.Addr(), other.Name)
		}
	}
	slot, err := m.pool.Allocate()
	m.mu.Unlock()
	if err != nil {
		return Sandbox{}, err
	}
	release := func() {
		m.mu.Lock()
		m.pool.Release(slot)
		m.mu.Unlock()
	}
	gw, addr, subnet := m.pool.Link(slot)
	s := &Sandbox{
		Name: name, Interface: ifName,
		HostInterface: fmt.Sprintf("%s%x", m.cfg.InterfacePrefix, slot),
		Addr:          addr, Gateway: gw, Subnet: subnet, Created: time.Now().UTC(), Slot: slot,
		Policy: compiled.Policy, Compiled: compiled, Worker: worker,
		PolicyDefault: spec.Policy == nil, Limits: spec.Limits,
	}
	if c := spec.Chain; c != nil {
		// The slot names the link only (its /30 stays unused), so that
		// the link's name is unique and under the prefix the rules match,
		// and re-adoption and the reaper treat it like any other.
		s.Chained, s.Addr, s.Gateway, s.Subnet = c.HostInterface, c.Addr.Addr(), c.Gateway, c.Addr.Masked()
	}
	if external != "" {
		s.External, s.NetnsPath = true, external
	} else {
		s.Netns = m.cfg.NetnsPrefix + name
		s.NetnsPath = filepath.Join(m.cfg.NetnsDir, s.Netns)
		if exists(s.NetnsPath) {
			// Not ours (ours are all in byName): never touch it.
			release()
			owner, _ := m.ownerOf(s.Netns)
			if owner == "" {
				owner = "unknown: no owner marker"
			}
			return Sandbox{}, fmt.Errorf("%w: namespace %s exists and was not made by this daemon (its owner: %s)", ErrExists, s.NetnsPath, owner)
		}
	}
	fail := func(what string, err error) (Sandbox, error) {
		m.clearSets(s)
		m.destroy(s)
		release()
		return Sandbox{}, fmt.Errorf("%s sandbox %s: %s%w", op, name, what, err)
	}
	if err := m.build(s); err != nil {
		return fail("", err)
	}
	if err := m.syncSets(nil, s); err != nil {
		return fail("policy sets: ", err)
	}
	if m.cfg.Records != nil {
		raw, _ := json.Marshal(s)
		if err := m.cfg.Records.SaveSandbox(name, raw); err != nil {
			return fail("recording: ", err)
		}
	}
	m.register(s)
	if err := m.syncDNSRate(); err != nil {
		m.log.Warn("the sandbox's own dns rate is cut by the kernel's flood limit", "sandbox", name, "error", err)
	}
	m.policyApplied(*s)
	m.log.Info(map[string]string{"create": "sandbox created", "attach": "sandbox attached", "chain": "sandbox chained"}[op],
		"sandbox", name, "netns", s.NetnsPath, "addr", s.Addr, "host_interface", s.HostInterface, "chained", s.Chained)
	return *s, nil
}

func (m *Manager) build(s *Sandbox) error {
	if !s.External {
		if err := m.mark(s.Netns); err != nil {
			return err
		}
		if err := m.k.CreateNamespace(s.NetnsPath); err != nil {
			m.unmark(s.Netns)
			return err
		}
	}
	wire := m.k.Wire
	if s.Chained != "" {
		wire = m.k.Chain
	}
	mac, err := wire(s)
	if err != nil {
		return err
	}
	s.MAC = mac
	if err := m.k.LoopbackDNS(s, true); err != nil {
		return err
	}
	if s.External {
		return nil // the runtime writes the container's resolv.conf
	}
	return m.writeResolvConf(s)
}

func (m *Manager) writeResolvConf(s *Sandbox) error {
	if m.cfg.ResolvConfDir == "" {
		return nil
	}
	dir := filepath.Join(m.cfg.ResolvConfDir, s.Netns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	body := fmt.Sprintf("# written by interceptd for sandbox %s; every DNS query from the sandbox is answered by interceptd\nnameserver %s\n", s.Name, s.Gateway)
	f := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
		return fmt.Errorf("writing resolv.conf: %w", err)
	}
	// Whatever the daemon's umask (0077 under systemd): unprivileged
	// processes in the sandbox must read their resolver.
	for p, mode := range map[string]os.FileMode{dir: 0o755, f: 0o644} {
		if err := os.Chmod(p, mode); err != nil {
			return fmt.Errorf("opening up %s: %w", p, err)
		}
	}
	return nil
}

func (m *Manager) removeResolvConf(nsName string) {
	if m.cfg.ResolvConfDir == "" || nsName == "" {
		return
	}
	os.RemoveAll(filepath.Join(m.cfg.ResolvConfDir, nsName))
}

// destroy removes whatever exists of s's kernel state; gone is fine.
func (m *Manager) destroy(s *Sandbox) error {
	var errs []error
	if s.HostInterface == "" {
		// No link of its own (see adopt).
	} else if err := m.k.DeleteLink(s.HostInterface); err != nil {
		// Deleting one end of a veth pair deletes the other.
		errs = append(errs, fmt.Errorf("deleting link %s: %w", s.HostInterface, err))
	}
	if s.External {
		return errors.Join(errs...) // never remove a namespace we did not make
	}
	if err := m.k.RemoveNamespace(s.NetnsPath); err != nil {
		errs = append(errs, err)
	} else {
		m.unmark(s.Netns)
	}
	m.removeResolvConf(s.Netns)
	return errors.Join(errs...)
}

// Delete removes the sandbox called name: it leaves DNS and the router first,
// then its link and namespace go.
func (m *Manager) Delete(name string) (err error) {
	start := time.Now()
	defer func() { m.cfg.Metrics.observe("delete", start, err) }()
	m.opMu.Lock()
	defer m.opMu.Unlock()
	m.mu.Lock()
	s, ok := m.byName[name]
	if ok {
		delete(m.byName, name)
		delete(m.byAddr, s.Addr)
	}
	n := len(m.byName)
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	m.cfg.Metrics.setActive(n)
	m.clearSets(s)
	// Its connections go too: a conntrack entry outlives the sandbox, and
	// one kept alive from outside (a stream of datagrams, each refreshing
	// it) would carry on, as established, into whoever gets the address
	// next, past that sandbox's inbound and egress policy alike.
	if s.Addr.Is4() {
		if _, cerr := m.k.ForgetConnections(s.Addr); cerr != nil {
			m.log.Warn("deleting a deleted sandbox's connections", "sandbox", name, "error", cerr)
		}
	}
	// What the kernel counts at its address until the next read is its
	// own (the reaper reads before the address is given again).
	m.cfg.Flows.retire(s.Addr, s.Name)
	// The sandbox is already unknown to DNS, the router and the ipsets:
	// whatever it still sends is refused. The namespace goes now; its link
	// goes in the background (see reaper), keeping the slot until then.
	if s.External {
		// The namespace is the runtime's and may live on: take our table
		// out of it (its link goes with the reaper).
		if lerr := m.k.LoopbackDNS(s, false); lerr != nil {
			m.log.Warn("removing loopback dns capture from a detached namespace", "sandbox", name, "netns", s.NetnsPath, "error", lerr)
		}
	} else {
		if rerr := m.k.RemoveNamespace(s.NetnsPath); rerr != nil {
			err = rerr
		} else {
			m.unmark(s.Netns)
		}
		m.removeResolvConf(s.Netns)
	}
	m.reapq <- reapItem{s: s, after: time.Now().Add(m.reapWait)}
	if m.cfg.Records != nil {
		// A namespace we made is gone now, so a record that a crash kept
		// would be dropped on restart: its removal need not wait for the
		// disk. An external one lives on with its container, and a record
		// left behind would bring the deleted sandbox back: that waits.
		forget := m.cfg.Records.DeleteSandbox
		if !s.External && err == nil {
			forget = m.cfg.Records.ForgetSandbox
		}
		if rerr := forget(name); rerr != nil {
			err = errors.Join(err, fmt.Errorf("deleting record: %w", rerr))
		}
	}
	// Whatever failed above, the sandbox has left the manager (a retry
	// finds nothing to delete): what the rest of the daemon keeps about it
	// goes too, its open tunnels cut and its learned addresses forgotten,
	// so that nothing it had carries on or passes to a sandbox created
	// later under its name.
	if m.cfg.OnDelete != nil {
		m.cfg.OnDelete(name)
	}
	if err != nil {
		return fmt.Errorf("deleting sandbox %s: %w", name, err)
	}
	m.log.Info("sandbox deleted", "sandbox", name)
	return nil
}

// closedNets are the destinations only an explicit IP/CIDR entry opens.
func closedNets(p RuleParams) []netip.Prefix {
	return parsePrefixes(append(slices.Clone(p.Protected), p.Private...))
}

// parsePrefixes reads prefixes and single addresses; what is neither (the
// rules would not load it either) is skipped.
func parsePrefixes(ss []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
		} else if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out
}

func ipnet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(bits, 32)}
}

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, os.ErrNotExist)
}

// SetPolicy replaces a running sandbox's policy. It takes effect for the next
// request, query or connection, and touches no other sandbox; OnPolicy is
// called after it for what lasts (open tunnels).
func (m *Manager) SetPolicy(name string, p policy.Policy) (Sandbox, error) {
	compiled, err := p.Compile()
	if err != nil {
		return Sandbox{}, fmt.Errorf("%w: %v", ErrInvalidPolicy, err)
	}
	var was []string // the inbound list before
	sb, err := m.update(name, "policy", func(old *Sandbox) (*Sandbox, func() error, error) {
		next := *old
		next.Policy, next.Compiled = compiled.Policy, compiled
		next.PolicyDefault = false // the sandbox's own from now on
		was = old.Policy.Inbound
		if err := m.syncSets(old, &next); err != nil {
			return nil, nil, m.restoreSets(&next, old, err)
		}
		// If the record cannot be saved the old policy stays in force, so
		// the sets must say it again: left with the new one, routed traffic
		// would follow a policy the router and DNS do not (what the old one
		// had learned from DNS is learned again from the next answers).
		undo := func() error {
			if err := m.syncSets(&next, old); err != nil {
				return fmt.Errorf("restoring policy sets: %w", err)
			}
			return nil
		}
		return &next, undo, nil
	})
	if err == nil {
		if !slices.Equal(was, sb.Policy.Inbound) {
			// A dump of conntrack: only when there is something to cut.
			m.cutInbound(sb)
		}
		m.log.Info("sandbox policy changed", "sandbox", name, "internet", p.Internet, "allowed_hosts", p.AllowedHosts, "denied_hosts", p.DeniedHosts, "inbound", p.Inbound)
	}
	return sb, err
}

// restoreSets puts old's entries back after the sets could not take
// next's (a full set): left half-done, they would open part of a policy
// that is not in force (an inbound entry among them). It returns err, and
// the restore's own failure, as the change's error.
func (m *Manager) restoreSets(next, old *Sandbox, err error) error {
	err = fmt.Errorf("updating policy sets: %w", err)
	if rerr := m.syncSets(next, old); rerr != nil {
		err = errors.Join(err, fmt.Errorf("restoring policy sets: %w", rerr))
	}
	return err
}

// update replaces a running sandbox's record, one change at a time: change
// makes the new record from the old (and may apply it to the kernel,
// returning how to undo that); the new record is saved (or the change
// undone), swapped in for readers, and OnPolicy called once the locks are
// released, for what lasts (open tunnels).
func (m *Manager) update(name, what string, change func(old *Sandbox) (*Sandbox, func() error, error)) (sb Sandbox, err error) {
	defer func() {
		// Deferred before the lock: it runs once the lock is released.
		if err == nil {
			m.policyApplied(sb)
		}
	}()
	m.opMu.Lock()
	defer m.opMu.Unlock()
	m.mu.RLock()
	old, ok := m.byName[name]
	m.mu.RUnlock()
	if !ok {
		return Sandbox{}, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	next, undo, err := change(old)
	if err != nil {
		return Sandbox{}, err
	}
	if m.cfg.Records != nil {
		raw, _ := json.Marshal(next)
		if err := m.cfg.Records.SaveSandbox(name, raw); err != nil {
			if undo != nil {
				if uerr := undo(); uerr != nil {
					err = errors.Join(err, uerr)
				}
			}
			return Sandbox{}, fmt.Errorf("recording %s: %w", what, err)
		}
	}
	// Readers hold copies; swapping the pointer is the whole update.
	m.mu.Lock()
	m.byName[name], m.byAddr[next.Addr] = next, next
	m.mu.Unlock()
	return *next, nil
}

func (m *Manager) policyApplied(sb Sandbox) {
	if m.cfg.OnPolicy != nil {
		m.cfg.OnPolicy(sb)
	}
}

// Caller returns the sandbox at addr with its policy, for DNS and the router:
// the daemon's notion of who is asking. Anti-spoofing rules are what make
// the answer trustworthy.
func (m *Manager) Caller(addr netip.Addr) (policy.Caller, bool) {
	m.mu.RLock()
	sb, ok := m.byAddr[addr.Unmap()]
	m.mu.RUnlock()
	if !ok {
		return policy.Caller{}, false
	}
	return policy.Caller{Sandbox: sb.Name, Policy: sb.Compiled, Addr: sb.Addr, Worker: sb.Worker, Limits: sb.Limits}, true
}

// sandboxAt names the sandbox at addr.
func (m *Manager) sandboxAt(addr netip.Addr) (string, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	sb, ok := m.byAddr[addr.Unmap()]
	if !ok {
		return "", false
	}
	return sb.Name, true
}

// knownWorker checks that the config has the worker a sandbox is given.
func (m *Manager) knownWorker(name string) error {
	if name == "" || (m.cfg.Workers != nil && m.cfg.Workers(name)) {
		return nil
	}
	return fmt.Errorf("%w %q: the config has no worker of that name", ErrUnknownWorker, name)
}

// SetWorker gives a running sandbox the worker of that name ("" for none).
// It takes effect for the next request or query, and is recorded; OnPolicy
// is called after it, as after a policy change, for what lasts (an open
// tunnel that a function of the old worker served is decided again).
func (m *Manager) SetWorker(name, worker string) (Sandbox, error) {
	if err := m.knownWorker(worker); err != nil {
		return Sandbox{}, err
	}
	was := ""
	sb, err := m.update(name, "worker", func(old *Sandbox) (*Sandbox, func() error, error) {
		next := *old
		next.Worker, was = worker, old.Worker
		return &next, nil, nil
	})
	if err == nil {
		m.log.Info("sandbox worker changed", "sandbox", name, "worker", worker, "was", was)
	}
	return sb, err
}

// SetLimits replaces a running sandbox's own limits (the zero Limits: the
// daemon's defaults again). They take effect for the next request,
// connection or query, and are recorded.
func (m *Manager) SetLimits(name string, l policy.Limits) (Sandbox, error) {
	if err := l.Validate(); err != nil {
		return Sandbox{}, fmt.Errorf("%w: %v", ErrInvalidLimits, err)
	}
	sb, err := m.update(name, "limits", func(old *Sandbox) (*Sandbox, func() error, error) {
		next := *old
		next.Limits = l
		return &next, nil, nil
	})
	if err == nil {
		m.log.Info("sandbox limits changed", "sandbox", name, "limits", limitsAttr(sb.Limits))
		m.opMu.Lock()
		if serr := m.syncDNSRate(); serr != nil {
			m.log.Warn("the sandbox's own dns rate is cut by the kernel's flood limit", "sandbox", name, "error", serr)
		}
		m.opMu.Unlock()
	}
	return sb, err
}

// limitsAttr shows limits for a log record: the daemon's default where nil.
func limitsAttr(l policy.Limits) string {
	show := func(v *int) string {
		if v == nil {
			return "default"
		}
		return strconv.Itoa(*v)
	}
	return "max_rps=" + show(l.RPS) + " max_conns=" + show(l.Conns) + " max_dns_qps=" + show(l.DNSQPS)
}

// SetDefaultPolicy replaces the default policy (a config reload): sandboxes
// made from now on get it, and those that follow the default
// (PolicyDefault) take it now, each as a `sandbox policy` would (sets,
// record, OnPolicy). It returns how many it changed; a sandbox it could not
// change keeps its policy and is named in the error.
func (m *Manager) SetDefaultPolicy(p policy.Policy) (int, error) {
	compiled, err := p.Compile()
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrInvalidPolicy, err)
	}
	m.mu.Lock()
	m.cfg.DefaultPolicy = p
	var follow []string
	for name, sb := range m.byName {
		if sb.PolicyDefault {
			follow = append(follow, name)
		}
	}
	m.mu.Unlock()
	sort.Strings(follow)
	n := 0
	var errs []error
	for _, name := range follow {
		changed := false // its inbound list: only then is there anything to cut
		_, err := m.update(name, "policy", func(old *Sandbox) (*Sandbox, func() error, error) {
			if !old.PolicyDefault {
				return old, nil, nil // given its own since
			}
			changed = !slices.Equal(old.Policy.Inbound, compiled.Policy.Inbound)
			next := *old
			next.Policy, next.Compiled = compiled.Policy, compiled
			if err := m.syncSets(old, &next); err != nil {
				return nil, nil, m.restoreSets(&next, old, err)
			}
			return &next, func() error { return m.syncSets(&next, old) }, nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("sandbox %s: %w", name, err))
			continue
		}
		if sb, ok := m.Get(name); ok && changed {
			m.cutInbound(sb)
		}
		n++
	}
	return n, errors.Join(errs...)
}

// enableForwarding turns on IPv4 forwarding, without which the replies to a
// sandbox's routed (non-HTTP) traffic are dropped where they come in. Like
// Docker, interceptd needs the host to route; unlike Docker it leaves the
// host's FORWARD policy alone: its own chain handles sandbox traffic only.
func (m *Manager) enableForwarding() error {
	changed, err := m.k.EnableForwarding()
	if err != nil || !changed {
		return err
	}
	m.log.Info("enabled net.ipv4.ip_forward so that sandboxes' routed traffic can be answered; the host's own FORWARD policy is unchanged")
	return nil
}

// Check verifies a sandbox's wiring: its namespace, its host link, and the
// address and default route inside.
func (m *Manager) Check(name string) error {
	m.mu.RLock()
	sb, ok := m.byName[name]
	m.mu.RUnlock()
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err := m.check(sb); err != nil {
		return err
	}
	return m.k.CheckWiring(sb)
}
