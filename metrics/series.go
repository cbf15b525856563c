package metrics

import "sync"

// Series caches what a metric vector returns for a label set, so that a hot
// path pays a map lookup instead of hashing its labels under the vector's
// lock on every call. Only for label sets that are never deleted (bounded
// ones: a handler, a kind and an operation); series with a sandbox label are
// dropped when the sandbox goes and must be looked up each time.
type Series[K comparable, V any] struct{ m sync.Map }

// Get returns the cached value for k, making it once with mk.
func (s *Series[K, V]) Get(k K, mk func() V) V {
	if v, ok := s.m.Load(k); ok {
		return v.(V)
	}
	v, _ := s.m.LoadOrStore(k, mk())
	return v.(V)
}
