package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Sum adds up the values of the counters and gauges c exports now, keeping
// only the series keep accepts (all of them when keep is nil). It is how a
// package reads a total out of its own metric objects for
// `interceptd status`, so that the status and /metrics cannot disagree.
func Sum(c prometheus.Collector, keep func(labels map[string]string) bool) float64 {
	ch := make(chan prometheus.Metric)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	var n float64
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			continue
		}
		if keep != nil {
			labels := make(map[string]string, len(pb.Label))
			for _, l := range pb.Label {
				labels[l.GetName()] = l.GetValue()
			}
			if !keep(labels) {
				continue
			}
		}
		switch {
		case pb.Counter != nil:
			n += pb.Counter.GetValue()
		case pb.Gauge != nil:
			n += pb.Gauge.GetValue()
		}
	}
	return n
}
