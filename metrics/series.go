package metrics

import (
	"sync"
	"sync/atomic"
)

// Series caches what a metric vector returns for a label set, so that a hot
// path pays a map lookup instead of hashing its labels under the vector's
// lock on every call. Only for label sets that are never deleted (bounded
// ones: a handler, a kind and an operation); series with a sandbox label are
// dropped when the sandbox goes and must be looked up each time.
//
// Readers take no lock and allocate nothing (a sync.Map boxed each
// struct key into an interface: an allocation per lookup); a new label set
// copies the map, which happens a bounded number of times.
type Series[K comparable, V any] struct {
	m  atomic.Pointer[map[K]V]
	mu sync.Mutex // serialises additions
}

// Get returns the cached value for k, making it once with mk.
func (s *Series[K, V]) Get(k K, mk func() V) V {
	if m := s.m.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.m.Load()
	if old != nil {
		if v, ok := (*old)[k]; ok {
			return v
		}
	}
	next := make(map[K]V, 1)
	if old != nil {
		for k, v := range *old {
			next[k] = v
		}
	}
	v := mk()
	next[k] = v
	s.m.Store(&next)
	return v
}

// Last is one caller's last series, the per-caller counterpart of Series
// for label sets that include a sandbox: a connection or a socket reader
// is one sandbox's and mostly counts alike, so it keeps the series it
// counted into last and looks one up only when its labels change. It holds
// one entry, so it never grows and a change costs no allocation. Held for
// a deleted sandbox, it keeps counting into the series that was dropped
// (no longer exported) instead of recreating it. Not safe for concurrent
// use; the zero value is empty.
type Last[K comparable, V any] struct {
	k  K
	v  V
	ok bool
}

// Get returns the held value when k is the key it was made for, and
// otherwise makes one with mk and holds it. A nil Last holds nothing.
func (l *Last[K, V]) Get(k K, mk func() V) V {
	if l == nil {
		return mk()
	}
	if l.ok && l.k == k {
		return l.v
	}
	l.k, l.v, l.ok = k, mk(), true
	return l.v
}
