package store

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func usageOf(t *testing.T, db *DB, sandbox string) Amounts {
	t.Helper()
	u, err := db.Usage(sandbox)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestConcurrentWritersCannotOvershootAQuota(t *testing.T) {
	const each = 100 + 4 // a 100-byte value under a 4-byte key
	db := openTest(t, &Options{Quotas: Amounts{KV: Amount{Bytes: 10 * each}}})
	kv := db.KV("default")
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, refused := 0, 0
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := kv.Put(fmt.Sprintf("k%03d", i), Entry{Value: make([]byte, 100), Owner: "greedy"})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, ErrQuotaExceeded):
				refused++
			default:
				t.Errorf("put: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok != 10 || refused != 54 {
		t.Errorf("%d writes stored, %d refused; want 10 and 54", ok, refused)
	}
	if u := usageOf(t, db, "greedy"); u.KV != (Amount{Bytes: 10 * each, Keys: 10}) {
		t.Errorf("usage %+v, want exactly the quota", u.KV)
	}
	if res, _ := kv.List(ListOptions{}); len(res.Keys) != 10 {
		t.Errorf("%d keys stored", len(res.Keys))
	}
}

func TestConcurrentTransactionsCannotOvershootAQuota(t *testing.T) {
	db := openTest(t, &Options{Quotas: Amounts{State: Amount{Keys: 20}}})
	kv := db.Keys(KindState, "default", SandboxScope("s"), Limits{})
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Three keys a transaction: six fit, the seventh would pass 20.
			var ws []Write
			for j := 0; j < 3; j++ {
				ws = append(ws, Write{Key: fmt.Sprintf("t%d-%d", i, j), Entry: Entry{Value: []byte("v"), Owner: "s"}})
			}
			if _, err := kv.Apply(Txn{Writes: ws}); err != nil && !errors.Is(err, ErrQuotaExceeded) {
				t.Errorf("txn: %v", err)
			}
		}()
	}
	wg.Wait()
	if u := usageOf(t, db, "s"); u.State.Keys != 18 {
		t.Errorf("state keys %d, want 18 (six whole transactions)", u.State.Keys)
	}
	if res, _ := kv.List(ListOptions{}); len(res.Keys) != 18 {
		t.Errorf("%d keys stored: a refused transaction wrote some", len(res.Keys))
	}
}

func TestUsageFollowsEveryWayDataComesAndGoes(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	db := openTest(t, &Options{Now: clock, ChunkSize: 8})
	shared := db.KV("default")
	state := db.Keys(KindState, "default", SandboxScope("a"), Limits{})
	blobs := db.Blobs("default", ScopeShared, Limits{})
	steps := []struct {
		name string
		do   func() error
		a, b Amounts
	}{
		{"a sandbox's put is charged its key, value and metadata",
			func() error {
				return shared.Put("k", Entry{Value: []byte("12345"), Metadata: []byte(`{}`), Owner: "a"})
			},
			Amounts{KV: Amount{8, 1}}, Amounts{}},
		{"an overwrite by the same sandbox replaces the charge",
			func() error { return shared.Put("k", Entry{Value: []byte("1"), Owner: "a"}) },
			Amounts{KV: Amount{2, 1}}, Amounts{}},
		{"an overwrite by another sandbox moves the charge to it",
			func() error { return shared.Put("k", Entry{Value: []byte("123"), Owner: "b"}) },
			Amounts{}, Amounts{KV: Amount{4, 1}}},
		{"an operator's write is charged to no one",
			func() error { return shared.Put("k", Entry{Value: []byte("op")}) },
			Amounts{}, Amounts{}},
		{"a key with a TTL is charged",
			func() error {
				return shared.Put("ttl", Entry{Value: []byte("x"), Expires: now.Add(time.Second), Owner: "a"})
			},
			Amounts{KV: Amount{4, 1}}, Amounts{}},
		{"reaping an expired key gives its space back",
			func() error {
				mu.Lock()
				now = now.Add(2 * time.Second)
				mu.Unlock()
				_, err := db.Reap()
				return err
			},
			Amounts{}, Amounts{}},
		{"state writes in a transaction are charged",
			func() error {
				_, err := state.Apply(Txn{Writes: []Write{{"x", Entry{Value: []byte("1"), Owner: "a"}}, {"y", Entry{Value: []byte("22"), Owner: "a"}}}})
				return err
			},
			Amounts{State: Amount{5, 2}}, Amounts{}},
		{"a transaction that deletes one and rewrites the other",
			func() error {
				_, err := state.Apply(Txn{Deletes: []string{"x"}, Writes: []Write{{"y", Entry{Value: []byte("3"), Owner: "a"}}}})
				return err
			},
			Amounts{State: Amount{2, 1}}, Amounts{}},
		{"an object is charged its key, content and headers",
			func() error {
				_, err := blobs.Put("obj", strings.NewReader("twenty bytes of data"), PutOptions{Size: -1, HTTP: map[string]string{"Content-Type": "a/b"}, Owner: "a"})
				return err
			},
			Amounts{State: Amount{2, 1}, Blob: Amount{3 + 20 + 15, 1}}, Amounts{}},
		{"replacing an object moves its charge",
			func() error {
				_, err := blobs.Put("obj", strings.NewReader("tiny"), PutOptions{Size: 4, Owner: "b"})
				return err
			},
			Amounts{State: Amount{2, 1}}, Amounts{Blob: Amount{7, 1}}},
		{"deleting an object gives its space back",
			func() error { return blobs.Delete("obj") },
			Amounts{State: Amount{2, 1}}, Amounts{}},
		{"purging a sandbox gives its state back",
			func() error { return db.Purge("a") },
			Amounts{}, Amounts{}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if a, b := usageOf(t, db, "a"), usageOf(t, db, "b"); a != s.a || b != s.b {
			t.Errorf("%s: usage a %+v b %+v, want %+v and %+v", s.name, a, b, s.a, s.b)
		}
		if err := db.Check(); err != nil {
			t.Errorf("%s: check: %v", s.name, err)
		}
	}
}

// stepReader yields size bytes in 8-byte reads and calls at after each.
type stepReader struct {
	left int
	at   func(read int)
	read int
}

func (r *stepReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	n := min(len(p), 8, r.left)
	r.left -= n
	r.read += n
	if r.at != nil {
		r.at(r.read)
	}
	return n, nil
}

func TestAStreamedUploadIsChargedAsItGoesAndRefusedAsItCrossesTheQuota(t *testing.T) {
	db := openTest(t, &Options{ChunkSize: 8, Quotas: Amounts{Blob: Amount{Bytes: 64}}})
	blobs := db.Blobs("default", ScopeShared, Limits{})
	var during []int64
	r := &stepReader{left: 1000, at: func(read int) {
		if read == 32 {
			during = append(during, usageOf(t, db, "s").Blob.Bytes)
		}
	}}
	_, err := blobs.Put("big", r, PutOptions{Size: -1, Owner: "s"})
	var qe *QuotaError
	if !errors.As(err, &qe) || qe.Kind != KindBlob || qe.Limit != "bytes" || qe.Quota != 64 {
		t.Fatalf("a 1000-byte stream under a 64-byte quota: %v", err)
	}
	if len(during) != 1 || during[0] < 24 {
		t.Errorf("usage while 32 bytes were read: %v, want the chunks stored so far", during)
	}
	if r.read > 80 {
		t.Errorf("read %d bytes before refusing: not as it crossed", r.read)
	}
	if u := usageOf(t, db, "s"); u != (Amounts{}) {
		t.Errorf("usage after the refusal: %+v", u)
	}
	db.collect()
	if st, _ := db.Stats(); st.BlobUploads != 0 || st.BlobPending != 0 || st.BlobGarbage != 0 {
		t.Errorf("the refused upload left %+v", st)
	}
	// An announced length that cannot fit is refused before reading.
	r = &stepReader{left: 100}
	if _, err := blobs.Put("known", r, PutOptions{Size: 100, Owner: "s"}); !errors.Is(err, ErrQuotaExceeded) || r.read != 0 {
		t.Errorf("a 100-byte upload under 64: %v after reading %d", err, r.read)
	}
}

func TestANewObjectOverTheObjectsQuotaIsRefusedBeforeItsUploadIsRead(t *testing.T) {
	db := openTest(t, &Options{ChunkSize: 8, Quotas: Amounts{Blob: Amount{Keys: 1}}})
	blobs := db.Blobs("default", ScopeShared, Limits{})
	if _, err := blobs.Put("one", strings.NewReader("x"), PutOptions{Size: -1, Owner: "s"}); err != nil {
		t.Fatal(err)
	}
	r := &stepReader{left: 100}
	var qe *QuotaError
	if _, err := blobs.Put("two", r, PutOptions{Size: -1, Owner: "s"}); !errors.As(err, &qe) || qe.Limit != "keys" || r.read != 0 {
		t.Errorf("a second object under a quota of one: %v after reading %d bytes", err, r.read)
	}
	if _, err := blobs.Put("one", strings.NewReader("replaced"), PutOptions{Size: -1, Owner: "s"}); err != nil {
		t.Errorf("replacing its one object: %v", err)
	}
}

func TestQuotaOverridesReplaceTheDefaultsPerSandbox(t *testing.T) {
	db := openTest(t, &Options{Quotas: Amounts{KV: Amount{Bytes: 10, Keys: 5}}})
	if err := db.SetQuota("big", map[string]int64{"kv.bytes": 1000, "blob.keys": 3}); err != nil {
		t.Fatal(err)
	}
	if q, _ := db.Quota("big"); q != (Amounts{KV: Amount{1000, 5}, Blob: Amount{0, 3}}) {
		t.Errorf("big's quota %+v", q)
	}
	kv := db.KV("default")
	if err := kv.Put("k", Entry{Value: make([]byte, 100), Owner: "big"}); err != nil {
		t.Errorf("big: %v", err)
	}
	if err := kv.Put("l", Entry{Value: make([]byte, 100), Owner: "small"}); !errors.Is(err, ErrQuotaExceeded) {
		t.Errorf("small: %v", err)
	}
	for _, bad := range []map[string]int64{{"kv.size": 1}, {"disk.bytes": 1}, {"kv.bytes": -1}} {
		if err := db.SetQuota("x", bad); err == nil {
			t.Errorf("SetQuota(%v) accepted", bad)
		}
	}
	// Lowered under its usage: nothing more, but deletes and smaller
	// overwrites still go through.
	db.SetQuota("big", map[string]int64{"kv.bytes": 50})
	if err := kv.Put("k2", Entry{Value: []byte("x"), Owner: "big"}); !errors.Is(err, ErrQuotaExceeded) {
		t.Errorf("a new key over a lowered quota: %v", err)
	}
	if err := kv.Put("k", Entry{Value: []byte("x"), Owner: "big"}); err != nil {
		t.Errorf("a smaller overwrite over a lowered quota: %v", err)
	}
	if err := db.SetQuota("big", nil); err != nil {
		t.Fatal(err)
	}
	if q, _ := db.Quota("big"); q != db.opts.Quotas {
		t.Errorf("after removing the overrides: %+v", q)
	}
}

func TestUsageSurvivesARestartAndACrashedUploadIsGivenBack(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, &Options{ChunkSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	db.KV("default").Put("k", Entry{Value: []byte("value"), Owner: "s"})
	// A crash mid-upload, by hand: a pending entry charged for a chunk.
	db.update(func(tx *bolt.Tx) error {
		tx.Bucket(bucketBlobGC).Put([]byte("deadbeef"), pendingValue(7, "s"))
		cb, _ := tx.Bucket(bucketBlobChunks).CreateBucket([]byte("deadbeef"))
		cb.Put(chunkKey(0), []byte("partial"))
		_, err := db.charge(tx, usageDelta{"s": {Blob: Amount{Bytes: 7}}})
		return err
	})
	if u := usageOf(t, db, "s"); u.Blob.Bytes != 7 {
		t.Fatalf("before the crash: %+v", u)
	}
	if err := db.Check(); err != nil {
		t.Fatalf("check before the crash: %v", err)
	}
	db.Close()
	db, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if u := usageOf(t, db, "s"); u != (Amounts{KV: Amount{6, 1}}) {
		t.Errorf("after the restart: %+v, want the key and no upload", u)
	}
	if err := db.Check(); err != nil {
		t.Errorf("check after the restart: %v", err)
	}
}

func TestTheCheckFindsUsageThatDisagreesWithTheRecords(t *testing.T) {
	db := openTest(t, nil)
	db.KV("default").Put("k", Entry{Value: []byte("value"), Owner: "s"})
	db.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsage).Put([]byte("s"), encodeUsage(Amounts{KV: Amount{1, 1}}))
	})
	err := db.Check()
	if err == nil || !strings.Contains(err.Error(), "usage of sandbox s") {
		t.Errorf("check: %v", err)
	}
	db.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsage).Put([]byte("s"), encodeUsage(Amounts{KV: Amount{6, 1}}))
	})
}

func TestWritesAreRefusedUnderTheFreeSpaceFloorAndReadsGoOn(t *testing.T) {
	db := openTest(t, nil)
	kv := db.KV("default")
	kv.Put("k", Entry{Value: []byte("v")})
	db.opts.MinFreeBytes = 1 << 62 // more than any disk has
	if err := kv.Put("k2", Entry{Value: []byte("v")}); !errors.Is(err, ErrDiskFull) {
		t.Errorf("put: %v", err)
	}
	if _, err := kv.Apply(Txn{Writes: []Write{{"k3", Entry{Value: []byte("v")}}}}); !errors.Is(err, ErrDiskFull) {
		t.Errorf("txn: %v", err)
	}
	if _, err := db.Blobs("b", ScopeShared, Limits{}).Put("o", strings.NewReader("x"), PutOptions{Size: -1}); !errors.Is(err, ErrDiskFull) {
		t.Errorf("blob: %v", err)
	}
	if e, err := kv.Get("k"); err != nil || string(e.Value) != "v" {
		t.Errorf("read: %q %v", e.Value, err)
	}
	if err := kv.Delete("k"); err != nil {
		t.Errorf("delete: %v", err)
	}
}
