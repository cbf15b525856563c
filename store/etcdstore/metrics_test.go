package etcdstore_test

import (
	"os"
	"strings"
	"testing"

	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/etcdstore"
	"github.com/interceptd/interceptd/store/etcdstore/etcdtest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

func TestTheEtcdMetricsAreLintedDocumentedAndCarryNoKeyOrAddress(t *testing.T) {
	c := etcdtest.Start(t)
	reg := prometheus.NewRegistry()
	s := open(t, c.Endpoints(), "/metrics/", etcdstore.Options{Metrics: etcdstore.NewMetrics(reg)})
	waitLive(t, s)
	kv := s.Keys(store.KindKV, "ns", store.SandboxScope("sb"), store.Limits{})
	const secretKey = "a-key-that-must-not-be-a-label"
	kv.Put(secretKey, store.Entry{Value: []byte("v"), Owner: "sb"})
	kv.Get(secretKey)
	kv.Get(secretKey)
	kv.List(store.ListOptions{})
	kv.Apply(store.Txn{Reads: []string{secretKey}})
	kv.Delete(secretKey)
	s.Usage("sb")
	s.Sweep()

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
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if !strings.Contains(string(doc), "`"+mf.GetName()+"`") {
			t.Errorf("docs/metrics.md does not document %s", mf.GetName())
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				v := l.GetValue()
				if strings.Contains(v, secretKey) || strings.Contains(v, "127.0.0.1") || strings.Contains(v, "/") {
					t.Errorf("%s has label %s=%q: a key, an address or a path", mf.GetName(), l.GetName(), v)
				}
				if l.GetName() == "op" && !strings.Contains(string(doc), " "+v+",") && !strings.Contains(string(doc), "("+v+",") && !strings.Contains(string(doc), " "+v+")") {
					t.Errorf("docs/metrics.md does not list op %q", v)
				}
			}
		}
	}
}
