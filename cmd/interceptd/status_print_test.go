package main

import (
	"strings"
	"testing"

	"github.com/interceptd/interceptd/internal/admin"
	"github.com/interceptd/interceptd/store"
)

func TestStatusSaysWhichEngineTheUsageComesFromAndUnavailableRatherThanZero(t *testing.T) {
	usage := store.Amounts{KV: store.Amount{Bytes: 3 << 20, Keys: 12}, State: store.Amount{Bytes: 1 << 20, Keys: 2}, Blob: store.Amount{Bytes: 0, Keys: 0}}
	etcd := map[string]string{"kv": "etcd", "state": "etcd", "blob": "bbolt", "do": "bbolt"}
	cases := []struct {
		name          string
		st            admin.Status
		want, notWant []string
	}{
		{"bbolt alone: as before, no engine named",
			admin.Status{StoreUsage: usage, StoreEngines: map[string]string{"kv": "bbolt", "state": "bbolt", "blob": "bbolt", "do": "bbolt"}},
			[]string{"kv 3.0 MiB in 12 keys, state 1.0 MiB in 2 keys, blob 0.0 MiB in 0 objects (charged to sandboxes)"},
			[]string{"etcd", "unavailable"}},
		{"etcd answering: kv and state marked as the fleet's",
			admin.Status{StoreUsage: usage, StoreEngines: etcd},
			[]string{"kv 3.0 MiB in 12 keys (etcd, fleet-wide)", "state 1.0 MiB in 2 keys (etcd, fleet-wide)", "blob 0.0 MiB in 0 objects", "the rest from this host's bbolt file"},
			[]string{"unavailable"}},
		{"etcd down: kv and state unavailable with the reason, no zeros for them",
			admin.Status{StoreUsage: store.Amounts{}, StoreEngines: etcd,
				StoreUnavailable: &admin.Outage{Engine: "etcd", Kinds: []string{"kv", "state"}, Reason: "store_unavailable: etcd did not answer in time"}},
			[]string{"kv unavailable (etcd)", "state unavailable (etcd)", "blob 0.0 MiB in 0 objects", "store unavailable  etcd: store_unavailable: etcd did not answer in time"},
			[]string{"kv 0.0", "state 0.0"}},
		{"s3 blobs with the ledger in etcd: blob marked as the ledger's, fleet-wide",
			admin.Status{StoreUsage: store.Amounts{Blob: store.Amount{Bytes: 2 << 20, Keys: 3}},
				StoreEngines: map[string]string{"kv": "etcd", "state": "etcd", "blob": "s3", "do": "bbolt"}, StoreBlobLedger: "etcd"},
			[]string{"blob 2.0 MiB in 3 objects (s3 ledger in etcd, fleet-wide)", "the rest from this host's bbolt file"},
			[]string{"unavailable"}},
		{"s3 blobs with the ledger in bbolt: blob marked as the ledger's, on this host",
			admin.Status{StoreUsage: store.Amounts{Blob: store.Amount{Bytes: 2 << 20, Keys: 3}},
				StoreEngines: map[string]string{"kv": "bbolt", "state": "bbolt", "blob": "s3", "do": "bbolt"}, StoreBlobLedger: "bbolt"},
			[]string{"kv 0.0 MiB in 0 keys, state 0.0 MiB in 0 keys, blob 2.0 MiB in 3 objects (s3 ledger in this host's bbolt file)"},
			[]string{"fleet-wide", "unavailable"}},
		{"etcd down with the s3 ledger in it: blob unavailable too",
			admin.Status{StoreEngines: map[string]string{"kv": "etcd", "state": "etcd", "blob": "s3", "do": "bbolt"}, StoreBlobLedger: "etcd",
				StoreUnavailable: &admin.Outage{Engine: "etcd", Kinds: []string{"kv", "state", "blob"}, Reason: "store_unavailable"}},
			[]string{"kv unavailable (etcd)", "state unavailable (etcd)", "blob unavailable (etcd)"},
			[]string{"blob 0.0"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var b strings.Builder
			if err := printStatus(&b, c.st); err != nil {
				t.Fatal(err)
			}
			for _, w := range c.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("status lacks %q:\n%s", w, b.String())
				}
			}
			for _, w := range c.notWant {
				if strings.Contains(b.String(), w) {
					t.Errorf("status holds %q:\n%s", w, b.String())
				}
			}
		})
	}
}
