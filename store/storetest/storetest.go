// Package storetest checks a storage engine against the contract of package
// store/backend. An engine's tests call TestKV, TestState, TestBlobs,
// TestObjects and TestQuotas with a Harness that opens it empty; the bbolt
// store runs them
// in package store's tests, and the etcd and S3 backends are to run the same
// ones against real servers.
//
// Each check is a subtest named by the behaviour it guards, so a failure
// says which part of the contract an engine breaks.
package storetest

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"testing"
	"time"

	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
)

// Harness opens one engine for the suite.
type Harness struct {
	// Open returns empty stores for one test: a fresh engine, or a fresh
	// prefix or bucket of a shared one. The test's cleanup closes them.
	Open func(t *testing.T) backend.Stores
	// Now is the engine's clock; nil: time.Now.
	Now func() time.Time
	// Advance moves the engine's clock on by d, for the expiry checks; nil:
	// the suite waits out an expiry in real time (about a second).
	Advance func(d time.Duration)
	// Operator returns the operator's view (quotas, usage, purge) of
	// stores that Open returned, for TestQuotas.
	Operator func(s backend.Stores) backend.Operator
	// Unsupported names the checks (by their subtest names) that an
	// engine cannot keep, each with the reason, which the check is skipped
	// with. Only for a clause the engine's storage API cannot give (S3
	// keeps no old version for an open reader); the engine documents what
	// it does instead and tests that with its own tests. The bbolt store
	// leaves it empty.
	Unsupported map[string]string
}

// skipUnsupported skips t when the engine declared its check unsupported.
func (h Harness) skipUnsupported(t *testing.T, name string) {
	if why, ok := h.Unsupported[name]; ok {
		t.Skip("unsupported by this engine: " + why)
	}
}

func (h Harness) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

// pass lets d go by on the engine's clock.
func (h Harness) pass(d time.Duration) {
	if h.Advance != nil {
		h.Advance(d)
		return
	}
	time.Sleep(d)
}

// suiteLimits keep the suite's largest values small; the other limits are
// the engine's defaults.
var suiteLimits = store.Limits{MaxValueBytes: 64 << 10}

func (h Harness) kv(t *testing.T) backend.KV {
	return h.Open(t).Keys(store.KindKV, "suite", store.ScopeShared, suiteLimits)
}

func mustPut(t *testing.T, kv backend.KV, key string, e store.Entry) {
	t.Helper()
	if err := kv.Put(key, e); err != nil {
		t.Fatalf("put %q: %v", key, err)
	}
}

func wantNotFound(t *testing.T, kv backend.KV, key string) {
	t.Helper()
	if e, err := kv.Get(key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get %q: %q, %v; want store.ErrNotFound", key, e.Value, err)
	}
}

// listAll pages through a listing with limit and returns the names.
func listAll(t *testing.T, kv backend.KV, prefix string, limit int) []string {
	t.Helper()
	var names []string
	cursor := ""
	for page := 0; ; page++ {
		if page > 100 {
			t.Fatal("listing never completes")
		}
		res, err := kv.List(store.ListOptions{Prefix: prefix, Cursor: cursor, Limit: limit})
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		if limit > 0 && len(res.Keys) > limit {
			t.Fatalf("a page of %d keys, limit %d", len(res.Keys), limit)
		}
		for _, k := range res.Keys {
			names = append(names, k.Name)
		}
		if res.ListComplete {
			if res.Cursor != "" {
				t.Fatalf("a complete listing with cursor %q", res.Cursor)
			}
			return names
		}
		if res.Cursor == "" {
			t.Fatal("an incomplete listing without a cursor")
		}
		cursor = res.Cursor
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestKV checks a KV space: reads, writes, expiry, metadata, listings and
// limits.
func TestKV(t *testing.T, h Harness) {
	tests := []struct {
		name string
		run  func(t *testing.T, kv backend.KV)
	}{
		{"a put is read back with its value, metadata, expiry and owner", func(t *testing.T, kv backend.KV) {
			exp := h.now().Add(time.Hour).Truncate(time.Second)
			mustPut(t, kv, "k", store.Entry{Value: []byte("v"), Metadata: []byte(`{"a":1}`), Expires: exp, Owner: "sb1"})
			e, err := kv.Get("k")
			if err != nil {
				t.Fatal(err)
			}
			if string(e.Value) != "v" || string(e.Metadata) != `{"a":1}` || !e.Expires.Equal(exp) || e.Owner != "sb1" {
				t.Fatalf("got %q %q %v %q", e.Value, e.Metadata, e.Expires, e.Owner)
			}
		}},
		{"an empty value is a value, not an absent key", func(t *testing.T, kv backend.KV) {
			mustPut(t, kv, "k", store.Entry{Value: []byte{}})
			e, err := kv.Get("k")
			if err != nil || len(e.Value) != 0 {
				t.Fatalf("got %q, %v", e.Value, err)
			}
		}},
		{"a put replaces the entry whole, clearing metadata and expiry it does not give", func(t *testing.T, kv backend.KV) {
			mustPut(t, kv, "k", store.Entry{Value: []byte("1"), Metadata: []byte(`"m"`), Expires: h.now().Add(time.Hour)})
			mustPut(t, kv, "k", store.Entry{Value: []byte("2")})
			e, err := kv.Get("k")
			if err != nil || string(e.Value) != "2" || e.Metadata != nil || !e.Expires.IsZero() {
				t.Fatalf("got %q %q %v, %v", e.Value, e.Metadata, e.Expires, err)
			}
		}},
		{"an absent or deleted key is not found, and deleting an absent key is no error", func(t *testing.T, kv backend.KV) {
			wantNotFound(t, kv, "never")
			mustPut(t, kv, "k", store.Entry{Value: []byte("v")})
			if err := kv.Delete("k"); err != nil {
				t.Fatal(err)
			}
			wantNotFound(t, kv, "k")
			if err := kv.Delete("k"); err != nil {
				t.Fatalf("deleting an absent key: %v", err)
			}
		}},
		{"a key is readable until its expiry and gone from reads and listings at it", func(t *testing.T, kv backend.KV) {
			mustPut(t, kv, "short", store.Entry{Value: []byte("v"), Expires: h.now().Add(time.Second)})
			mustPut(t, kv, "long", store.Entry{Value: []byte("v"), Expires: h.now().Add(time.Hour)})
			if _, err := kv.Get("short"); err != nil {
				t.Fatalf("before its expiry: %v", err)
			}
			h.pass(1100 * time.Millisecond)
			wantNotFound(t, kv, "short")
			if got := listAll(t, kv, "", 0); !equal(got, []string{"long"}) {
				t.Fatalf("listing after the expiry: %q", got)
			}
		}},
		{"an expiry in the past hides the key at once", func(t *testing.T, kv backend.KV) {
			mustPut(t, kv, "k", store.Entry{Value: []byte("v"), Expires: h.now().Add(-time.Second)})
			wantNotFound(t, kv, "k")
		}},
		{"an expiry past the largest one is refused", func(t *testing.T, kv backend.KV) {
			err := kv.Put("k", store.Entry{Value: []byte("v"), Expires: store.MaxExpiry.Add(time.Second)})
			if !errors.Is(err, store.ErrInvalidExpiry) {
				t.Fatalf("got %v, want store.ErrInvalidExpiry", err)
			}
			wantNotFound(t, kv, "k")
		}},
		{"a listing is in byte order, keeps to its prefix and carries metadata and expiry", func(t *testing.T, kv backend.KV) {
			exp := h.now().Add(time.Hour).Truncate(time.Second)
			keys := []string{"b", "a/2", "a", "B", "a/10", "é", "a\x7f", "a/1", "ab", "~"}
			for _, k := range keys {
				e := store.Entry{Value: []byte(k)}
				if k == "a/2" {
					e.Metadata, e.Expires = []byte(`{"x":true}`), exp
				}
				mustPut(t, kv, k, e)
			}
			want := []string{"B", "a", "a/1", "a/10", "a/2", "ab", "a\x7f", "b", "~", "é"}
			if got := listAll(t, kv, "", 0); !equal(got, want) {
				t.Fatalf("listing: %q, want %q", got, want)
			}
			if got := listAll(t, kv, "a/", 0); !equal(got, []string{"a/1", "a/10", "a/2"}) {
				t.Fatalf("prefix a/: %q", got)
			}
			res, err := kv.List(store.ListOptions{Prefix: "a/2"})
			if err != nil || len(res.Keys) != 1 {
				t.Fatalf("prefix a/2: %+v, %v", res, err)
			}
			if k := res.Keys[0]; string(k.Metadata) != `{"x":true}` || k.Expiration != exp.Unix() {
				t.Fatalf("listed a/2 as %+v", k)
			}
		}},
		{"cursors page through every key exactly once, whatever the page size", func(t *testing.T, kv backend.KV) {
			var want []string
			for i := 0; i < 23; i++ {
				k := fmt.Sprintf("p/%02d", i)
				want = append(want, k)
				mustPut(t, kv, k, store.Entry{Value: []byte("v")})
			}
			mustPut(t, kv, "q", store.Entry{Value: []byte("v")})
			for _, limit := range []int{1, 2, 5, 22, 23, 24} {
				if got := listAll(t, kv, "p/", limit); !equal(got, want) {
					t.Fatalf("limit %d: %q", limit, got)
				}
			}
		}},
		{"a key written after a page's last key in byte order shows on the next page", func(t *testing.T, kv backend.KV) {
			for _, k := range []string{"a", "c", "e"} {
				mustPut(t, kv, k, store.Entry{Value: []byte("v")})
			}
			res, err := kv.List(store.ListOptions{Limit: 2})
			if err != nil || res.ListComplete {
				t.Fatalf("first page: %+v, %v", res, err)
			}
			mustPut(t, kv, "d", store.Entry{Value: []byte("v")})
			mustPut(t, kv, "b", store.Entry{Value: []byte("v")})
			res, err = kv.List(store.ListOptions{Cursor: res.Cursor})
			var got []string
			for _, k := range res.Keys {
				got = append(got, k.Name)
			}
			if err != nil || !equal(got, []string{"d", "e"}) {
				t.Fatalf("next page: %q, %v", got, err)
			}
		}},
		{"a cursor the store did not make is refused", func(t *testing.T, kv backend.KV) {
			if _, err := kv.List(store.ListOptions{Cursor: "not a cursor!"}); !errors.Is(err, store.ErrInvalidCursor) {
				t.Fatalf("got %v, want store.ErrInvalidCursor", err)
			}
		}},
		{"bad keys, values and metadata are refused and store nothing", func(t *testing.T, kv backend.KV) {
			l := kv.Limits()
			if l.MaxKeyBytes == 0 || l.MaxValueBytes != suiteLimits.MaxValueBytes || l.MaxMetadataBytes == 0 {
				t.Fatalf("limits without defaults: %+v", l)
			}
			long := string(bytes.Repeat([]byte("k"), l.MaxKeyBytes+1))
			cases := []struct {
				key  string
				e    store.Entry
				want error
			}{
				{"", store.Entry{Value: []byte("v")}, store.ErrInvalidKey},
				{"\xff", store.Entry{Value: []byte("v")}, store.ErrInvalidKey},
				{long, store.Entry{Value: []byte("v")}, store.ErrKeyTooLarge},
				{"v", store.Entry{Value: make([]byte, l.MaxValueBytes+1)}, store.ErrValueTooLarge},
				{"m", store.Entry{Value: []byte("v"), Metadata: []byte(`"` + string(bytes.Repeat([]byte("m"), l.MaxMetadataBytes)) + `"`)}, store.ErrMetadataTooLarge},
				{"j", store.Entry{Value: []byte("v"), Metadata: []byte(`{"a":`)}, store.ErrInvalidMetadata},
			}
			for _, c := range cases {
				if err := kv.Put(c.key, c.e); !errors.Is(err, c.want) {
					t.Errorf("put %.20q: %v, want %v", c.key, err, c.want)
				}
				if c.want == store.ErrInvalidKey || c.want == store.ErrKeyTooLarge {
					if _, err := kv.Get(c.key); !errors.Is(err, c.want) {
						t.Errorf("get %.20q: %v, want %v", c.key, err, c.want)
					}
					if err := kv.CheckKey(c.key); !errors.Is(err, c.want) {
						t.Errorf("check %.20q: %v, want %v", c.key, err, c.want)
					}
				} else {
					wantNotFound(t, kv, c.key)
				}
			}
			if got := listAll(t, kv, "", 0); len(got) != 0 {
				t.Fatalf("refused writes stored %q", got)
			}
		}},
		{"a value at the limit is taken", func(t *testing.T, kv backend.KV) {
			v := make([]byte, kv.Limits().MaxValueBytes)
			rand.New(rand.NewSource(1)).Read(v)
			mustPut(t, kv, "big", store.Entry{Value: v})
			e, err := kv.Get("big")
			if err != nil || !bytes.Equal(e.Value, v) {
				t.Fatalf("read back %d bytes, %v", len(e.Value), err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, h.kv(t)) })
	}

	t.Run("spaces of another kind, namespace or scope do not see a space's keys", func(t *testing.T) {
		s := h.Open(t)
		kv := s.Keys(store.KindKV, "one", store.ScopeShared, store.Limits{})
		mustPut(t, kv, "k", store.Entry{Value: []byte("v")})
		others := []backend.KV{
			s.Keys(store.KindState, "one", store.ScopeShared, store.Limits{}),
			s.Keys(store.KindKV, "two", store.ScopeShared, store.Limits{}),
			s.Keys(store.KindKV, "one", store.SandboxScope("sb1"), store.Limits{}),
			// "on" + "e" must not be read as "one": a naive joined key would.
			s.Keys(store.KindKV, "on", store.ScopeShared, store.Limits{}),
		}
		for i, o := range others {
			wantNotFound(t, o, "k")
			if got := listAll(t, o, "", 0); len(got) != 0 {
				t.Errorf("space %d lists %q", i, got)
			}
		}
		if _, err := others[3].Get("ek"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("space \"on\" reads key \"ek\" of another: %v", err)
		}
	})
}

// TestState checks a state space's transactions.
func TestState(t *testing.T, h Harness) {
	open := func(t *testing.T) backend.KV {
		return h.Open(t).Keys(store.KindState, "suite", store.SandboxScope("sb1"), suiteLimits)
	}
	val := func(t *testing.T, kv backend.KV, key string) string {
		t.Helper()
		e, err := kv.Get(key)
		if errors.Is(err, store.ErrNotFound) {
			return "<absent>"
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(e.Value)
	}
	tests := []struct {
		name string
		run  func(t *testing.T, kv backend.KV)
	}{
		{"a transaction whose conditions hold applies every write and delete, and reads what was there before", func(t *testing.T, kv backend.KV) {
			mustPut(t, kv, "a", store.Entry{Value: []byte("1")})
			mustPut(t, kv, "gone", store.Entry{Value: []byte("x")})
			reads, err := kv.Apply(store.Txn{
				Conditions: []store.Condition{{Key: "a", Equals: []byte("1")}, {Key: "b", Absent: true}, {Key: "gone", Exists: true}},
				Reads:      []string{"a", "b"},
				Writes:     []store.Write{{Key: "a", Entry: store.Entry{Value: []byte("2")}}, {Key: "b", Entry: store.Entry{Value: []byte("3")}}},
				Deletes:    []string{"gone"},
			})
			if err != nil {
				t.Fatal(err)
			}
			if reads["a"] == nil || string(reads["a"].Value) != "1" {
				t.Errorf("read a: %v", reads["a"])
			}
			if r, ok := reads["b"]; !ok || r != nil {
				t.Errorf("read b (absent): %v, %v; want a nil entry", r, ok)
			}
			if a, b, g := val(t, kv, "a"), val(t, kv, "b"), val(t, kv, "gone"); a != "2" || b != "3" || g != "<absent>" {
				t.Fatalf("after: a=%s b=%s gone=%s", a, b, g)
			}
		}},
		{"a condition that fails writes and deletes nothing and is named by its index", func(t *testing.T, kv backend.KV) {
			mustPut(t, kv, "a", store.Entry{Value: []byte("1")})
			mustPut(t, kv, "keep", store.Entry{Value: []byte("k")})
			_, err := kv.Apply(store.Txn{
				Conditions: []store.Condition{{Key: "a", Exists: true}, {Key: "a", Equals: []byte("other")}, {Key: "a", Absent: true}},
				Writes:     []store.Write{{Key: "a", Entry: store.Entry{Value: []byte("2")}}, {Key: "new", Entry: store.Entry{Value: []byte("n")}}},
				Deletes:    []string{"keep"},
			})
			var ce *store.ConditionError
			if !errors.As(err, &ce) || !errors.Is(err, store.ErrConditionFailed) || ce.Index != 1 {
				t.Fatalf("got %v, want the *store.ConditionError of condition 1", err)
			}
			if a, n, k := val(t, kv, "a"), val(t, kv, "new"), val(t, kv, "keep"); a != "1" || n != "<absent>" || k != "k" {
				t.Fatalf("a failed transaction changed the space: a=%s new=%s keep=%s", a, n, k)
			}
		}},
		{"an expired key is absent to a condition", func(t *testing.T, kv backend.KV) {
			mustPut(t, kv, "a", store.Entry{Value: []byte("1"), Expires: h.now().Add(-time.Second)})
			if _, err := kv.Apply(store.Txn{Conditions: []store.Condition{{Key: "a", Absent: true}}}); err != nil {
				t.Fatal(err)
			}
		}},
		{"a write refused by a limit refuses the whole transaction", func(t *testing.T, kv backend.KV) {
			_, err := kv.Apply(store.Txn{Writes: []store.Write{
				{Key: "ok", Entry: store.Entry{Value: []byte("v")}},
				{Key: "big", Entry: store.Entry{Value: make([]byte, kv.Limits().MaxValueBytes+1)}},
			}})
			if !errors.Is(err, store.ErrValueTooLarge) {
				t.Fatalf("got %v, want store.ErrValueTooLarge", err)
			}
			if v := val(t, kv, "ok"); v != "<absent>" {
				t.Fatalf("half a transaction stored: ok=%s", v)
			}
		}},
		{"more keys than a transaction may touch are refused", func(t *testing.T, kv backend.KV) {
			var w []store.Write
			for i := 0; i <= store.MaxTxnOps; i++ {
				w = append(w, store.Write{Key: fmt.Sprint(i), Entry: store.Entry{Value: []byte("v")}})
			}
			if _, err := kv.Apply(store.Txn{Writes: w}); err == nil {
				t.Fatal("accepted")
			}
			if v := val(t, kv, "0"); v != "<absent>" {
				t.Fatalf("stored part of it: 0=%s", v)
			}
		}},
		{"concurrent compare-and-swap increments lose no update", func(t *testing.T, kv backend.KV) {
			mustPut(t, kv, "n", store.Entry{Value: []byte("0")})
			const workers, each = 8, 15
			errs := make(chan error, workers)
			for w := 0; w < workers; w++ {
				go func() {
					for done := 0; done < each; {
						e, err := kv.Get("n")
						if err != nil {
							errs <- err
							return
						}
						var n int
						fmt.Sscan(string(e.Value), &n)
						_, err = kv.Apply(store.Txn{
							Conditions: []store.Condition{{Key: "n", Equals: e.Value}},
							Writes:     []store.Write{{Key: "n", Entry: store.Entry{Value: []byte(fmt.Sprint(n + 1))}}},
						})
						switch {
						case err == nil:
							done++
						case !errors.Is(err, store.ErrConditionFailed):
							errs <- err
							return
						}
					}
					errs <- nil
				}()
			}
			for w := 0; w < workers; w++ {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			if got, want := val(t, kv, "n"), fmt.Sprint(workers*each); got != want {
				t.Fatalf("counter %s, want %s: an increment was lost", got, want)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, open(t)) })
	}
}

func content(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func etagOf(b []byte) string { s := md5.Sum(b); return hex.EncodeToString(s[:]) }

func putBlob(t *testing.T, b backend.Blobs, key string, data []byte) store.ObjectInfo {
	t.Helper()
	oi, err := b.Put(key, bytes.NewReader(data), store.PutOptions{Size: int64(len(data))})
	if err != nil {
		t.Fatalf("put %q: %v", key, err)
	}
	return oi
}

func readAll(t *testing.T, b backend.Blobs, key string) ([]byte, *store.ObjectInfo) {
	t.Helper()
	o, err := b.Open(key)
	if err != nil {
		t.Fatalf("open %q: %v", key, err)
	}
	defer o.Close()
	data, err := io.ReadAll(o)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return data, o.Info()
}

// errRefused is what the suite's preconditions return.
var errRefused = fmt.Errorf("%w: suite", store.ErrPreconditionFailed)

// TestBlobs checks a blob bucket: streaming, ETag, ranges, replacement,
// conditional writes and listings.
func TestBlobs(t *testing.T, h Harness) {
	open := func(t *testing.T) backend.Blobs {
		return h.Open(t).Blobs("suite", store.ScopeShared, store.Limits{})
	}
	// Over two default chunks (1 MiB in bbolt, 5 MiB parts in S3 would be
	// one): a range that crosses a chunk boundary is read.
	big := content(2<<20+12345, 7)
	tests := []struct {
		name string
		run  func(t *testing.T, b backend.Blobs)
	}{
		{"an object is read back whole with its size, ETag, headers and metadata", func(t *testing.T, b backend.Blobs) {
			oi, err := b.Put("dir/obj", bytes.NewReader(big), store.PutOptions{Size: -1,
				HTTP: map[string]string{"Content-Type": "text/plain"}, Custom: map[string]string{"owner": "me"}})
			if err != nil {
				t.Fatal(err)
			}
			if oi.Size != int64(len(big)) || oi.ETag != etagOf(big) || oi.Key != "dir/obj" {
				t.Fatalf("put returned %+v", oi)
			}
			data, info := readAll(t, b, "dir/obj")
			if !bytes.Equal(data, big) {
				t.Fatalf("read back %d bytes that differ", len(data))
			}
			if info.ETag != oi.ETag || info.Size != oi.Size || info.HTTP["Content-Type"] != "text/plain" || info.Custom["owner"] != "me" {
				t.Fatalf("open's info %+v", info)
			}
			hd, err := b.Head("dir/obj")
			if err != nil || hd.ETag != oi.ETag || hd.Size != oi.Size {
				t.Fatalf("head %+v, %v", hd, err)
			}
		}},
		{"an empty object has the empty content's ETag", func(t *testing.T, b backend.Blobs) {
			oi := putBlob(t, b, "e", nil)
			if oi.Size != 0 || oi.ETag != etagOf(nil) {
				t.Fatalf("%+v", oi)
			}
			if data, _ := readAll(t, b, "e"); len(data) != 0 {
				t.Fatalf("read %d bytes", len(data))
			}
		}},
		{"a range across a chunk boundary reads exactly those bytes", func(t *testing.T, b backend.Blobs) {
			putBlob(t, b, "o", big)
			o, err := b.Open("o")
			if err != nil {
				t.Fatal(err)
			}
			defer o.Close()
			for _, r := range [][2]int64{{1<<20 - 10, 20}, {0, 1}, {int64(len(big)) - 5, 5}, {2 << 20, 12345}} {
				if _, err := o.Seek(r[0], io.SeekStart); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, r[1])
				if _, err := io.ReadFull(o, got); err != nil {
					t.Fatalf("range %v: %v", r, err)
				}
				if !bytes.Equal(got, big[r[0]:r[0]+r[1]]) {
					t.Fatalf("range %v: wrong bytes", r)
				}
			}
			if _, err := o.Seek(0, io.SeekEnd); err != nil {
				t.Fatal(err)
			}
			if n, err := o.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("read at the end: %d, %v", n, err)
			}
		}},
		{"an open reader keeps the version it opened when the object is replaced or deleted", func(t *testing.T, b backend.Blobs) {
			putBlob(t, b, "o", big)
			o, err := b.Open("o")
			if err != nil {
				t.Fatal(err)
			}
			defer o.Close()
			putBlob(t, b, "o", []byte("new"))
			if err := b.Delete("o"); err != nil {
				t.Fatal(err)
			}
			data, err := io.ReadAll(o)
			if err != nil || !bytes.Equal(data, big) {
				t.Fatalf("read %d bytes, %v", len(data), err)
			}
		}},
		{"a content that does not match Content-MD5 is refused and the old object stays", func(t *testing.T, b backend.Blobs) {
			putBlob(t, b, "o", []byte("old"))
			sum := md5.Sum([]byte("something else"))
			_, err := b.Put("o", bytes.NewReader(big), store.PutOptions{Size: int64(len(big)), ContentMD5: sum[:]})
			if !errors.Is(err, store.ErrBadDigest) {
				t.Fatalf("got %v, want store.ErrBadDigest", err)
			}
			if data, _ := readAll(t, b, "o"); string(data) != "old" {
				t.Fatalf("object is now %.20q", data)
			}
		}},
		{"an upload shorter than announced is refused and stores nothing", func(t *testing.T, b backend.Blobs) {
			_, err := b.Put("o", bytes.NewReader([]byte("abc")), store.PutOptions{Size: 10})
			if !errors.Is(err, store.ErrIncomplete) {
				t.Fatalf("got %v, want store.ErrIncomplete", err)
			}
			if _, err := b.Head("o"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("head: %v, want store.ErrNotFound", err)
			}
		}},
		{"an upload over the object limit is refused", func(t *testing.T, b backend.Blobs) {
			s := h.Open(t).Blobs("small", store.ScopeShared, store.Limits{MaxObjectBytes: 100})
			if _, err := s.Put("o", bytes.NewReader(make([]byte, 101)), store.PutOptions{Size: -1}); !errors.Is(err, store.ErrValueTooLarge) {
				t.Fatalf("got %v, want store.ErrValueTooLarge", err)
			}
			if _, err := s.Head("o"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("head: %v", err)
			}
		}},
		{"an absent object is not found to head and open, and deleting it is no error", func(t *testing.T, b backend.Blobs) {
			if _, err := b.Head("no"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("head: %v", err)
			}
			if o, err := b.Open("no"); !errors.Is(err, store.ErrNotFound) || o != nil {
				t.Fatalf("open: %v, %v", o, err)
			}
			if err := b.Delete("no"); err != nil {
				t.Fatalf("delete: %v", err)
			}
		}},
		{"a write precondition sees the current object and its refusal changes nothing", func(t *testing.T, b backend.Blobs) {
			var seen []*store.ObjectInfo
			onlyIfAbsent := func(cur *store.ObjectInfo) error {
				seen = append(seen, cur)
				if cur != nil {
					return errRefused
				}
				return nil
			}
			first := putBlob(t, b, "o", nil)
			_ = first
			if err := b.Delete("o"); err != nil {
				t.Fatal(err)
			}
			if _, err := b.Put("o", bytes.NewReader([]byte("1")), store.PutOptions{Size: 1, Precondition: onlyIfAbsent}); err != nil {
				t.Fatalf("put if absent on an absent key: %v", err)
			}
			for _, cur := range seen {
				if cur != nil {
					t.Fatalf("the precondition saw %+v for an absent key", cur)
				}
			}
			seen = nil
			_, err := b.Put("o", bytes.NewReader([]byte("2")), store.PutOptions{Size: 1, Precondition: onlyIfAbsent})
			if !errors.Is(err, store.ErrPreconditionFailed) {
				t.Fatalf("put if absent on a present key: %v", err)
			}
			if len(seen) == 0 || seen[0] == nil || seen[0].ETag != etagOf([]byte("1")) {
				t.Fatalf("the precondition saw %v", seen)
			}
			if err := b.DeleteIf("o", func(cur *store.ObjectInfo) error { return errRefused }); !errors.Is(err, store.ErrPreconditionFailed) {
				t.Fatalf("refused delete: %v", err)
			}
			if data, _ := readAll(t, b, "o"); string(data) != "1" {
				t.Fatalf("object is %q", data)
			}
			if err := b.DeleteIf("o", func(cur *store.ObjectInfo) error { return nil }); err != nil {
				t.Fatal(err)
			}
			if _, err := b.Head("o"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("after delete: %v", err)
			}
		}},
		{"a listing with a delimiter rolls prefixes up once and pages through everything once", func(t *testing.T, b backend.Blobs) {
			for _, k := range []string{"a.txt", "d/1", "d/2", "d/x/3", "e/1", "f", "g/1", "g/2", "z"} {
				putBlob(t, b, k, []byte(k))
			}
			for _, limit := range []int{1, 2, 3, 0} {
				var objects, prefixes []string
				cursor := ""
				for page := 0; ; page++ {
					if page > 50 {
						t.Fatal("listing never ends")
					}
					res, err := b.List(store.BlobListOptions{Delimiter: "/", Cursor: cursor, Limit: limit})
					if err != nil {
						t.Fatal(err)
					}
					if limit > 0 && len(res.Objects)+len(res.DelimitedPrefixes) > limit {
						t.Fatalf("limit %d: a page of %d", limit, len(res.Objects)+len(res.DelimitedPrefixes))
					}
					for _, o := range res.Objects {
						objects = append(objects, o.Key)
					}
					prefixes = append(prefixes, res.DelimitedPrefixes...)
					if !res.Truncated {
						break
					}
					cursor = res.Cursor
				}
				if !equal(objects, []string{"a.txt", "f", "z"}) || !equal(prefixes, []string{"d/", "e/", "g/"}) {
					t.Fatalf("limit %d: objects %q prefixes %q", limit, objects, prefixes)
				}
			}
			res, err := b.List(store.BlobListOptions{Prefix: "d/", Delimiter: "/"})
			if err != nil || len(res.Objects) != 2 || !equal(res.DelimitedPrefixes, []string{"d/x/"}) {
				t.Fatalf("prefix d/: %+v, %v", res, err)
			}
			if _, err := b.List(store.BlobListOptions{Cursor: "bogus!"}); !errors.Is(err, store.ErrInvalidCursor) {
				t.Fatalf("bad cursor: %v", err)
			}
		}},
	}
	known := map[string]bool{}
	for _, tt := range tests {
		known[tt.name] = true
	}
	for name := range h.Unsupported {
		if !known[name] {
			t.Errorf("Harness.Unsupported names %q, which is no blob check: a renamed check would run unnoticed", name)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.skipUnsupported(t, tt.name)
			tt.run(t, open(t))
		})
	}

	t.Run("buckets of another name or scope do not see a bucket's objects", func(t *testing.T) {
		s := h.Open(t)
		putBlob(t, s.Blobs("one", store.ScopeShared, store.Limits{}), "o", []byte("v"))
		for _, o := range []backend.Blobs{
			s.Blobs("two", store.ScopeShared, store.Limits{}),
			s.Blobs("one", store.SandboxScope("sb1"), store.Limits{}),
		} {
			if _, err := o.Head("o"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("head: %v", err)
			}
		}
	})
}

// TestObjects checks Durable Object storage and its transactions.
func TestObjects(t *testing.T, h Harness) {
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	get := func(t *testing.T, s backend.ObjectStorage, key string) string {
		t.Helper()
		m, err := s.Get(key)
		if err != nil {
			t.Fatal(err)
		}
		v, ok := m[key]
		if !ok {
			return "<absent>"
		}
		return string(v)
	}
	tests := []struct {
		name string
		run  func(t *testing.T, o backend.Objects)
	}{
		{"the first create's owner stays", func(t *testing.T, o backend.Objects) {
			if _, err := o.Lookup(id); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("lookup before create: %v", err)
			}
			if _, err := o.Create(id, "sb1"); err != nil {
				t.Fatal(err)
			}
			rec, err := o.Create(id, "sb2")
			if err != nil || rec.Owner != "sb1" {
				t.Fatalf("second create: %+v, %v", rec, err)
			}
		}},
		{"put, get, list and delete keep byte order and count what existed", func(t *testing.T, o backend.Objects) {
			s := o.Storage(id)
			if err := s.Put(map[string][]byte{"b": []byte("2"), "a": []byte("1"), "c": []byte("3")}); err != nil {
				t.Fatal(err)
			}
			es, err := s.List(store.ObjectListOptions{StartAfter: "a"})
			if err != nil || len(es) != 2 || es[0].Key != "b" || es[1].Key != "c" {
				t.Fatalf("list: %v, %v", es, err)
			}
			es, err = s.List(store.ObjectListOptions{Reverse: true, Limit: 2})
			if err != nil || len(es) != 2 || es[0].Key != "c" || es[1].Key != "b" {
				t.Fatalf("reverse list: %v, %v", es, err)
			}
			n, err := s.Delete("a", "zz")
			if err != nil || n != 1 {
				t.Fatalf("delete: %d, %v", n, err)
			}
			if v := get(t, s, "a"); v != "<absent>" {
				t.Fatalf("a=%s", v)
			}
		}},
		{"a committed transaction applies its writes, a rolled back one none, and a committed one refuses calls", func(t *testing.T, o backend.Objects) {
			s := o.Storage(id)
			tx := s.Begin()
			if err := tx.Put(map[string][]byte{"a": []byte("1")}); err != nil {
				t.Fatal(err)
			}
			if m, _ := tx.Get("a"); string(m["a"]) != "1" {
				t.Fatalf("a transaction does not read its own write: %q", m["a"])
			}
			if v := get(t, s, "a"); v != "<absent>" {
				t.Fatalf("a write visible before commit: a=%s", v)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			if v := get(t, s, "a"); v != "1" {
				t.Fatalf("after commit a=%s", v)
			}
			if _, err := tx.Get("a"); !errors.Is(err, store.ErrTxnDone) {
				t.Fatalf("get after commit: %v", err)
			}
			tx = s.Begin()
			tx.Put(map[string][]byte{"a": []byte("2"), "b": []byte("2")})
			tx.Delete("a")
			tx.Rollback()
			if err := tx.Commit(); err != nil {
				t.Fatalf("commit after rollback: %v", err)
			}
			if a, b := get(t, s, "a"), get(t, s, "b"); a != "1" || b != "<absent>" {
				t.Fatalf("after rollback a=%s b=%s", a, b)
			}
		}},
		{"delete all empties the storage and keeps the record", func(t *testing.T, o backend.Objects) {
			if _, err := o.Create(id, "sb1"); err != nil {
				t.Fatal(err)
			}
			s := o.Storage(id)
			s.Put(map[string][]byte{"a": []byte("1")})
			if err := s.DeleteAll(); err != nil {
				t.Fatal(err)
			}
			if v := get(t, s, "a"); v != "<absent>" {
				t.Fatalf("a=%s", v)
			}
			if rec, err := o.Lookup(id); err != nil || rec.Owner != "sb1" {
				t.Fatalf("record: %+v, %v", rec, err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, h.Open(t).Objects("Suite")) })
	}
}

// TestQuotas checks that writes are charged to their owner, refused whole
// over a quota, given back on delete, and that a purge removes a sandbox's
// scope and nothing shared. It needs Harness.Operator.
func TestQuotas(t *testing.T, h Harness) {
	if h.Operator == nil {
		t.Fatal("storetest: TestQuotas needs Harness.Operator")
	}
	const sb = "sb1"
	scope := store.SandboxScope(sb)
	setup := func(t *testing.T, q map[string]int64) (backend.Stores, backend.Operator) {
		s := h.Open(t)
		op := h.Operator(s)
		if err := op.SetQuota(sb, q); err != nil {
			t.Fatal(err)
		}
		return s, op
	}
	wantQuota := func(t *testing.T, err error, kind string) {
		t.Helper()
		var qe *store.QuotaError
		if !errors.As(err, &qe) || !errors.Is(err, store.ErrQuotaExceeded) || qe.Kind != kind || qe.Sandbox != sb {
			t.Fatalf("got %v, want the %s *store.QuotaError of %s", err, kind, sb)
		}
	}
	t.Run("a KV write over its owner's quota is refused and a delete gives the quota back", func(t *testing.T) {
		s, op := setup(t, map[string]int64{"kv.bytes": 200})
		kv := s.Keys(store.KindKV, "q", scope, store.Limits{})
		mustPut(t, kv, "a", store.Entry{Value: make([]byte, 120), Owner: sb})
		u, err := op.Usage(sb)
		if err != nil || u.KV.Bytes < 120 || u.KV.Keys != 1 {
			t.Fatalf("usage after a put: %+v, %v", u.KV, err)
		}
		wantQuota(t, kv.Put("b", store.Entry{Value: make([]byte, 120), Owner: sb}), "kv")
		wantNotFound(t, kv, "b")
		// Another owner's write is not charged to sb.
		mustPut(t, kv, "c", store.Entry{Value: make([]byte, 120), Owner: "sb2"})
		if err := kv.Delete("a"); err != nil {
			t.Fatal(err)
		}
		if u, _ := op.Usage(sb); u.KV != (store.Amount{}) {
			t.Fatalf("usage after the delete: %+v", u.KV)
		}
		mustPut(t, kv, "b", store.Entry{Value: make([]byte, 120), Owner: sb})
	})
	t.Run("a transaction over its owner's quota writes nothing", func(t *testing.T) {
		s, _ := setup(t, map[string]int64{"state.keys": 2})
		kv := s.Keys(store.KindState, "q", scope, store.Limits{})
		var w []store.Write
		for _, k := range []string{"a", "b", "c"} {
			w = append(w, store.Write{Key: k, Entry: store.Entry{Value: []byte("v"), Owner: sb}})
		}
		_, err := kv.Apply(store.Txn{Writes: w})
		wantQuota(t, err, "state")
		if got := listAll(t, kv, "", 0); len(got) != 0 {
			t.Fatalf("stored %q", got)
		}
	})
	t.Run("an upload over its owner's quota is refused and stores nothing", func(t *testing.T) {
		s, _ := setup(t, map[string]int64{"blob.bytes": 1000})
		b := s.Blobs("q", scope, store.Limits{})
		_, err := b.Put("o", bytes.NewReader(make([]byte, 2000)), store.PutOptions{Size: -1, Owner: sb})
		wantQuota(t, err, "blob")
		if _, err := b.Head("o"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("head: %v", err)
		}
	})
	t.Run("a purge removes the sandbox's scope and keeps shared data", func(t *testing.T) {
		s, op := setup(t, nil)
		own := s.Keys(store.KindKV, "p", scope, store.Limits{})
		shared := s.Keys(store.KindKV, "p", store.ScopeShared, store.Limits{})
		mustPut(t, own, "k", store.Entry{Value: []byte("v"), Owner: sb})
		mustPut(t, shared, "k", store.Entry{Value: []byte("v"), Owner: sb})
		putBlob(t, s.Blobs("p", scope, store.Limits{}), "o", []byte("v"))
		if err := op.Purge(sb); err != nil {
			t.Fatal(err)
		}
		wantNotFound(t, own, "k")
		if _, err := s.Blobs("p", scope, store.Limits{}).Head("o"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("blob after purge: %v", err)
		}
		if _, err := shared.Get("k"); err != nil {
			t.Fatalf("shared key after purge: %v", err)
		}
		if err := op.Purge(sb); !errors.Is(err, store.ErrNothingToPurge) {
			t.Fatalf("second purge: %v, want store.ErrNothingToPurge", err)
		}
	})
}
