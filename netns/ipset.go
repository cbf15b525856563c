package netns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/interceptd/interceptd/internal/policy"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// IPSets is the narrow part of ipset that rule setup uses.
type IPSets interface {
	// Create makes a set; one that exists already is kept with its entries.
	Create(name, typ string) error
	// Destroy removes a set; one that is gone already is fine.
	Destroy(name string) error
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

// isSetGone recognises "the set does not exist" from ipset's own errno.
func isSetGone(err error) bool {
	var en unix.Errno
	// IPSET_ERR_PROTOCOL+... : the kernel answers 4097 (IPSET_ERR_PRIVATE+1,
	// "set does not exist") for a missing set.
	return errors.As(err, &en) && en == 4097
}

func ptr[T any](v T) *T { return &v }

var protos = []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP}

// policyEntries are the set entries a sandbox's policy implies for non-HTTP
// traffic: one entry per IP/CIDR pattern (two, tcp and udp, with a port).
type setEntry struct {
	set   string
	entry netlink.IPSetEntry
}

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
	add(sb.Policy.AllowedHosts, SetAllow, SetAllowAll)
	add(sb.Policy.DeniedHosts, SetDeny, SetDenyAll)
	if sb.Policy.Internet {
		out = append(out, setEntry{SetInternet, netlink.IPSetEntry{IP: src}})
	}
	return out
}

// syncSets makes the ipsets say what sb's policy says: the entries of old
// (its previous state, if any; including addresses learned from DNS) go, the
// policy's are added.
func (m *Manager) syncSets(old, sb *Sandbox) error {
	if old != nil {
		m.clearSets(old)
	}
	var errs []error
	for _, e := range policyEntries(sb) {
		e.entry.Replace = true
		if err := m.nl.IpsetAdd(e.set, &e.entry); err != nil {
			errs = append(errs, fmt.Errorf("adding to %s: %w", e.set, err))
		}
	}
	return errors.Join(errs...)
}

// clearSets removes every entry of sb from the sets: those its policy
// implies, and the addresses it learned from DNS (found by its interface), so
// that a later sandbox on the same slot inherits nothing.
func (m *Manager) clearSets(sb *Sandbox) {
	for _, e := range policyEntries(sb) {
		m.nl.IpsetDel(e.set, &e.entry)
	}
	res, err := m.nl.IpsetList(SetAllowAll)
	if err != nil {
		return
	}
	for _, e := range res.Entries {
		if e.IFace == sb.HostInterface {
			e.Timeout = nil
			m.nl.IpsetDel(SetAllowAll, &e)
		}
	}
}

// AllowLearned lets a sandbox reach addresses that DNS gave it for an
// allowed hostname, until ttl runs out: on every port when ports is empty,
// else on those ports (TCP and UDP).
func (m *Manager) AllowLearned(sandbox string, addrs []netip.Addr, ttl time.Duration, ports []uint16) {
	m.mu.RLock()
	sb, ok := m.byName[sandbox]
	m.mu.RUnlock()
	if !ok {
		return
	}
	secs := uint32(max(ttl, time.Second) / time.Second)
	for _, a := range addrs {
		if !a.Is4() {
			continue
		}
		e := &netlink.IPSetEntry{IP: net.IP(a.AsSlice()), CIDR: 32, IFace: sb.HostInterface, Timeout: &secs, Replace: true}
		if err := m.nl.IpsetAdd(SetAllowAll, e); err != nil {
			m.log.Warn("allowing a learned address", "sandbox", sandbox, "error", err)
		}
	}
}

// DenyLearned refuses a sandbox every protocol to addresses DNS gave (any
// sandbox) for a name that sandbox's policy denies, until ttl runs out.
func (m *Manager) DenyLearned(sandbox string, addrs []netip.Addr, ttl time.Duration) {
	// TODO(rules): a deny set entry per address, matched before any allow.
}
