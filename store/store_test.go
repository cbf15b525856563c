package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// openTest opens a store in a fresh temp dir and checks its consistency
// when the test ends, as bbolt's own test helper does.
func openTest(t *testing.T, opts *Options) *DB {
	t.Helper()
	db, err := Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Check(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("consistency check: %v", err)
		}
		db.Close()
	})
	return db
}

// mustPut writes key or ends the test: a write that failed would
// otherwise pass every "cannot see it" assertion after it.
func mustPut(t testing.TB, kv *KV, key string, e Entry) {
	t.Helper()
	if err := kv.Put(key, e); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

func TestKVPutGetDelete(t *testing.T) {
	db := openTest(t, nil)
	kv := db.KV("default")
	if _, err := kv.Get("greeting"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get before put: %v, want ErrNotFound", err)
	}
	if err := kv.Put("greeting", Entry{Value: []byte("hello")}); err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get("greeting")
	if err != nil || string(e.Value) != "hello" {
		t.Fatalf("get = %q %v", e.Value, err)
	}
	if err := kv.Delete("greeting"); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete("greeting"); err != nil {
		t.Fatalf("deleting an absent key: %v", err)
	}
	if _, err := kv.Get("greeting"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
}

func TestNamespacesAreSeparate(t *testing.T) {
	db := openTest(t, nil)
	mustPut(t, db.KV("a"), "k", Entry{Value: []byte("1")})
	if _, err := db.KV("a").Get("k"); err != nil {
		t.Fatalf("namespace a cannot read its own key: %v", err)
	}
	if _, err := db.KV("b").Get("k"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("namespace b sees a's key: %v", err)
	}
}

func TestKVRejectsBadKeysAndValues(t *testing.T) {
	db := openTest(t, &Options{Limits: Limits{MaxKeyBytes: 8, MaxValueBytes: 4, MaxMetadataBytes: 8}})
	kv := db.KV("default")
	tests := []struct {
		name  string
		key   string
		value string
		want  error
	}{
		{"an empty key is invalid", "", "v", ErrInvalidKey},
		{"a key that is not UTF-8 is invalid", "\xff\xfe", "v", ErrInvalidKey},
		{"a key over the limit is too large", "123456789", "v", ErrKeyTooLarge},
		{"a value over the limit is too large", "k", "12345", ErrValueTooLarge},
		{"a key and value at the limits are fine", "12345678", "1234", nil},
		{"metadata over the limit is too large", "k", "v", ErrMetadataTooLarge},
		{"metadata that is not JSON is invalid", "k2", "v", ErrInvalidMetadata},
	}
	meta := map[string][]byte{"metadata over the limit is too large": []byte(`{"a":"long"}`), "metadata that is not JSON is invalid": []byte(`{x`)}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := kv.Put(tt.key, Entry{Value: []byte(tt.value), Metadata: meta[tt.name]}); !errors.Is(err, tt.want) {
				t.Fatalf("Put = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestExpiredEntriesAreInvisibleAndMetadataRoundTrips(t *testing.T) {
	now := time.Unix(1000, 0)
	db := openTest(t, &Options{Now: func() time.Time { return now }})
	kv := db.KV("default")
	mustPut(t, kv, "soon", Entry{Value: []byte("x"), Expires: now.Add(time.Second), Metadata: []byte(`{"a":1}`)})
	e, err := kv.Get("soon")
	if err != nil || !bytes.Equal(e.Metadata, []byte(`{"a":1}`)) || !e.Expires.Equal(now.Add(time.Second)) {
		t.Fatalf("get = %+v %v", e, err)
	}
	now = now.Add(time.Second)
	if _, err := kv.Get("soon"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("expired key visible: %v", err)
	}
}

func TestDataSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, db.KV("default"), "k", Entry{Value: []byte("durable")})
	if err := db.SaveSandbox("web1", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := db.KV("default").Get("k"); !errors.Is(err, ErrClosed) {
		t.Errorf("get on closed db: %v, want ErrClosed", err)
	}
	db, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if e, err := db.KV("default").Get("k"); err != nil || string(e.Value) != "durable" {
		t.Fatalf("after reopen: %q %v", e.Value, err)
	}
	if recs, _ := db.Sandboxes(); len(recs) != 1 {
		t.Errorf("sandbox records after reopen: %v", recs)
	}
}

func TestAForgottenSandboxRecordIsGoneOnceItCommitsAndAfterClose(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b", "c"} {
		db.SaveSandbox(n, []byte(`{}`))
	}
	db.ForgetSandbox("a")
	db.SaveSandbox("d", []byte(`{}`)) // waits for its commit, and the queued removal is before it
	if recs, _ := db.Sandboxes(); len(recs) != 3 || recs["a"] != nil {
		t.Errorf("records after a forget and a later save: %v, want b, c and d", recs)
	}
	db.ForgetSandbox("b")
	db.Close() // commits what is queued
	db, err = Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if recs, _ := db.Sandboxes(); len(recs) != 2 || recs["b"] != nil {
		t.Errorf("records after reopen: %v, want c and d", recs)
	}
	if err := db.ForgetSandbox("c"); err != nil {
		t.Fatal(err)
	}
}

func TestASecondOpenOfTheSameDirTimesOut(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := Open(dir, &Options{LockTimeout: 50 * time.Millisecond}); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Fatalf("second open: %v, want a lock timeout", err)
	}
}

func TestMetricsCountOperationsByResult(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	db := openTest(t, &Options{Metrics: m})
	kv := db.KV("default")
	kv.Get("missing")
	mustPut(t, kv, "k", Entry{Value: []byte("v")})
	kv.Get("k")
	if got := testutil.ToFloat64(m.ops.WithLabelValues("kv", "get", "not_found")); got != 1 {
		t.Errorf("kv get not_found = %v", got)
	}
	if got := testutil.ToFloat64(m.ops.WithLabelValues("kv", "get", "ok")); got != 1 {
		t.Errorf("kv get ok = %v", got)
	}
	if got := testutil.ToFloat64(m.bytes.WithLabelValues("kv", "written")); got != 1 {
		t.Errorf("kv bytes written = %v", got)
	}
}

func ExampleKV() {
	dir, _ := os.MkdirTemp("", "interceptd-store-example-")
	defer os.RemoveAll(dir)
	db, _ := Open(dir, nil)
	defer db.Close()
	kv := db.KV("default")
	kv.Put("greeting", Entry{Value: []byte("hello")})
	e, _ := kv.Get("greeting")
	fmt.Println(string(e.Value))
	_, err := kv.Get("missing")
	fmt.Println(errors.Is(err, ErrNotFound))
	// Output:
	// hello
	// true
}
