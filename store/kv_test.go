package store

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestListingIsInByteOrderWithPrefixesAndCursors(t *testing.T) {
	db := openTest(t, nil)
	kv := db.KV("default")
	keys := []string{"b", "a", "a/2", "a/10", "é", "z", "ä", "A", "a/1"}
	for _, k := range keys {
		if err := kv.Put(k, Entry{Value: []byte(k)}); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"A", "a", "a/1", "a/10", "a/2", "b", "z", "ä", "é"} // bytes: ä=c3a4 < é=c3a9
	var got []string
	cursor := ""
	pages := 0
	for {
		res, err := kv.List(ListOptions{Limit: 4, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, e := range res.Keys {
			got = append(got, e.Name)
		}
		if res.ListComplete {
			if res.Cursor != "" {
				t.Error("complete listing with a cursor")
			}
			break
		}
		cursor = res.Cursor
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || pages != 3 {
		t.Fatalf("listing %v in %d pages, want %v in 3", got, pages, want)
	}
	res, _ := kv.List(ListOptions{Prefix: "a/"})
	if len(res.Keys) != 3 || res.Keys[0].Name != "a/1" || !res.ListComplete {
		t.Errorf("prefix a/: %+v", res)
	}
	if _, err := kv.List(ListOptions{Cursor: "not-a-cursor"}); !errors.Is(err, ErrInvalidCursor) {
		t.Errorf("bad cursor: %v", err)
	}
	res, _ = kv.List(ListOptions{Limit: 5000})
	if len(res.Keys) != len(keys) {
		t.Errorf("limit above the maximum: %d keys", len(res.Keys))
	}
}

func TestExpiryHidesAtOnceReapsLaterAndARewriteClearsIt(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	db := openTest(t, &Options{Now: clock})
	kv := db.KV("default")
	mustPut(t, kv, "short", Entry{Value: []byte("1"), Expires: now.Add(10 * time.Second), Metadata: []byte(`{"v":1}`)})
	mustPut(t, kv, "long", Entry{Value: []byte("2"), Expires: now.Add(time.Hour)})
	mustPut(t, kv, "rewritten", Entry{Value: []byte("3"), Expires: now.Add(10 * time.Second)})
	mustPut(t, kv, "rewritten", Entry{Value: []byte("3b")}) // no TTL: clears it
	res, _ := kv.List(ListOptions{})
	if len(res.Keys) != 3 || res.Keys[2].Name != "short" || res.Keys[2].Expiration != now.Add(10*time.Second).Unix() || string(res.Keys[2].Metadata) != `{"v":1}` {
		t.Fatalf("listing before expiry: %+v", res.Keys)
	}
	mu.Lock()
	now = now.Add(11 * time.Second)
	mu.Unlock()
	if _, err := kv.Get("short"); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired key visible: %v", err)
	}
	if res, _ := kv.List(ListOptions{}); len(res.Keys) != 2 {
		t.Errorf("expired key listed: %+v", res.Keys)
	}
	n, err := db.Reap()
	if err != nil || n != 1 {
		t.Fatalf("reaped %d (%v), want 1", n, err)
	}
	if e, err := kv.Get("rewritten"); err != nil || !e.Expires.IsZero() {
		t.Errorf("rewritten key: %+v %v", e, err)
	}
	if st, _ := db.Stats(); st.ExpiryEntries != 1 {
		t.Errorf("expiry index holds %d entries, want 1 (long)", st.ExpiryEntries)
	}
}

func TestScopesAndKindsAreSeparate(t *testing.T) {
	db := openTest(t, nil)
	mustPut(t, db.Keys(KindKV, "ns", SandboxScope("a"), Limits{}), "k", Entry{Value: []byte("a")})
	if _, err := db.Keys(KindKV, "ns", SandboxScope("a"), Limits{}).Get("k"); err != nil {
		t.Fatalf("sandbox a cannot read its own key: %v", err)
	}
	for name, kv := range map[string]*KV{
		"another sandbox":   db.Keys(KindKV, "ns", SandboxScope("b"), Limits{}),
		"the shared scope":  db.Keys(KindKV, "ns", ScopeShared, Limits{}),
		"state of the same": db.Keys(KindState, "ns", SandboxScope("a"), Limits{}),
		"another namespace": db.Keys(KindKV, "other", SandboxScope("a"), Limits{}),
	} {
		if _, err := kv.Get("k"); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s sees sandbox a's key: %v", name, err)
		}
	}
}

func TestATransactionAppliesAllOrNothing(t *testing.T) {
	db := openTest(t, nil)
	st := db.Keys(KindState, "default", SandboxScope("web1"), Limits{})
	mustPut(t, st, "balance", Entry{Value: []byte("10")})
	tests := []struct {
		name      string
		txn       Txn
		wantIndex int // -1: applies
	}{
		{"a failed equals writes nothing", Txn{
			Conditions: []Condition{{Key: "balance", Equals: []byte("9")}},
			Writes:     []Write{{Key: "balance", Entry: Entry{Value: []byte("0")}}},
		}, 0},
		{"a failed absent writes nothing", Txn{
			Conditions: []Condition{{Key: "balance", Exists: true}, {Key: "balance", Absent: true}},
			Writes:     []Write{{Key: "x", Entry: Entry{Value: []byte("1")}}},
		}, 1},
		{"holding conditions apply writes and deletes together", Txn{
			Conditions: []Condition{{Key: "balance", Equals: []byte("10")}, {Key: "lock", Absent: true}},
			Reads:      []string{"balance", "missing"},
			Writes:     []Write{{Key: "balance", Entry: Entry{Value: []byte("7")}}, {Key: "lock", Entry: Entry{Value: []byte("me")}}},
			Deletes:    []string{"x"},
		}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reads, err := st.Apply(tt.txn)
			if tt.wantIndex >= 0 {
				var ce *ConditionError
				if !errors.As(err, &ce) || ce.Index != tt.wantIndex || !errors.Is(err, ErrConditionFailed) {
					t.Fatalf("err = %v, want condition %d failed", err, tt.wantIndex)
				}
				if e, _ := st.Get("balance"); string(e.Value) != "10" {
					t.Errorf("balance changed to %s", e.Value)
				}
				if _, err := st.Get("x"); !errors.Is(err, ErrNotFound) {
					t.Error("a write of a failed transaction landed")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(reads["balance"].Value) != "10" || reads["missing"] != nil {
				t.Errorf("reads = %v", reads)
			}
			if e, _ := st.Get("balance"); string(e.Value) != "7" {
				t.Errorf("balance = %s", e.Value)
			}
		})
	}
}

func TestConcurrentTransactionsNeverLoseAnIncrement(t *testing.T) {
	db := openTest(t, nil)
	st := db.Keys(KindState, "default", SandboxScope("c"), Limits{})
	mustPut(t, st, "n", Entry{Value: []byte("0")})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; {
				e, _ := st.Get("n")
				var n int
				fmt.Sscan(string(e.Value), &n)
				_, err := st.Apply(Txn{
					Conditions: []Condition{{Key: "n", Equals: e.Value}},
					Writes:     []Write{{Key: "n", Entry: Entry{Value: []byte(fmt.Sprint(n + 1))}}},
				})
				if err == nil {
					i++
				} else if !errors.Is(err, ErrConditionFailed) {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if e, _ := st.Get("n"); string(e.Value) != "80" {
		t.Fatalf("n = %s after 80 increments", e.Value)
	}
}

func TestConcurrentWritesShareCommits(t *testing.T) {
	db := openTest(t, nil)
	kv := db.KV("default")
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				if err := kv.Put(fmt.Sprintf("w%d-%d", w, i), Entry{Value: []byte("v")}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	res, _ := kv.List(ListOptions{})
	if len(res.Keys) != 640 {
		t.Fatalf("%d keys after 640 writes", len(res.Keys))
	}
}

func TestPurgeRemovesOnlyThatSandboxsData(t *testing.T) {
	db := openTest(t, nil)
	mustPut(t, db.Keys(KindState, "default", SandboxScope("a"), Limits{}), "k", Entry{Value: []byte("a")})
	mustPut(t, db.Keys(KindState, "default", SandboxScope("b"), Limits{}), "k", Entry{Value: []byte("b")})
	mustPut(t, db.Keys(KindKV, "default", SandboxScope("a"), Limits{}), "k", Entry{Value: []byte("a")})
	mustPut(t, db.KV("default"), "k", Entry{Value: []byte("shared")})
	if err := db.Purge("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Keys(KindState, "default", SandboxScope("a"), Limits{}).Get("k"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a's state survived purge: %v", err)
	}
	if _, err := db.Keys(KindKV, "default", SandboxScope("a"), Limits{}).Get("k"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a's kv survived purge: %v", err)
	}
	for _, kv := range []*KV{db.Keys(KindState, "default", SandboxScope("b"), Limits{}), db.KV("default")} {
		if _, err := kv.Get("k"); err != nil {
			t.Errorf("purge of a removed another's key: %v", err)
		}
	}
}
