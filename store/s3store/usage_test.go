package s3store_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
	"github.com/interceptd/interceptd/store/etcdstore"
	"github.com/interceptd/interceptd/store/etcdstore/etcdtest"
	"github.com/interceptd/interceptd/store/s3store"
)

// accounted opens an S3 store whose blobs are charged in a fresh bbolt
// store, with the sandbox quotas given, and the operator's view of both.
func accounted(t *testing.T, tweak func(*s3store.Options), quotas map[string]map[string]int64) (*s3store.Store, backend.Operator) {
	t.Helper()
	db, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for sb, q := range quotas {
		if err := db.SetQuota(sb, q); err != nil {
			t.Fatal(err)
		}
	}
	s := open(t, server(t), tweak)
	s.Account(backend.Bolt(db), db)
	return s, s3store.Operator(db, s)
}

func blobUsage(t *testing.T, op backend.Operator, sb string) store.Amount {
	t.Helper()
	u, err := op.Usage(sb)
	if err != nil {
		t.Fatal(err)
	}
	return u.Blob
}

func TestBlobUsageFollowsEveryWriteAndDelete(t *testing.T) {
	s, op := accounted(t, smallParts, nil)
	shared := s.Blobs("u", store.ScopeShared, store.Limits{})
	own := s.Blobs("u", store.SandboxScope("sb1"), store.Limits{})
	big := 2*s3store.MinPartSize + 5
	put := func(b backend.Blobs, key, owner string, n int, custom map[string]string) {
		t.Helper()
		if _, err := b.Put(key, bytes.NewReader(content(n, 1)), store.PutOptions{Size: -1, Owner: owner, Custom: custom}); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name string
		do   func(t *testing.T)
		want map[string]store.Amount
	}{
		{"a put charges its owner the key, the content and the headers",
			func(t *testing.T) { put(shared, "a", "sb1", 100, map[string]string{"k": "v"}) },
			map[string]store.Amount{"sb1": {Bytes: 1 + 100 + 2, Keys: 1}}},
		{"an overwrite by the owner charges the new object instead of the old",
			func(t *testing.T) { put(shared, "a", "sb1", 50, nil) },
			map[string]store.Amount{"sb1": {Bytes: 1 + 50, Keys: 1}}},
		{"an overwrite by another sandbox moves the charge to it",
			func(t *testing.T) { put(shared, "a", "sb2", 30, nil) },
			map[string]store.Amount{"sb1": {}, "sb2": {Bytes: 1 + 30, Keys: 1}}},
		{"a multipart upload is charged its whole size",
			func(t *testing.T) { put(shared, "big", "sb1", big, nil) },
			map[string]store.Amount{"sb1": {Bytes: 3 + int64(big), Keys: 1}, "sb2": {Bytes: 31, Keys: 1}}},
		{"a conditional delete gives the object back to its owner",
			func(t *testing.T) {
				if err := shared.DeleteIf("a", func(cur *store.ObjectInfo) error { return nil }); err != nil {
					t.Fatal(err)
				}
			},
			map[string]store.Amount{"sb1": {Bytes: 3 + int64(big), Keys: 1}, "sb2": {}}},
		{"a delete gives the object back to its owner",
			func(t *testing.T) {
				if err := shared.Delete("big"); err != nil {
					t.Fatal(err)
				}
			},
			map[string]store.Amount{"sb1": {}, "sb2": {}}},
		{"an operator's write is charged to no one",
			func(t *testing.T) { put(shared, "op", "", 10, nil) },
			map[string]store.Amount{"sb1": {}, "sb2": {}}},
		{"a sandbox's write over an operator's is charged to the sandbox",
			func(t *testing.T) { put(shared, "op", "sb2", 10, nil) },
			map[string]store.Amount{"sb1": {}, "sb2": {Bytes: 2 + 10, Keys: 1}}},
		{"a purge gives back what the sandbox's scope held and keeps its shared objects charged",
			func(t *testing.T) {
				put(own, "x", "sb1", 20, nil)
				put(own, "y", "sb1", 20, nil)
				put(shared, "z", "sb1", 5, nil)
				if err := op.Purge("sb1"); err != nil {
					t.Fatal(err)
				}
			},
			map[string]store.Amount{"sb1": {Bytes: 1 + 5, Keys: 1}, "sb2": {Bytes: 12, Keys: 1}}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.do(t)
			for sb, want := range st.want {
				if got := blobUsage(t, op, sb); got != want {
					t.Errorf("usage of %s: %+v, want %+v", sb, got, want)
				}
			}
			// The ledger is exact: a recount corrects nothing.
			if fixed, err := s.Reconcile(); err != nil || len(fixed) > 0 {
				t.Errorf("recount corrected %v (%v)", fixed, err)
			}
		})
	}
}

func TestAnUploadOverItsOwnersBlobQuotaIsRefusedWithTheQuotaError(t *testing.T) {
	s, op := accounted(t, smallParts, map[string]map[string]int64{"sb1": {"blob.bytes": 4 << 20, "blob.keys": 3}})
	b := s.Blobs("q", store.ScopeShared, store.Limits{})
	tests := []struct {
		name  string
		key   string
		size  int
		known bool // the size is announced
		limit string
	}{
		{"an upload announced over the bytes quota is refused before its body is read", "a", 5 << 20, true, "bytes"},
		{"a single-part upload of unknown size over the bytes quota is refused before it is sent", "b", 4<<20 + 1, false, "bytes"},
		{"a multipart upload of unknown size is refused at the part that crosses the bytes quota", "c", 3 * s3store.MinPartSize, false, "bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r readCounter
			r.r = bytes.NewReader(content(tt.size, 2))
			size := int64(-1)
			if tt.known {
				size = int64(tt.size)
			}
			_, err := b.Put(tt.key, &r, store.PutOptions{Size: size, Owner: "sb1"})
			var qe *store.QuotaError
			if !errors.As(err, &qe) || !errors.Is(err, store.ErrQuotaExceeded) || qe.Kind != store.KindBlob || qe.Limit != tt.limit || qe.Sandbox != "sb1" {
				t.Fatalf("got %v, want the blob %s *store.QuotaError of sb1", err, tt.limit)
			}
			if tt.known && r.n.Load() > 0 {
				t.Errorf("%d bytes of the body were read", r.n.Load())
			}
			if _, err := b.Head(tt.key); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("head: %v, want store.ErrNotFound", err)
			}
			if u := blobUsage(t, op, "sb1"); u != (store.Amount{}) {
				t.Errorf("usage after the refusal: %+v", u)
			}
		})
	}
	t.Run("concurrent uploads cannot take the last of the objects quota together", func(t *testing.T) {
		var ok, refused atomic.Int32
		var wg sync.WaitGroup
		for i := range 12 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := b.Put("k"+string(rune('a'+i)), strings.NewReader("v"), store.PutOptions{Size: 1, Owner: "sb1"})
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, store.ErrQuotaExceeded):
					refused.Add(1)
				default:
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if ok.Load() != 3 || refused.Load() != 9 {
			t.Fatalf("%d stored, %d refused; want 3 and 9", ok.Load(), refused.Load())
		}
		if u := blobUsage(t, op, "sb1"); u.Keys != 3 {
			t.Fatalf("usage: %+v", u)
		}
	})
}

func TestAnOwnerAtItsBlobQuotaMayStillOverwriteItsOwnObjects(t *testing.T) {
	s, op := accounted(t, nil, map[string]map[string]int64{"sb1": {"blob.keys": 1, "blob.bytes": 100}})
	b := s.Blobs("q", store.ScopeShared, store.Limits{})
	steps := []struct {
		name, key string
		size      int
		refused   bool
	}{
		{"the first object fills the objects quota", "a", 50, false},
		{"an overwrite of it with a larger one within the bytes quota is taken", "a", 90, false},
		{"an overwrite past the bytes quota is refused", "a", 100, true},
		{"an overwrite with a smaller one is taken", "a", 10, false},
		{"a second object is refused", "b", 1, true},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			_, err := b.Put(st.key, bytes.NewReader(content(st.size, 3)), store.PutOptions{Size: int64(st.size), Owner: "sb1"})
			if st.refused != errors.Is(err, store.ErrQuotaExceeded) || (!st.refused && err != nil) {
				t.Fatalf("got %v, refused %v", err, st.refused)
			}
		})
	}
	if u := blobUsage(t, op, "sb1"); u != (store.Amount{Bytes: 1 + 10, Keys: 1}) {
		t.Fatalf("usage: %+v", u)
	}
}

type readCounter struct {
	r io.Reader
	n atomic.Int64
}

func (c *readCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func TestACheckRecountsWhatACrashLeftOnceItsLeaseHasRunOut(t *testing.T) {
	prefix := fmt.Sprintf("crash%d/", prefixes.Add(1))
	samePrefix := func(o *s3store.Options) { o.Prefix = prefix }
	s, op := accounted(t, samePrefix, nil)
	var mu sync.Mutex
	now := time.Now()
	s.SetClock(func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
	b := s.Blobs("c", store.ScopeShared, store.Limits{})
	if _, err := b.Put("a", strings.NewReader("0123456789"), store.PutOptions{Size: 10, Owner: "sb1"}); err != nil {
		t.Fatal(err)
	}
	// A reservation that was never settled: a daemon died mid-upload.
	if err := s.Crash("sb1", store.Amount{Bytes: 1000, Keys: 1}, time.Minute); err != nil {
		t.Fatal(err)
	}
	// A commit that was never charged: written by a store that does not
	// account (as a daemon that died between the commit and the ledger
	// would leave it, had it not reserved first).
	unaccounted := open(t, server(t), samePrefix).Blobs("c", store.ScopeShared, store.Limits{})
	if _, err := unaccounted.Put("b", strings.NewReader("01234"), store.PutOptions{Size: 5, Owner: "sb1"}); err != nil {
		t.Fatal(err)
	}
	want := store.Amount{Bytes: 1 + 10 + 1 + 5, Keys: 2}
	charged := store.Amount{Bytes: 1 + 10 + 1000, Keys: 2}
	if got := blobUsage(t, op, "sb1"); got != charged {
		t.Fatalf("usage with the reservation: %+v, want %+v", got, charged)
	}
	if err := op.Check(); err != nil {
		t.Fatal(err)
	}
	if got := blobUsage(t, op, "sb1"); got != charged {
		t.Fatalf("a check recounted an owner with an operation in flight: %+v", got)
	}
	mu.Lock()
	now = now.Add(time.Minute + 2*time.Minute)
	mu.Unlock()
	if err := op.Check(); err != nil {
		t.Fatal(err)
	}
	if got := blobUsage(t, op, "sb1"); got != want {
		t.Fatalf("usage after the lease ran out and a check: %+v, want %+v", got, want)
	}
}

func TestTwoHostsCannotBothGiveASandboxTheLastOfItsBlobQuota(t *testing.T) {
	srv := server(t)
	cluster := etcdtest.Start(t)
	etcdPrefix := fmt.Sprintf("/s3-hosts-%d/", prefixes.Add(1))
	s3Prefix := fmt.Sprintf("hosts%d/", prefixes.Add(1))
	var hosts []backend.Blobs
	var ops []backend.Operator
	for range 2 {
		es, err := etcdstore.Open(etcdstore.Options{Endpoints: cluster.Endpoints(), Prefix: etcdPrefix})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { es.Close() })
		s := open(t, srv, func(o *s3store.Options) { o.Prefix = s3Prefix })
		s.Account(es, es)
		hosts = append(hosts, s.Blobs("q", store.ScopeShared, store.Limits{}))
		ops = append(ops, s3store.Operator(es, s))
	}
	if err := ops[0].SetQuota("sb1", map[string]int64{"blob.keys": 4}); err != nil {
		t.Fatal(err)
	}
	var stored, refused atomic.Int32
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := hosts[i%2].Put(fmt.Sprintf("k%02d", i), strings.NewReader("v"), store.PutOptions{Size: 1, Owner: "sb1"})
			switch {
			case err == nil:
				stored.Add(1)
			case errors.Is(err, store.ErrQuotaExceeded):
				refused.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if stored.Load() != 4 || refused.Load() != 12 {
		t.Fatalf("%d stored, %d refused; want 4 and 12", stored.Load(), refused.Load())
	}
	for i, op := range ops {
		if u := blobUsage(t, op, "sb1"); u != (store.Amount{Bytes: 4 * (3 + 1), Keys: 4}) {
			t.Errorf("host %d sees usage %+v, want 4 objects of 4 bytes", i, u)
		}
	}
}
