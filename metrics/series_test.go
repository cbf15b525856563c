package metrics

import "testing"

func TestASeriesIsMadeOnceForItsKey(t *testing.T) {
	var s Series[string, *int]
	made := 0
	mk := func() *int { made++; v := made; return &v }
	a, b, c := s.Get("x", mk), s.Get("x", mk), s.Get("y", mk)
	if a != b || a == c || made != 2 {
		t.Fatalf("x twice gave %p and %p, y %p; made %d times, want 2", a, b, c, made)
	}
}
