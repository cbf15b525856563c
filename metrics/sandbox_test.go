package metrics

import (
	"testing"
	"time"

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

func TestADeletedSandboxsSeriesStayForTheGraceUnlessItComesBack(t *testing.T) {
	s := NewSandboxLabels(10)
	s.Grace = 50 * time.Millisecond
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "x"}, []string{"sandbox"})
	s.Track(vec)
	vec.WithLabelValues(s.Get("short")).Inc()
	vec.WithLabelValues(s.Get("back")).Inc()
	s.Release("short")
	s.Release("back")
	if n := testutil.CollectAndCount(vec); n != 2 {
		t.Fatalf("%d series right after the releases, want both kept for the grace", n)
	}
	s.Get("back") // made again within the grace
	time.Sleep(200 * time.Millisecond)
	if n := testutil.CollectAndCount(vec); n != 1 || testutil.ToFloat64(vec.WithLabelValues("back")) != 1 {
		t.Errorf("%d series after the grace, want only the sandbox that came back", n)
	}
}
