// Package ratelimit is a token bucket per key (a sandbox): the DNS shim and
// the router each keep one, so that one sandbox's flood of queries or
// requests is answered "too many" instead of starving the others of the
// daemon's time.
package ratelimit

import (
	"sync"
	"time"
)

// PerKey grants each key rate tokens a second, in bursts of up to twice
// that. A nil *PerKey allows everything.
type PerKey struct {
	rate float64

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// New returns a limiter of rate per second per key; rate <= 0 means no
// limit (nil).
func New(rate int) *PerKey {
	if rate <= 0 {
		return nil
	}
	return &PerKey{rate: float64(rate), buckets: map[string]*bucket{}}
}

// Allow takes a token for key at now, if it has one.
func (l *PerKey) Allow(key string, now time.Time) bool {
	if l == nil {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		b = &bucket{tokens: 2 * l.rate, last: now}
		l.buckets[key] = b
	}
	// Callers racing with their clocks may arrive out of order: time that
	// went backwards earns nothing and costs nothing.
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(2*l.rate, b.tokens+el.Seconds()*l.rate)
		b.last = now
	}
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
