package netns

import (
	"errors"
	"net/netip"
	"testing"
)

func TestPoolHandsOutSlash30sAndMapsAddressesBack(t *testing.T) {
	p, err := NewPool(netip.MustParsePrefix("10.213.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		slot     int
		gw, addr string
		subnet   string
	}{
		{0, "10.213.0.1", "10.213.0.2", "10.213.0.0/30"},
		{1, "10.213.0.5", "10.213.0.6", "10.213.0.4/30"},
		{64, "10.213.1.1", "10.213.1.2", "10.213.1.0/30"},
		{16383, "10.213.255.253", "10.213.255.254", "10.213.255.252/30"},
	}
	for _, tt := range tests {
		gw, a, sn := p.Link(tt.slot)
		if gw.String() != tt.gw || a.String() != tt.addr || sn.String() != tt.subnet {
			t.Errorf("slot %d: %s %s %s", tt.slot, gw, a, sn)
		}
		if s, ok := p.SlotOf(a); !ok || s != tt.slot {
			t.Errorf("SlotOf(%s) = %d %v", a, s, ok)
		}
	}
}

func TestPoolDoesNotReuseAFreedSlotAtOnceAndReportsExhaustion(t *testing.T) {
	p, _ := NewPool(netip.MustParsePrefix("10.0.0.0/29")) // two slots
	a, _ := p.Allocate()
	b, _ := p.Allocate()
	if a == b {
		t.Fatal("same slot twice")
	}
	if _, err := p.Allocate(); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("third allocate: %v, want ErrPoolExhausted", err)
	}
	p.Release(a)
	c, err := p.Allocate()
	if err != nil || c != a {
		t.Fatalf("after release got %d %v, want %d", c, err, a)
	}
	if err := p.Reserve(c); err == nil {
		t.Error("reserving a used slot succeeded")
	}
}

func TestPoolRejectsPrefixesTooSmallOrIPv6(t *testing.T) {
	for _, s := range []string{"10.0.0.0/30", "fd00::/64"} {
		if _, err := NewPool(netip.MustParsePrefix(s)); err == nil {
			t.Errorf("NewPool(%s) succeeded", s)
		}
	}
}

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"web1": true, "a": true, "my_container.1-x": true,
		"": false, "-x": false, "a/b": false, "a b": false, "../etc": false,
		"0123456789012345678901234567890123456789012345678901234567890123":  true,
		"01234567890123456789012345678901234567890123456789012345678901234": false,
	} {
		if ValidName(name) != want {
			t.Errorf("ValidName(%q) = %v", name, !want)
		}
	}
}
