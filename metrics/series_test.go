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

func TestLastKeepsOnlyTheSeriesOfTheLastKeyAskedFor(t *testing.T) {
	var l Last[string, int]
	made := 0
	mk := func() int { made++; return made }
	steps := []struct {
		key        string
		want, made int
	}{
		{"x", 1, 1},
		{"x", 1, 1}, // held
		{"y", 2, 2}, // another key replaces it
		{"x", 3, 3}, // x was let go, so it is made again
		{"x", 3, 3},
	}
	for i, st := range steps {
		if got := l.Get(st.key, mk); got != st.want || made != st.made {
			t.Fatalf("step %d: Get(%q) = %d after %d makes, want %d after %d", i, st.key, got, made, st.want, st.made)
		}
	}
}

func TestANilLastMakesAValueOnEveryCall(t *testing.T) {
	var l *Last[string, int]
	made := 0
	mk := func() int { made++; return made }
	if a, b := l.Get("x", mk), l.Get("x", mk); a != 1 || b != 2 {
		t.Fatalf("a nil Last gave %d then %d, want 1 then 2 (made each time)", a, b)
	}
}
