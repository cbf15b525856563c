package dnsshim

import (
	"sync"
	"time"
)

// limiter is a token bucket per sandbox: qps tokens a second, bursts of
// 2×qps. A sandbox flooding the shim is answered REFUSED beyond its rate, so
// it cannot starve the others of the shim's time.
type limiter struct {
	qps float64

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(qps int) *limiter {
	if qps <= 0 {
		return nil
	}
	return &limiter{qps: float64(qps), buckets: map[string]*bucket{}}
}

// allow takes a token for sandbox, if it has one.
func (l *limiter) allow(sandbox string, now time.Time) bool {
	if l == nil {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[sandbox]
	if b == nil {
		b = &bucket{tokens: 2 * l.qps, last: now}
		l.buckets[sandbox] = b
	}
	b.tokens = min(2*l.qps, b.tokens+now.Sub(b.last).Seconds()*l.qps)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// forget drops a deleted sandbox's bucket.
func (l *limiter) forget(sandbox string) {
	if l != nil {
		l.mu.Lock()
		delete(l.buckets, sandbox)
		l.mu.Unlock()
	}
}
