package policy

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// testBook is an AddrBook on a clock the test moves.
type testBook struct {
	*AddrBook
	mu sync.Mutex
	t  time.Time
}

func newTestBook() *testBook {
	tb := &testBook{AddrBook: &AddrBook{}, t: time.Unix(1_000_000, 0)}
	tb.clock = func() time.Time { tb.mu.Lock(); defer tb.mu.Unlock(); return tb.t }
	return tb
}

func (tb *testBook) advance(d time.Duration) { tb.mu.Lock(); tb.t = tb.t.Add(d); tb.mu.Unlock() }

var (
	addrA = netip.MustParseAddr("192.0.2.3")
	addrB = netip.MustParseAddr("192.0.2.4")
)

func TestTheBookKnowsOnlyWhatDNSToldThatSandbox(t *testing.T) {
	b := newTestBook()
	b.Learn("s1", "API.Example.test.", []netip.Addr{addrA}, time.Minute)
	b.Learn("s1", "empty.test", nil, time.Minute) // an answer without addresses teaches nothing
	tests := []struct {
		name    string
		sandbox string
		host    string
		addr    netip.Addr
		want    bool
	}{
		{"the sandbox that asked knows the answer", "s1", "api.example.test", addrA, true},
		{"names match without case or a trailing dot", "s1", "api.EXAMPLE.test.", addrA, true},
		{"an IPv4-mapped address is the same address", "s1", "api.example.test", netip.MustParseAddr("::ffff:192.0.2.3"), true},
		{"another address of the name is not known", "s1", "api.example.test", addrB, false},
		{"another name at the address is not known", "s1", "other.test", addrA, false},
		{"another sandbox was told nothing", "s2", "api.example.test", addrA, false},
		{"the daemon's own answers are kept apart", "", "api.example.test", addrA, false},
		{"an answer without addresses is not kept", "s1", "empty.test", addrA, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := b.Knows(tt.sandbox, tt.host, tt.addr); got != tt.want {
				t.Errorf("Knows(%q, %q, %s) = %v, want %v", tt.sandbox, tt.host, tt.addr, got, tt.want)
			}
		})
	}
}

func TestAnAnswerIsKnownForItsTTLAndNoLonger(t *testing.T) {
	tests := []struct {
		name      string
		ttl       time.Duration
		refreshed time.Duration // learned again after this long (0: not)
		at        time.Duration
		want      bool
	}{
		{"within the TTL", time.Minute, 0, 59 * time.Second, true},
		{"at the TTL", time.Minute, 0, time.Minute, false},
		{"after the TTL", time.Minute, 0, time.Hour, false},
		{"a TTL under a second counts as one", 0, 0, 999 * time.Millisecond, true},
		{"and ends after it", 0, 0, time.Second, false},
		{"a new answer extends the old", time.Minute, 50 * time.Second, 100 * time.Second, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newTestBook()
			b.Learn("s1", "a.test", []netip.Addr{addrA}, tt.ttl)
			if tt.refreshed > 0 {
				b.advance(tt.refreshed)
				b.Learn("s1", "a.test", []netip.Addr{addrA}, tt.ttl)
				b.advance(tt.at - tt.refreshed)
			} else {
				b.advance(tt.at)
			}
			if got := b.Knows("s1", "a.test", addrA); got != tt.want {
				t.Errorf("Knows after %v = %v, want %v", tt.at, got, tt.want)
			}
			if got := len(b.NamesOf(addrA)) == 1; got != tt.want {
				t.Errorf("NamesOf after %v holds the name: %v, want %v", tt.at, got, tt.want)
			}
		})
	}
}

func TestForgetDropsOneSandboxsAnswersOnly(t *testing.T) {
	b := newTestBook()
	b.Learn("s1", "a.test", []netip.Addr{addrA}, time.Minute)
	b.Learn("s2", "a.test", []netip.Addr{addrA}, time.Minute)
	b.Forget("s1")
	if b.Knows("s1", "a.test", addrA) {
		t.Error("a forgotten sandbox still knows its answer")
	}
	if !b.Knows("s2", "a.test", addrA) {
		t.Error("forgetting s1 dropped s2's answer")
	}
	b.Forget("never-seen") // no panic, no effect
	if !b.Knows("s2", "a.test", addrA) {
		t.Error("forgetting an unknown sandbox dropped s2's answer")
	}
}

func TestASandboxCanMakeTheBookKeepAtMost4096Names(t *testing.T) {
	if maxNamesPerSandbox != 4096 {
		t.Fatalf("maxNamesPerSandbox = %d; docs/security.md says 4,096", maxNamesPerSandbox)
	}
	b := newTestBook()
	for i := range maxNamesPerSandbox {
		b.Learn("flood", fmt.Sprintf("n%d.test", i), []netip.Addr{addrA}, time.Minute)
	}
	if !b.Knows("flood", "n4095.test", addrA) {
		t.Fatal("the 4,096th name was not kept")
	}
	b.Learn("flood", "over.test", []netip.Addr{addrA}, time.Hour)
	if b.Knows("flood", "over.test", addrA) {
		t.Error("a name past the cap was kept")
	}
	b.Learn("other", "over.test", []netip.Addr{addrA}, time.Minute)
	if !b.Knows("other", "over.test", addrA) {
		t.Error("one sandbox's full book kept another's answer out")
	}
	// Once the flood's answers expire, room is made from them.
	b.advance(2 * time.Minute)
	b.Learn("flood", "later.test", []netip.Addr{addrA}, time.Minute)
	if !b.Knows("flood", "later.test", addrA) {
		t.Error("a full book of expired answers kept a new one out")
	}
}
