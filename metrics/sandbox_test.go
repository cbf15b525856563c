package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestSandboxLabelsAreCappedAndFreedOnRelease(t *testing.T) {
	s := NewSandboxLabels(2)
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "x"}, []string{"sandbox"})
	s.Track(vec)
	for _, tt := range []struct{ sandbox, want string }{
		{"a", "a"}, {"b", "b"}, {"c", OtherSandbox}, {"a", "a"}, {"", NoSandbox},
	} {
		got := s.Get(tt.sandbox)
		if got != tt.want {
			t.Errorf("Get(%q) = %q, want %q", tt.sandbox, got, tt.want)
		}
		vec.WithLabelValues(got).Inc()
	}
	s.Release("a")
	if n := testutil.CollectAndCount(vec); n != 3 { // b, _other, _none
		t.Errorf("%d series after releasing a, want 3", n)
	}
	if got := s.Get("c"); got != "c" {
		t.Errorf("a freed slot went to %q", got)
	}
}
