package metrics_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/interceptd/interceptd/dnsshim"
	"github.com/interceptd/interceptd/metrics"
	"github.com/interceptd/interceptd/netns"
	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/forward"
	"github.com/interceptd/interceptd/router/httpserve"
	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/s3store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// recording keeps every collector registered through it.
type recording struct {
	prometheus.Registerer
	collectors []prometheus.Collector
}

func (r *recording) MustRegister(cs ...prometheus.Collector) {
	r.collectors = append(r.collectors, cs...)
	r.Registerer.MustRegister(cs...)
}

// registerAll registers every package's metrics, as the daemon does.
func registerAll(reg prometheus.Registerer) {
	store.NewMetrics(reg)
	s3store.NewMetrics(reg)
	netns.NewMetrics(reg)
	labels := metrics.NewSandboxLabels(10)
	netns.NewFlowMetrics(reg, labels)
	dnsshim.NewMetrics(reg, labels)
	router.NewMetrics(reg, labels)
	httpserve.NewMetrics(reg)
	forward.NewMetrics(reg)
	policy.NewMetrics(reg, labels)
}

var descRE = regexp.MustCompile(`fqName: "([^"]*)", help: "([^"]*)"`)

func TestEveryMetricIsNamedForItsSubsystemAndHasHelp(t *testing.T) {
	rec := &recording{Registerer: prometheus.NewRegistry()}
	registerAll(rec)
	subsystems := map[string]bool{"store": true, "sandbox": true, "dns": true, "router": true, "policy": true, "admin": true}
	n := 0
	for _, c := range rec.collectors {
		ch := make(chan *prometheus.Desc, 16)
		c.Describe(ch)
		close(ch)
		for d := range ch {
			m := descRE.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("cannot read %s", d)
			}
			name, help := m[1], m[2]
			n++
			parts := strings.SplitN(name, "_", 3)
			if len(parts) < 3 || parts[0] != "interceptd" || !subsystems[parts[1]] {
				t.Errorf("%s is not interceptd_<subsystem>_<name>", name)
			}
			if len(help) < 10 {
				t.Errorf("%s has no real help: %q", name, help)
			}
		}
	}
	if n < 12 {
		t.Errorf("only %d metrics described", n)
	}
}

func TestRegisteredMetricsPassPromlint(t *testing.T) {
	reg := metrics.NewRegistry("test")
	registerAll(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestCodeLabelIsBounded(t *testing.T) {
	for code, want := range map[int]string{200: "200", 404: "404", 599: "599", 0: "other", 99: "other", 600: "other", 99999: "other"} {
		if got := metrics.CodeLabel(code); got != want {
			t.Errorf("CodeLabel(%d) = %q, want %q", code, got, want)
		}
	}
}
