package metrics_test

import (
	"testing"

	"github.com/interceptd/interceptd/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

func TestSumAddsTheSeriesAMetricExportsNow(t *testing.T) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "t_total", Help: "t"}, []string{"result"})
	vec.WithLabelValues("deny").Add(4)
	vec.WithLabelValues("forward").Add(9)
	vec.WithLabelValues("deny_too").Add(1)
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g", Help: "g"})
	gauge.Set(3)
	deny := func(l map[string]string) bool { return l["result"] == "deny" }
	for _, tc := range []struct {
		name string
		c    prometheus.Collector
		keep func(map[string]string) bool
		want float64
	}{
		{"every series of a vector counts without a filter", vec, nil, 14},
		{"only the series the filter keeps count with one", vec, deny, 4},
		{"a gauge counts its value", gauge, nil, 3},
		{"an empty vector sums to nothing", prometheus.NewCounterVec(prometheus.CounterOpts{Name: "e", Help: "e"}, []string{"x"}), nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := metrics.Sum(tc.c, tc.keep); got != tc.want {
				t.Errorf("Sum = %v, want %v", got, tc.want)
			}
		})
	}
	vec.DeleteLabelValues("forward")
	if got := metrics.Sum(vec, nil); got != 5 {
		t.Errorf("after a series is deleted: %v, want 5 (what /metrics shows)", got)
	}
}
