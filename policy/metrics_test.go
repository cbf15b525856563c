package policy

import (
	"testing"

	"github.com/interceptd/interceptd/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestDecisionsAreCountedUnderTheirOwnLabelsWhateverTheCachedSeries(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry(), metrics.NewSandboxLabels(10))
	allow := Decision{Result: Forward, Reason: "allowed"}
	deny := Decision{Result: Deny, Reason: ReasonProtected}
	var s Series // one connection's
	steps := []struct {
		series   *Series
		protocol string
		sandbox  string
		d        Decision
	}{
		{&s, "http", "a", allow},
		{&s, "http", "a", allow}, // from the cached series
		{&s, "http", "a", deny},  // another outcome
		{&s, "http", "a", allow},
		{&s, "http", "b", allow}, // another sandbox
		{nil, "dns", "a", allow}, // no cache
		{&s, "dns", "a", allow},  // another protocol
	}
	for _, st := range steps {
		m.ObserveInto(st.series, st.protocol, st.sandbox, st.d)
	}
	for _, want := range []struct {
		labels []string
		n      float64
	}{
		{[]string{"http", string(Forward), "allowed", "a"}, 3},
		{[]string{"http", string(Deny), ReasonProtected, "a"}, 1},
		{[]string{"http", string(Forward), "allowed", "b"}, 1},
		{[]string{"dns", string(Forward), "allowed", "a"}, 2},
	} {
		if got := testutil.ToFloat64(m.decisions.WithLabelValues(want.labels...)); got != want.n {
			t.Errorf("%v counted %v, want %v", want.labels, got, want.n)
		}
	}
}

func TestDenialsCountTheDenyDecisionsOfEveryProtocolAndNothingElse(t *testing.T) {
	labels := metrics.NewSandboxLabels(10)
	m := NewMetrics(prometheus.NewRegistry(), labels)
	deny := Decision{Result: Deny, Reason: ReasonProtected}
	m.Observe("http", "a", deny)
	m.Observe("http", "a", deny)
	m.Observe("dns", "b", Decision{Result: Deny, Reason: "not_allowed"})
	m.Observe("http", "a", Decision{Result: Forward, Reason: "allowed"})
	m.Observe("http", "b", Decision{Result: Handler, Reason: "handler"})
	if got := m.Denials(); got != 3 {
		t.Errorf("Denials = %d, want 3 (two http, one dns; not the forward or the handler)", got)
	}
}
