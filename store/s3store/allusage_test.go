package s3store_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
)

func TestAllUsageIsEveryOwnersSettledBlobUsageFromTheLedger(t *testing.T) {
	s, op := accounted(t, nil, nil)
	shared := s.Blobs("all", store.ScopeShared, store.Limits{})
	own := s.Blobs("all", store.SandboxScope("sb1"), store.Limits{})
	put := func(b backend.Blobs, key, owner, v string) {
		t.Helper()
		if _, err := b.Put(key, strings.NewReader(v), store.PutOptions{Size: int64(len(v)), Owner: owner}); err != nil {
			t.Fatal(err)
		}
	}
	put(own, "a", "sb1", "0123456789")
	put(shared, "b", "sb1", "01234")
	put(shared, "c", "sb2", "0123")
	put(shared, "gone", "sb3", "x")
	if err := shared.Delete("gone"); err != nil {
		t.Fatal(err)
	}
	// An upload of sb2's in flight (or a daemon that died during one):
	// the quota holds it, the usage series do not.
	if err := s.Crash("sb2", store.Amount{Bytes: 1000, Keys: 1}, time.Minute); err != nil {
		t.Fatal(err)
	}
	all, err := s.AllUsage()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]store.Amount{
		"sb1": {Bytes: 1 + 10 + 1 + 5, Keys: 2},
		"sb2": {Bytes: 1 + 4, Keys: 1},
		"sb3": {}, // charged once, all given back
	}
	if len(all) != len(want) {
		t.Errorf("owners: %v, want those of %v", all, want)
	}
	for sb, w := range want {
		if got := all[sb]; got != (store.Amounts{Blob: w}) {
			t.Errorf("%s: %+v, want blob %+v and no other kind", sb, got, w)
		}
	}
	// Nothing of sb1's is in flight: the ledger's settled figure is what
	// `sandbox show` says.
	if got := blobUsage(t, op, "sb1"); got != all["sb1"].Blob {
		t.Errorf("sb1: sandbox show's %+v, AllUsage's %+v", got, all["sb1"].Blob)
	}
	if got := blobUsage(t, op, "sb2"); got != (store.Amount{Bytes: 1 + 4 + 1000, Keys: 2}) {
		t.Errorf("sb2's charge toward its quota: %+v, want the reservation counted", got)
	}
}

func TestTheBlobUsageCacheReadsTheLedgerOncePerRefreshAndSaysWhenItCannot(t *testing.T) {
	db, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s := open(t, server(t), nil)
	s.Account(backend.Bolt(db), db)
	b := s.Blobs("cache", store.SandboxScope("sb"), store.Limits{})
	put := func(key string) {
		t.Helper()
		if _, err := b.Put(key, strings.NewReader("v"), store.PutOptions{Size: 1, Owner: "sb"}); err != nil {
			t.Fatal(err)
		}
	}
	put("a")
	const refresh = 500 * time.Millisecond
	cache := s.UsageCache(refresh)
	keys := func() int64 {
		t.Helper()
		all, err := cache.Get()
		if err != nil {
			t.Fatal(err)
		}
		return all["sb"].Blob.Keys
	}
	if got := keys(); got != 1 {
		t.Fatalf("first read: %d objects, want 1", got)
	}
	put("b")
	if got := keys(); got != 1 {
		t.Errorf("within the refresh interval: %d objects, want the cached 1 (each scrape would read the ledger)", got)
	}
	time.Sleep(refresh)
	if got := keys(); got != 2 {
		t.Errorf("after the refresh interval: %d objects, want 2", got)
	}

	// The engine that keeps the ledger gone (here the bbolt file closed;
	// etcd down, in a fleet): an error, for the series to be absent, not
	// zeros. (That the error is kept for the refresh interval is the
	// cache's own test, in package store.)
	db.Close()
	time.Sleep(refresh)
	if all, err := cache.Get(); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("with the ledger unreadable: %v %v, want store.ErrClosed", all, err)
	}
}
