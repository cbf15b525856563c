package metrics

import (
	"sync"
	"testing"
)

func TestASeriesIsMadeOnceForItsKey(t *testing.T) {
	var s Series[string, *int]
	made := 0
	mk := func() *int { made++; v := made; return &v }
	a, b, c := s.Get("x", mk), s.Get("x", mk), s.Get("y", mk)
	if a != b || a == c || made != 2 {
		t.Fatalf("x twice gave %p and %p, y %p; made %d times, want 2", a, b, c, made)
	}
}

func TestConcurrentGetsAgreeOnOneValuePerKey(t *testing.T) {
	var s Series[int, *int]
	var wg sync.WaitGroup
	got := make([][]*int, 8)
	for g := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range 50 {
				got[g] = append(got[g], s.Get(k, func() *int { v := k; return &v }))
			}
		}()
	}
	wg.Wait()
	for g := range got {
		for k, p := range got[g] {
			if p != got[0][k] || *p != k {
				t.Fatalf("goroutine %d got %p (%d) for key %d, goroutine 0 %p", g, p, *p, k, got[0][k])
			}
		}
	}
}

func BenchmarkSeriesGetOfAStructKey(b *testing.B) {
	type key struct{ kind, op, result string }
	var s Series[key, *int]
	k := key{"kv", "get", "ok"}
	s.Get(k, func() *int { return new(int) })
	b.ReportAllocs()
	for b.Loop() {
		s.Get(k, nil)
	}
}
