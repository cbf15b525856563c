// Package ratelimit is a token bucket per key (a sandbox): the DNS shim and
// the router each keep one, so that one sandbox's flood of queries or
// requests is answered "too many" instead of starving the others of the
// daemon's time.
package ratelimit

import (
	"sync"
	"sync/atomic"
	"time"
)

// PerKey grants each key a rate of tokens a second, in bursts of up to
// twice that: the default rate (New, SetRate), or a key's own (AllowAt: a
// sandbox with limits of its own). A nil *PerKey allows everything.
type PerKey struct {
	rate atomic.Int64 // the default rate; <= 0: no limit

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// New returns a limiter whose default rate is rate per second per key;
// rate <= 0 means no limit by default.
func New(rate int) *PerKey {
	l := &PerKey{buckets: map[string]*bucket{}}
	l.rate.Store(int64(rate))
	return l
}

// SetRate changes the default rate (a config reload); the buckets keep
// what they hold, up to the new burst.
func (l *PerKey) SetRate(rate int) { l.rate.Store(int64(rate)) }

// Rate is the default rate.
func (l *PerKey) Rate() int {
	if l == nil {
		return 0
	}
	return int(l.rate.Load())
}

// Allow takes a token for key at now under the default rate, if it has one.
func (l *PerKey) Allow(key string, now time.Time) bool {
	if l == nil {
		return true
	}
	return l.AllowAt(key, int(l.rate.Load()), now)
}

// AllowAt takes a token for key at now under rate (<= 0: no limit). A key
// whose rate changed keeps its tokens, up to twice the new rate.
func (l *PerKey) AllowAt(key string, rate int, now time.Time) bool {
	if l == nil || rate <= 0 {
		return true
	}
	r := float64(rate)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		b = &bucket{tokens: 2 * r, last: now}
		l.buckets[key] = b
	}
	// Callers racing with their clocks may arrive out of order: time that
	// went backwards earns nothing and costs nothing.
	if el := now.Sub(b.last); el > 0 {
		b.tokens += el.Seconds() * r
		b.last = now
	}
	b.tokens = min(2*r, b.tokens)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Forget drops a key's bucket (a deleted sandbox).
func (l *PerKey) Forget(key string) {
	if l != nil {
		l.mu.Lock()
		delete(l.buckets, key)
		l.mu.Unlock()
	}
}
