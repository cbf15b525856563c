package netns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/interceptd/interceptd/policy"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// IPSets is the narrow part of ipset that rule setup and the per-sandbox
// policy entries use, so that unit tests can run against an in-memory fake.
type IPSets interface {
	// Create makes a set; one that exists already is kept with its entries.
	Create(name, typ string) error
	// Destroy removes a set; one that is gone already is fine.
	Destroy(name string) error
	// Add adds an entry (replacing an equal one when e.Replace is set).
	Add(set string, e *netlink.IPSetEntry) error
	// Del removes an entry.
	Del(set string, e *netlink.IPSetEntry) error
	// List returns a set's entries.
	List(set string) ([]netlink.IPSetEntry, error)
}

// netlinkSets manages ipsets in the calling process's network namespace.
type netlinkSets struct{ h *netlink.Handle }

func (s netlinkSets) Create(name, typ string) error {
	err := s.h.IpsetCreate(name, typ, netlink.IpsetCreateOptions{Timeout: ptr(uint32(0)), Family: unix.AF_INET})
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

func (s netlinkSets) Destroy(name string) error {
	err := s.h.IpsetDestroy(name)
	if errors.Is(err, unix.ENOENT) || isSetGone(err) {
		return nil
	}
	return err
}

func (s netlinkSets) Add(set string, e *netlink.IPSetEntry) error { return s.h.IpsetAdd(set, e) }
func (s netlinkSets) Del(set string, e *netlink.IPSetEntry) error { return s.h.IpsetDel(set, e) }

func (s netlinkSets) List(set string) ([]netlink.IPSetEntry, error) {
	res, err := s.h.IpsetList(set)
	if err != nil {
		return nil, err
	}
	return res.Entries, nil
}

// isSetGone recognises "the set does not exist" from ipset's own errno.
func isSetGone(err error) bool {
	var en unix.Errno
	// IPSET_ERR_PROTOCOL+... : the kernel answers 4097 (IPSET_ERR_PRIVATE+1,
	// "set does not exist") for a missing set.
	return errors.As(err, &en) && en == 4097
}

func ptr[T any](v T) *T { return &v }

var protos = []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP}

// setEntry is one entry of one set.
type setEntry struct {
	set   string
	entry netlink.IPSetEntry
}

// sandboxSets are the sets that hold per-sandbox entries, each with what
// names the sandbox in its entries: the sandbox's host interface (the
// hash:net,iface sets) or its address (the others, where it is the first
// dimension). clearSets goes by it, so that whatever a sandbox
// had (its policy's entries, what it learned from DNS, entries an earlier
// version put there) goes with it.
var sandboxSets = []struct {
	name    string
	byIface bool
}{
	{SetInternet, false}, {SetListed, false}, {SetAllow, false}, {SetDeny, false}, {SetLearned, false},
	{SetInbound, false}, {SetInboundAll, true}, {SetInboundDst, true},
	{SetAllowAll, true}, {SetDenyAll, true}, {SetLearnedAll, true}, {SetDenyLearned, true},
}

// policyEntries are the set entries a sandbox's policy implies for non-HTTP
// traffic: one entry per IP/CIDR pattern (two, tcp and udp, with a port),
// and the sandbox's address in SetInternet (internet on, no allowlist) or
// SetListed (an allowlist).
func policyEntries(sb *Sandbox) []setEntry {
	var out []setEntry
	src := net.IP(sb.Addr.AsSlice())
	add := func(patterns []string, portSet, anySet string) {
		for _, raw := range patterns {
			p, err := policy.ParsePattern(raw)
			if err != nil || !p.IsAddress() {
				continue
			}
			pre, port := p.Prefix(), p.Port()
			if !pre.Addr().Is4() {
				continue
			}
			dst := net.IP(pre.Addr().AsSlice())
			if port == 0 {
				out = append(out, setEntry{anySet, netlink.IPSetEntry{IP: dst, CIDR: uint8(pre.Bits()), IFace: sb.HostInterface}})
				continue
			}
			for _, proto := range protos {
				out = append(out, setEntry{portSet, netlink.IPSetEntry{IP: src, Port: ptr(port), Protocol: ptr(proto), IP2: dst, CIDR2: uint8(pre.Bits())}})
			}
		}
	}
	out = append(out, inboundEntries(sb)...)
	add(sb.Policy.AllowedHosts, SetAllow, SetAllowAll)
	add(sb.Policy.DeniedHosts, SetDeny, SetDenyAll)
	switch {
	case len(sb.Policy.AllowedHosts) > 0:
		// An allowlist binds every protocol, internet on or off: only
		// what it opens passes.
		out = append(out, setEntry{SetListed, netlink.IPSetEntry{IP: src}})
	case sb.Policy.Internet:
		out = append(out, setEntry{SetInternet, netlink.IPSetEntry{IP: src}})
	}
	return out
}

// inboundEntries are the set entries of a sandbox's inbound policy: per
// entry with a port, one (sandbox address, proto:port, source net) in
// SetInbound per port and protocol; per entry without, one (source net,
// sandbox interface) in SetInboundAll, and then the sandbox's (address,
// interface) in SetInboundDst once. A source of 0.0.0.0/0 is stored as its
// two halves: the kernel's net dimensions take prefixes of 1 to 32 bits only.
func inboundEntries(sb *Sandbox) []setEntry {
	if !sb.Addr.Is4() {
		return nil
	}
	entries, _ := policy.ParseInbounds(sb.Policy.Inbound) // invalid ones: skipped, as Compile refused them
	dst := net.IP(sb.Addr.AsSlice())
	var out []setEntry
	anyPort := false
	for _, in := range entries {
		sources := []netip.Prefix{in.Source}
		if in.Source.Bits() == 0 {
			sources = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/1"), netip.MustParsePrefix("128.0.0.0/1")}
		}
		for _, src := range sources {
			ip, bits := net.IP(src.Addr().AsSlice()), uint8(src.Bits())
			if in.AnyPort() {
				anyPort = true
				out = append(out, setEntry{SetInboundAll, netlink.IPSetEntry{IP: ip, CIDR: bits, IFace: sb.HostInterface}})
				continue
			}
			for _, name := range in.Protos() {
				proto := uint8(unix.IPPROTO_TCP)
				if name == "udp" {
					proto = unix.IPPROTO_UDP
				}
				for port := int(in.PortFrom); port <= int(in.PortTo); port++ {
					out = append(out, setEntry{SetInbound, netlink.IPSetEntry{IP: dst, Port: ptr(uint16(port)), Protocol: ptr(proto), IP2: ip, CIDR2: bits}})
				}
			}
		}
	}
	if anyPort {
		out = append(out, setEntry{SetInboundDst, netlink.IPSetEntry{IP: dst, CIDR: 32, IFace: sb.HostInterface}})
	}
	return out
}

// syncSets makes the ipsets say what sb's policy says: every entry of old
// (its previous state, if any; including addresses learned from DNS) goes,
// the policy's are added.
func (m *Manager) syncSets(old, sb *Sandbox) error {
	if old != nil {
		m.clearSets(old)
	}
	var errs []error
	for _, e := range policyEntries(sb) {
		e.entry.Replace = true
		if err := m.cfg.IPSets.Add(e.set, &e.entry); err != nil {
			errs = append(errs, fmt.Errorf("adding to %s: %w", e.set, err))
		}
	}
	return errors.Join(errs...)
}

// clearSets removes every entry of sb from the sets: those its policy
// implies and the addresses it learned from DNS, found by its interface or
// address, so that a later sandbox on the same slot inherits nothing.
func (m *Manager) clearSets(sb *Sandbox) {
	m.removeEntries(func(iface string, addr netip.Addr) bool {
		return (iface != "" && iface == sb.HostInterface) || (addr.IsValid() && addr == sb.Addr)
	})
}

// removeEntries deletes, from every per-sandbox set, the entries whose
// sandbox (interface in the hash:net,iface sets, else address; the other
// one invalid) gone says is gone.
func (m *Manager) removeEntries(gone func(iface string, addr netip.Addr) bool) {
	for _, st := range sandboxSets {
		entries, err := m.cfg.IPSets.List(st.name)
		if err != nil {
			m.log.Warn("listing a policy set", "set", st.name, "error", err)
			continue
		}
		for _, e := range entries {
			var iface string
			var addr netip.Addr
			if st.byIface {
				iface = e.IFace
			} else if a, ok := netip.AddrFromSlice(e.IP); ok {
				addr = a.Unmap()
			}
			if !gone(iface, addr) {
				continue
			}
			e.Timeout, e.Packets, e.Bytes, e.Replace = nil, nil, nil, false
			if err := m.cfg.IPSets.Del(st.name, &e); err != nil {
				m.log.Warn("removing a policy set entry", "set", st.name, "error", err)
			}
		}
	}
}

// learned returns the sandbox and the timeout for addresses learned from
// DNS for it, or false when it is gone. The caller holds m.mu for reading
// until its entries are in: Delete takes the sandbox out of the maps under
// the write lock before clearing its entries, so none can land after the
// clearing for the next sandbox on its slot to inherit.
func (m *Manager) learned(sandbox string, ttl time.Duration) (*Sandbox, uint32, bool) {
	sb, ok := m.byName[sandbox]
	return sb, uint32(max(ttl, time.Second) / time.Second), ok
}

// closed reports whether a is a protected or private destination, which
// only an explicit IP/CIDR entry opens.
func (m *Manager) closed(a netip.Addr) bool {
	for _, p := range m.closedNets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// AllowLearned lets a sandbox reach addresses that DNS gave it for an
// allowed hostname, until ttl runs out: on every port when ports is empty,
// else on those ports (TCP and UDP). Protected and private addresses are
// never added: a DNS answer does not open them (the rules match the learned
// sets after those destinations as well).
func (m *Manager) AllowLearned(sandbox string, addrs []netip.Addr, ttl time.Duration, ports []uint16) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	sb, secs, ok := m.learned(sandbox, ttl)
	if !ok {
		return
	}
	src := net.IP(sb.Addr.AsSlice())
	for _, a := range addrs {
		a = a.Unmap()
		if !a.Is4() || m.closed(a) {
			continue
		}
		dst := net.IP(a.AsSlice())
		var entries []setEntry
		if len(ports) == 0 {
			entries = append(entries, setEntry{SetLearnedAll, netlink.IPSetEntry{IP: dst, CIDR: 32, IFace: sb.HostInterface}})
		}
		for _, port := range ports {
			for _, proto := range protos {
				entries = append(entries, setEntry{SetLearned, netlink.IPSetEntry{IP: src, Port: ptr(port), Protocol: ptr(proto), IP2: dst, CIDR2: 32}})
			}
		}
		for _, e := range entries {
			e.entry.Timeout, e.entry.Replace = &secs, true
			if err := m.cfg.IPSets.Add(e.set, &e.entry); err != nil {
				m.log.Warn("allowing a learned address", "sandbox", sandbox, "error", err)
			}
		}
	}
}

// DenyLearned refuses a sandbox every protocol to addresses DNS gave (any
// sandbox) for a name that sandbox's policy denies, until ttl runs out.
// They are matched with the other denies, before any allow.
func (m *Manager) DenyLearned(sandbox string, addrs []netip.Addr, ttl time.Duration) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	sb, secs, ok := m.learned(sandbox, ttl)
	if !ok {
		return
	}
	for _, a := range addrs {
		a = a.Unmap()
		if !a.Is4() {
			continue
		}
		e := &netlink.IPSetEntry{IP: net.IP(a.AsSlice()), CIDR: 32, IFace: sb.HostInterface, Timeout: &secs, Replace: true}
		if err := m.cfg.IPSets.Add(SetDenyLearned, e); err != nil {
			m.log.Warn("denying a learned address", "sandbox", sandbox, "error", err)
		}
	}
}
