package store

import (
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/interceptd/interceptd/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestUsageSeriesComeFromTheEngineThatKeepsEachKindAndAreAbsentWhileItCannotBeRead(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	labels := metrics.NewSandboxLabels(10)
	labels.Get("web")
	m.LabelSandboxes(labels)
	db := openTest(t, &Options{Metrics: m})
	// The bbolt file holds a blob-sized kv entry of web's that the other
	// engine does not: with KV elsewhere it must not be counted.
	mustPut(t, db.Keys(KindKV, "ns", SandboxScope("web"), Limits{}), "local", Entry{Value: []byte("0123456789"), Owner: "web"})
	var remoteErr error
	m.UsageFrom("etcd", []string{KindKV, KindState}, func() (map[string]Amounts, error) {
		if remoteErr != nil {
			return nil, remoteErr
		}
		return map[string]Amounts{
			"web":       {KV: Amount{Bytes: 100, Keys: 2}, State: Amount{Bytes: 7, Keys: 1}},
			"elsewhere": {KV: Amount{Bytes: 1000, Keys: 10}}, // a sandbox of another host
		}, nil
	})

	cases := []struct {
		name      string
		remoteErr error
		want      string
	}{
		{"with etcd readable, kv and state are etcd's figures and blob the file's", nil, `
# HELP interceptd_store_usage_bytes Bytes that the writes charged to a sandbox occupy (keys, values, metadata, objects, uploads in progress).
# TYPE interceptd_store_usage_bytes gauge
interceptd_store_usage_bytes{kind="kv",sandbox="_other"} 1000
interceptd_store_usage_bytes{kind="kv",sandbox="web"} 100
interceptd_store_usage_bytes{kind="state",sandbox="_other"} 0
interceptd_store_usage_bytes{kind="state",sandbox="web"} 7
interceptd_store_usage_bytes{kind="blob",sandbox="web"} 0
interceptd_store_usage_bytes{kind="do",sandbox="web"} 0
# HELP interceptd_store_usage_engine 1 for the engine each kind's usage series are read from (bbolt: this host's file; etcd: the fleet's counters; s3: the S3 blobs' ledger), 0 while it cannot be read.
# TYPE interceptd_store_usage_engine gauge
interceptd_store_usage_engine{engine="bbolt",kind="blob"} 1
interceptd_store_usage_engine{engine="bbolt",kind="do"} 1
interceptd_store_usage_engine{engine="etcd",kind="kv"} 1
interceptd_store_usage_engine{engine="etcd",kind="state"} 1
`},
		{"with etcd unreadable, kv and state have no series rather than zeros, and the engine series says 0", errors.New("store_unavailable"), `
# HELP interceptd_store_usage_bytes Bytes that the writes charged to a sandbox occupy (keys, values, metadata, objects, uploads in progress).
# TYPE interceptd_store_usage_bytes gauge
interceptd_store_usage_bytes{kind="blob",sandbox="web"} 0
interceptd_store_usage_bytes{kind="do",sandbox="web"} 0
# HELP interceptd_store_usage_engine 1 for the engine each kind's usage series are read from (bbolt: this host's file; etcd: the fleet's counters; s3: the S3 blobs' ledger), 0 while it cannot be read.
# TYPE interceptd_store_usage_engine gauge
interceptd_store_usage_engine{engine="bbolt",kind="blob"} 1
interceptd_store_usage_engine{engine="bbolt",kind="do"} 1
interceptd_store_usage_engine{engine="etcd",kind="kv"} 0
interceptd_store_usage_engine{engine="etcd",kind="state"} 0
`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			remoteErr = c.remoteErr
			if err := testutil.GatherAndCompare(reg, strings.NewReader(c.want), "interceptd_store_usage_bytes", "interceptd_store_usage_engine"); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestUsageSeriesOfABboltOnlyDaemonNameBboltAsTheirEngine(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.LabelSandboxes(metrics.NewSandboxLabels(10))
	db := openTest(t, &Options{Metrics: m})
	mustPut(t, db.Keys(KindKV, "ns", SandboxScope("web"), Limits{}), "k", Entry{Value: []byte("v"), Owner: "web"})
	want := `
# HELP interceptd_store_usage_keys Keys (objects, for blobs) that the writes charged to a sandbox occupy.
# TYPE interceptd_store_usage_keys gauge
interceptd_store_usage_keys{kind="blob",sandbox="_other"} 0
interceptd_store_usage_keys{kind="do",sandbox="_other"} 0
interceptd_store_usage_keys{kind="kv",sandbox="_other"} 1
interceptd_store_usage_keys{kind="state",sandbox="_other"} 0
# HELP interceptd_store_usage_engine 1 for the engine each kind's usage series are read from (bbolt: this host's file; etcd: the fleet's counters; s3: the S3 blobs' ledger), 0 while it cannot be read.
# TYPE interceptd_store_usage_engine gauge
interceptd_store_usage_engine{engine="bbolt",kind="blob"} 1
interceptd_store_usage_engine{engine="bbolt",kind="do"} 1
interceptd_store_usage_engine{engine="bbolt",kind="kv"} 1
interceptd_store_usage_engine{engine="bbolt",kind="state"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "interceptd_store_usage_keys", "interceptd_store_usage_engine"); err != nil {
		t.Error(err)
	}
}

func TestUsageSeriesOfKindsFromSeveralEnginesComeEachFromTheLastThatClaimedItAndEachIsReadOncePerScrape(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	labels := metrics.NewSandboxLabels(10)
	labels.Get("web")
	m.LabelSandboxes(labels)
	db := openTest(t, &Options{Metrics: m})
	// A blob-sized kv entry in the file: kv is etcd's, so it is not counted.
	mustPut(t, db.Keys(KindKV, "ns", SandboxScope("web"), Limits{}), "local", Entry{Value: []byte("0123456789"), Owner: "web"})
	reads := map[string]int{}
	var s3Err error
	m.UsageFrom("etcd", []string{KindKV, KindState}, func() (map[string]Amounts, error) {
		reads["etcd"]++
		// Blob figures etcd has no say in: the ledger's are the series.
		return map[string]Amounts{"web": {KV: Amount{Bytes: 100, Keys: 2}, Blob: Amount{Bytes: 1, Keys: 1}}}, nil
	})
	m.UsageFrom("gone", []string{KindDO}, func() (map[string]Amounts, error) {
		reads["gone"]++
		return nil, errors.New("overridden: never read")
	})
	m.UsageFrom("s3", []string{KindBlob, KindDO}, func() (map[string]Amounts, error) {
		reads["s3"]++
		if s3Err != nil {
			return nil, s3Err
		}
		return map[string]Amounts{"web": {Blob: Amount{Bytes: 500, Keys: 3}, KV: Amount{Bytes: 9}}}, nil
	})

	cases := []struct {
		name  string
		s3Err error
		want  string
	}{
		{"with both readable", nil, `
# HELP interceptd_store_usage_bytes Bytes that the writes charged to a sandbox occupy (keys, values, metadata, objects, uploads in progress).
# TYPE interceptd_store_usage_bytes gauge
interceptd_store_usage_bytes{kind="blob",sandbox="web"} 500
interceptd_store_usage_bytes{kind="do",sandbox="web"} 0
interceptd_store_usage_bytes{kind="kv",sandbox="web"} 100
interceptd_store_usage_bytes{kind="state",sandbox="web"} 0
# HELP interceptd_store_usage_engine 1 for the engine each kind's usage series are read from (bbolt: this host's file; etcd: the fleet's counters; s3: the S3 blobs' ledger), 0 while it cannot be read.
# TYPE interceptd_store_usage_engine gauge
interceptd_store_usage_engine{engine="etcd",kind="kv"} 1
interceptd_store_usage_engine{engine="etcd",kind="state"} 1
interceptd_store_usage_engine{engine="s3",kind="blob"} 1
interceptd_store_usage_engine{engine="s3",kind="do"} 1
`},
		{"with s3 unreadable, its kinds are absent and etcd's still there", errors.New("store_unavailable"), `
# HELP interceptd_store_usage_bytes Bytes that the writes charged to a sandbox occupy (keys, values, metadata, objects, uploads in progress).
# TYPE interceptd_store_usage_bytes gauge
interceptd_store_usage_bytes{kind="kv",sandbox="web"} 100
interceptd_store_usage_bytes{kind="state",sandbox="web"} 0
# HELP interceptd_store_usage_engine 1 for the engine each kind's usage series are read from (bbolt: this host's file; etcd: the fleet's counters; s3: the S3 blobs' ledger), 0 while it cannot be read.
# TYPE interceptd_store_usage_engine gauge
interceptd_store_usage_engine{engine="etcd",kind="kv"} 1
interceptd_store_usage_engine{engine="etcd",kind="state"} 1
interceptd_store_usage_engine{engine="s3",kind="blob"} 0
interceptd_store_usage_engine{engine="s3",kind="do"} 0
`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s3Err = c.s3Err
			clear(reads)
			if err := testutil.GatherAndCompare(reg, strings.NewReader(c.want), "interceptd_store_usage_bytes", "interceptd_store_usage_engine"); err != nil {
				t.Error(err)
			}
			if want := map[string]int{"etcd": 1, "s3": 1}; !maps.Equal(reads, want) {
				t.Errorf("reads of each source in one scrape: %v, want %v", reads, want)
			}
		})
	}
}
