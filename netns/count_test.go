package netns

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Count is what `interceptd status` reports as sandboxes: it must follow
// creates and deletes as interceptd_sandbox_active does.
func TestCountIsTheSandboxesThatExistAsTheActiveGaugeSays(t *testing.T) {
	e := newFakeEnv(t, "10.213.0.0/28", nil)
	e.m.cfg.Metrics = NewMetrics(prometheus.NewRegistry())
	e.setup(t)
	check := func(step string, want int) {
		t.Helper()
		if got, gauge := e.m.Count(), testutil.ToFloat64(e.m.cfg.Metrics.active); got != want || gauge != float64(want) {
			t.Errorf("%s: Count %d, interceptd_sandbox_active %v, want %d", step, got, gauge, want)
		}
	}
	check("before any sandbox", 0)
	for _, n := range []string{"a", "b", "c"} {
		if _, err := e.m.Create(n, nil); err != nil {
			t.Fatal(err)
		}
	}
	check("after three creates", 3)
	if err := e.m.Delete("b"); err != nil {
		t.Fatal(err)
	}
	check("after a delete", 2)
}
