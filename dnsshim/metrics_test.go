package dnsshim

import (
	"testing"
	"time"

	"github.com/interceptd/interceptd/metrics"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestQueriesAreCountedUnderTheirOwnLabelsWhateverTheCachedSeries(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry(), metrics.NewSandboxLabels(10))
	var qs querySeries // one reader's
	steps := []struct {
		qs      *querySeries
		answer  string
		sandbox string
		rcode   int
	}{
		{&qs, AnswerHandler, "a", dns.RcodeSuccess},
		{&qs, AnswerHandler, "a", dns.RcodeSuccess}, // from the cached series
		{&qs, AnswerDenied, "a", dns.RcodeRefused},  // another answer
		{&qs, AnswerHandler, "a", dns.RcodeSuccess},
		{&qs, AnswerHandler, "b", dns.RcodeSuccess}, // another sandbox
		{nil, AnswerHandler, "a", dns.RcodeSuccess}, // no cache (the full path)
	}
	for _, st := range steps {
		m.observe(st.qs, st.answer, st.sandbox, st.rcode, time.Now())
	}
	for _, want := range []struct {
		labels []string
		n      float64
	}{
		{[]string{AnswerHandler, "NOERROR", "a"}, 4},
		{[]string{AnswerDenied, "REFUSED", "a"}, 1},
		{[]string{AnswerHandler, "NOERROR", "b"}, 1},
	} {
		if got := testutil.ToFloat64(m.queries.WithLabelValues(want.labels...)); got != want.n {
			t.Errorf("%v counted %v, want %v", want.labels, got, want.n)
		}
	}
	if n := testutil.CollectAndCount(m.duration); n != 2 {
		t.Errorf("%d duration series, want one per answer kind (2)", n)
	}
}

func TestQueriesIsEveryQueryCountedWhateverItsAnswer(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry(), metrics.NewSandboxLabels(10))
	if got := m.Queries(); got != 0 {
		t.Errorf("before any query: %d", got)
	}
	m.observe(nil, AnswerHandler, "a", dns.RcodeSuccess, time.Now())
	m.observe(nil, AnswerDenied, "a", dns.RcodeRefused, time.Now())
	m.observe(nil, AnswerHandler, "b", dns.RcodeNameError, time.Now())
	if got := m.Queries(); got != 3 {
		t.Errorf("Queries = %d, want 3", got)
	}
}
