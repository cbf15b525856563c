package netns

import (
	"errors"
	"fmt"
	"net/netip"
)

// ErrPoolExhausted is returned when every /30 of the pool is in use.
var ErrPoolExhausted = errors.New("address pool exhausted")

// Pool hands out one /30 per sandbox: .0 network, .1 the gateway on the host
// side, .2 the sandbox, .3 broadcast. A /30 per link keeps every sandbox on a
// subnet of its own, which is what makes strict reverse-path filtering an
// anti-spoofing check: another sandbox's address routes out another interface.
type Pool struct {
	prefix netip.Prefix
	slots  int
	used   map[int]bool
	next   int
}

// NewPool returns a pool over prefix, which must be IPv4 and /29 or larger.
func NewPool(prefix netip.Prefix) (*Pool, error) {
	if !prefix.Addr().Is4() || prefix.Bits() > 29 {
		return nil, fmt.Errorf("pool %s: need an IPv4 prefix of /29 or larger", prefix)
	}
	return &Pool{prefix: prefix.Masked(), slots: 1 << (30 - prefix.Bits()), used: map[int]bool{}}, nil
}

// Prefix is the whole pool.
func (p *Pool) Prefix() netip.Prefix { return p.prefix }

// Allocate reserves the lowest free slot after the last one handed out, so a
// just-freed address is not reused at once (stale conntrack entries and DNS
// caches in a reader's hands then point nowhere rather than at a newcomer).
func (p *Pool) Allocate() (int, error) {
	for i := 0; i < p.slots; i++ {
		s := (p.next + i) % p.slots
		if !p.used[s] {
			p.used[s] = true
			p.next = (s + 1) % p.slots
			return s, nil
		}
	}
	return 0, fmt.Errorf("%w: %d sandboxes in %s", ErrPoolExhausted, p.slots, p.prefix)
}

// Reserve marks slot as used (re-adopting an existing sandbox).
func (p *Pool) Reserve(slot int) error {
	if slot < 0 || slot >= p.slots {
		return fmt.Errorf("slot %d outside pool %s", slot, p.prefix)
	}
	if p.used[slot] {
		return fmt.Errorf("slot %d already in use", slot)
	}
	p.used[slot] = true
	return nil
}

// Release frees slot.
func (p *Pool) Release(slot int) { delete(p.used, slot) }

// Link returns the /30 of slot: the gateway (host side) and sandbox addresses.
func (p *Pool) Link(slot int) (gateway, addr netip.Addr, subnet netip.Prefix) {
	b := p.prefix.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(slot) * 4
	at := func(off uint32) netip.Addr {
		x := v + off
		return netip.AddrFrom4([4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)})
	}
	return at(1), at(2), netip.PrefixFrom(at(0), 30)
}

// SlotOf returns the slot that addr (a gateway or sandbox address) is in.
func (p *Pool) SlotOf(addr netip.Addr) (int, bool) {
	if !p.prefix.Contains(addr) {
		return 0, false
	}
	a, b := addr.As4(), p.prefix.Addr().As4()
	d := (uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])) -
		(uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]))
	return int(d / 4), true
}
