package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// objectKeys are stored in an order that is not their byte order.
var objectKeys = []string{"😀", "b", "é", "ab", "c", "a", "abc", "ba"}

func mustObjectPut(t testing.TB, s *ObjectStorage, kv ...string) {
	t.Helper()
	m := map[string][]byte{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = []byte(kv[i+1])
	}
	if err := s.Put(m); err != nil {
		t.Fatalf("Put(%v): %v", kv, err)
	}
}

func keysOf(es []ObjectEntry) []string {
	out := []string{}
	for _, e := range es {
		out = append(out, e.Key)
	}
	return out
}

func TestObjectKeysAreOrderedByTheirUTF8Bytes(t *testing.T) {
	db := openTest(t, nil)
	s := db.Objects("Counter").Storage(NewObjectID())
	for _, k := range objectKeys {
		mustObjectPut(t, s, k, "v:"+k)
	}
	got, err := s.List(ObjectListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a", "ab", "abc", "b", "ba", "c", "é", "😀"}
	if !reflect.DeepEqual(keysOf(got), want) {
		t.Fatalf("List = %q, want %q", keysOf(got), want)
	}
	if string(got[7].Value) != "v:😀" {
		t.Fatalf("value of 😀 = %q", got[7].Value)
	}
}

// listCases hold for the keys of objectKeys.
var listCases = []struct {
	name string
	opts ObjectListOptions
	want []string
}{
	{"no options list every key", ObjectListOptions{}, []string{"a", "ab", "abc", "b", "ba", "c", "é", "😀"}},
	{"a prefix keeps the keys that start with it", ObjectListOptions{Prefix: "a"}, []string{"a", "ab", "abc"}},
	{"start is inclusive", ObjectListOptions{Start: "ab"}, []string{"ab", "abc", "b", "ba", "c", "é", "😀"}},
	{"startAfter is exclusive", ObjectListOptions{StartAfter: "ab"}, []string{"abc", "b", "ba", "c", "é", "😀"}},
	{"end is exclusive", ObjectListOptions{End: "b"}, []string{"a", "ab", "abc"}},
	{"start and end bound both sides", ObjectListOptions{Start: "ab", End: "ba"}, []string{"ab", "abc", "b"}},
	{"a limit takes the first keys", ObjectListOptions{Limit: 3}, []string{"a", "ab", "abc"}},
	{"reverse lists in descending order", ObjectListOptions{Reverse: true}, []string{"😀", "é", "c", "ba", "b", "abc", "ab", "a"}},
	{"reverse with a limit takes the last keys", ObjectListOptions{Reverse: true, Limit: 2}, []string{"😀", "é"}},
	{"reverse keeps the meaning of start and end", ObjectListOptions{Reverse: true, Start: "ab", End: "ba"}, []string{"b", "abc", "ab"}},
	{"reverse with a prefix", ObjectListOptions{Reverse: true, Prefix: "a", Limit: 2}, []string{"abc", "ab"}},
	{"a prefix with startAfter", ObjectListOptions{Prefix: "a", StartAfter: "a"}, []string{"ab", "abc"}},
	{"a multi-byte prefix", ObjectListOptions{Prefix: "é"}, []string{"é"}},
	{"an end before the start lists nothing", ObjectListOptions{Start: "c", End: "b"}, []string{}},
	{"a prefix nothing has lists nothing", ObjectListOptions{Prefix: "zz"}, []string{}},
}

func TestObjectListOptionsSelectAsCloudflaresDo(t *testing.T) {
	db := openTest(t, nil)
	s := db.Objects("Counter").Storage(NewObjectID())
	for _, k := range objectKeys {
		mustObjectPut(t, s, k, k)
	}
	for _, tc := range listCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.List(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(keysOf(got), tc.want) {
				t.Fatalf("List(%+v) = %q, want %q", tc.opts, keysOf(got), tc.want)
			}
		})
	}
}

func TestObjectListInATransactionSeesItsWrites(t *testing.T) {
	db := openTest(t, nil)
	s := db.Objects("Counter").Storage(NewObjectID())
	// Half the keys stored, the other half written by the transaction,
	// one stored key deleted by it and one overwritten.
	for i, k := range objectKeys {
		if i%2 == 0 {
			mustObjectPut(t, s, k, "old")
		}
	}
	mustObjectPut(t, s, "gone", "old", "aa", "old")
	tx := s.Begin()
	for i, k := range objectKeys {
		if i%2 == 1 || k == "😀" {
			if err := tx.Put(map[string][]byte{k: []byte("new")}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n, err := tx.Delete("gone", "aa", "never"); err != nil || n != 2 {
		t.Fatalf("Delete in txn = %d, %v; want 2", n, err)
	}
	for _, tc := range listCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tx.List(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(keysOf(got), tc.want) {
				t.Fatalf("txn List(%+v) = %q, want %q", tc.opts, keysOf(got), tc.want)
			}
		})
	}
	if got, _ := tx.Get("😀", "gone"); string(got["😀"]) != "new" || got["gone"] != nil {
		t.Fatalf("txn Get = %q", got)
	}
	tx.Rollback()
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get("😀", "gone", "b"); string(got["😀"]) != "old" || string(got["gone"]) != "old" || got["b"] != nil {
		t.Fatalf("after a rolled back transaction Get = %q", got)
	}
}

func TestObjectsGetPutAndDeleteInTheirOwnKeySpace(t *testing.T) {
	db := openTest(t, nil)
	s := db.Objects("Counter").Storage(ObjectIDFromName("Counter", "x"))
	if got, err := s.Get("a"); err != nil || len(got) != 0 {
		t.Fatalf("Get of a new object = %v, %v", got, err)
	}
	mustObjectPut(t, s, "a", "1", "b", "2", "c", "")
	got, err := s.Get("a", "b", "c", "d")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{"a": []byte("1"), "b": []byte("2"), "c": {}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Get = %q, want %q", got, want)
	}
	if n, err := s.Delete("a", "b", "d"); err != nil || n != 2 {
		t.Fatalf("Delete = %d, %v; want 2", n, err)
	}
	if n, err := s.Delete("a"); err != nil || n != 0 {
		t.Fatalf("Delete again = %d, %v; want 0", n, err)
	}
	if ks, _ := s.List(ObjectListOptions{}); !reflect.DeepEqual(keysOf(ks), []string{"c"}) {
		t.Fatalf("List after delete = %q", keysOf(ks))
	}
	// Another object of the class, and the same id in another class, are
	// other key spaces.
	if got, _ := db.Objects("Counter").Storage(NewObjectID()).Get("c"); len(got) != 0 {
		t.Fatalf("another object sees c: %q", got)
	}
	if got, _ := db.Objects("Other").Storage(ObjectIDFromName("Counter", "x")).Get("c"); len(got) != 0 {
		t.Fatalf("another class sees c: %q", got)
	}
}

func TestObjectLimitsNameTheLimit(t *testing.T) {
	db := openTest(t, nil)
	s := db.Objects("Counter").Storage(NewObjectID())
	many := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprint("k", i)
		}
		return out
	}
	manyEntries := func(n int) map[string][]byte {
		m := map[string][]byte{}
		for _, k := range many(n) {
			m[k] = []byte("v")
		}
		return m
	}
	tests := []struct {
		name    string
		call    func() error
		wantErr error
		wantMsg string
	}{
		{"128 keys may be got", func() error { _, err := s.Get(many(128)...); return err }, nil, ""},
		{"129 keys may not be got", func() error { _, err := s.Get(many(129)...); return err }, ErrTooManyKeys, "too many keys: 129 keys, limit 128"},
		{"128 entries may be put", func() error { return s.Put(manyEntries(128)) }, nil, ""},
		{"129 entries may not be put", func() error { return s.Put(manyEntries(129)) }, ErrTooManyKeys, "too many keys: 129 keys, limit 128"},
		{"129 keys may not be deleted", func() error { _, err := s.Delete(many(129)...); return err }, ErrTooManyKeys, "too many keys: 129 keys, limit 128"},
		{"a 2 KiB key may be put", func() error { return s.Put(map[string][]byte{strings.Repeat("k", 2048): nil}) }, nil, ""},
		{"a longer key may not", func() error { return s.Put(map[string][]byte{strings.Repeat("k", 2049): nil}) }, ErrKeyTooLarge, "key too large: 2049 bytes, limit 2048"},
		{"a longer key may not be read either", func() error { _, err := s.Get(strings.Repeat("é", 1025)); return err }, ErrKeyTooLarge, "key too large: 2050 bytes, limit 2048"},
		{"a 128 KiB value may be put", func() error { return s.Put(map[string][]byte{"v": make([]byte, 128<<10)}) }, nil, ""},
		{"a value with its encoding's tags too", func() error { return s.Put(map[string][]byte{"v": make([]byte, 128<<10+32)}) }, nil, ""},
		{"a longer value may not", func() error { return s.Put(map[string][]byte{"v": make([]byte, 128<<10+33)}) }, ErrValueTooLarge, `value too large: 131105 bytes under key "v", limit 131072 (128 KiB)`},
		{"the empty key is refused", func() error { return s.Put(map[string][]byte{"": nil}) }, ErrInvalidKey, "invalid key: the empty key"},
		{"invalid UTF-8 is refused", func() error { _, err := s.Get("\xff"); return err }, ErrInvalidKey, "invalid key"},
		{"a transaction's put has the same limits", func() error { return s.Begin().Put(manyEntries(129)) }, ErrTooManyKeys, "too many keys: 129 keys, limit 128"},
		{"start and startAfter contradict", func() error { _, err := s.List(ObjectListOptions{Start: "a", StartAfter: "b"}); return err }, ErrInvalidListOptions, "invalid list options: start and startAfter cannot both be given"},
		{"a negative limit is refused", func() error { _, err := s.List(ObjectListOptions{Limit: -1}); return err }, ErrInvalidListOptions, "invalid list options: limit -1 is negative"},
		{"a class must be an identifier", func() error { _, err := db.Objects("../x").Storage("ab").Get("k"); return err }, ErrInvalidClass, `invalid durable object class "../x"`},
		{"an id must be hex", func() error { _, err := db.Objects("C").Storage("../../x").Get("k"); return err }, ErrInvalidObjectID, `invalid durable object id "../../x"`},
		{"an id must be lowercase hex", func() error { _, err := db.Objects("C").Create("ABCD", ""); return err }, ErrInvalidObjectID, `invalid durable object id "ABCD"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("err = %v, want none", err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if !strings.HasPrefix(err.Error(), tc.wantMsg) {
				t.Fatalf("message %q, want it to start %q", err, tc.wantMsg)
			}
		})
	}
}

func TestObjectTransactionIsAllOrNothing(t *testing.T) {
	db := openTest(t, &Options{Quotas: Amounts{DO: Amount{Bytes: 40}}})
	o := db.Objects("Counter")
	id := SandboxObjectID("Counter", "web1")
	if _, err := o.Create(id, "web1"); err != nil {
		t.Fatal(err)
	}
	s := o.Storage(id)
	mustObjectPut(t, s, "n", "1", "keep", "x")
	boom := errors.New("boom")
	tests := []struct {
		name    string
		fn      func(tx *ObjectTxn) error
		wantErr error
	}{
		{"an error from the function rolls back", func(tx *ObjectTxn) error {
			tx.Put(map[string][]byte{"n": []byte("2"), "new": []byte("y")})
			tx.Delete("keep")
			return boom
		}, boom},
		{"rollback discards the writes without an error", func(tx *ObjectTxn) error {
			tx.Put(map[string][]byte{"n": []byte("2")})
			tx.Rollback()
			return nil
		}, nil},
		{"a quota exceeded at commit writes nothing", func(tx *ObjectTxn) error {
			tx.Delete("keep")
			return tx.Put(map[string][]byte{"n": []byte("2"), "big": []byte(strings.Repeat("z", 40))})
		}, ErrQuotaExceeded},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Transaction(tc.fn)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("Transaction = %v, want %v", err, tc.wantErr)
			}
			got, err := s.Get("n", "keep", "new", "big")
			want := map[string][]byte{"n": []byte("1"), "keep": []byte("x")}
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("after: %q %v, want %q", got, err, want)
			}
		})
	}
	t.Run("reads inside see the writes inside, and a commit applies them", func(t *testing.T) {
		err := s.Transaction(func(tx *ObjectTxn) error {
			got, _ := tx.Get("n")
			if string(got["n"]) != "1" {
				return fmt.Errorf("read n = %q", got["n"])
			}
			tx.Put(map[string][]byte{"n": []byte("2")})
			if got, _ := tx.Get("n"); string(got["n"]) != "2" {
				return fmt.Errorf("read own write n = %q", got["n"])
			}
			_, err := tx.Delete("keep")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		got, _ := s.Get("n", "keep")
		if !reflect.DeepEqual(got, map[string][]byte{"n": []byte("2")}) {
			t.Fatalf("after commit: %q", got)
		}
	})
	if u, _ := db.Usage("web1"); u.DO != (Amount{Bytes: 2, Keys: 1}) {
		t.Fatalf("usage = %+v, want the 2 bytes of n", u.DO)
	}
}

func TestObjectStorageIsChargedToItsOwner(t *testing.T) {
	db := openTest(t, &Options{Quotas: Amounts{DO: Amount{Keys: 2}}})
	o := db.Objects("Counter")
	id := SandboxObjectID("Counter", "web1")
	rec, err := o.Create(id, "web1")
	if err != nil || rec.Owner != "web1" {
		t.Fatalf("Create = %+v, %v", rec, err)
	}
	// Creating again keeps the first owner.
	if rec, _ := o.Create(id, "web2"); rec.Owner != "web1" {
		t.Fatalf("Create again: owner %q, want web1", rec.Owner)
	}
	s := o.Storage(id)
	mustObjectPut(t, s, "a", "123", "b", "4")
	if u, _ := db.Usage("web1"); u.DO != (Amount{Bytes: 6, Keys: 2}) {
		t.Fatalf("usage = %+v", u.DO)
	}
	err = s.Put(map[string][]byte{"c": nil})
	var qe *QuotaError
	if !errors.As(err, &qe) || qe.Kind != KindDO || qe.Limit != "keys" {
		t.Fatalf("a third key: %v, want the do keys quota", err)
	}
	if !strings.HasPrefix(err.Error(), "quota_exceeded: the do keys quota of sandbox web1 is 2") {
		t.Fatalf("message %q", err)
	}
	// An object without an owner is charged to nobody.
	mustObjectPut(t, o.Storage(NewObjectID()), "a", "b", "c", "d", "e", "f")
	if all, _ := db.AllUsage(); len(all) != 1 {
		t.Fatalf("usage of %v, want web1's only", all)
	}
	if err := s.DeleteAll(); err != nil {
		t.Fatal(err)
	}
	if u, _ := db.Usage("web1"); u.DO != (Amount{}) {
		t.Fatalf("usage after DeleteAll = %+v", u.DO)
	}
	if rec, err := o.Lookup(id); err != nil || rec.Owner != "web1" {
		t.Fatalf("after DeleteAll the object is %+v, %v; want it kept with its owner", rec, err)
	}
}

func TestDeleteAllRemovesKeysAndTheSQLDatabase(t *testing.T) {
	db := openTest(t, nil)
	s := db.Objects("Counter").Storage(NewObjectID())
	mustObjectPut(t, s, "a", "1")
	if _, err := s.Exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	sqlFile := filepath.Join(db.dir, "do", "Counter", s.id+".sqlite")
	if _, err := os.Stat(sqlFile); err != nil {
		t.Fatalf("no SQL file: %v", err)
	}
	if err := s.DeleteAll(); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.List(ObjectListOptions{}); len(got) != 0 {
		t.Fatalf("keys after DeleteAll: %q", keysOf(got))
	}
	if _, err := os.Stat(sqlFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("SQL file after DeleteAll: %v", err)
	}
	// The object goes on, empty.
	if _, err := s.Exec("SELECT * FROM t"); err == nil || !strings.Contains(err.Error(), "no such table") {
		t.Fatalf("the old table after DeleteAll: %v", err)
	}
}

func TestPurgeRemovesTheSandboxsObjectsAndNothingElse(t *testing.T) {
	db := openTest(t, nil)
	o := db.Objects("MyContainer")
	type obj struct {
		s     *ObjectStorage
		owner string
	}
	objs := map[string]obj{}
	for _, owner := range []string{"web1", "web2"} {
		id := SandboxObjectID("MyContainer", owner)
		if _, err := o.Create(id, owner); err != nil {
			t.Fatal(err)
		}
		objs[owner] = obj{o.Storage(id), owner}
	}
	// web1 also owns an object of another class; one object has no owner.
	other := db.Objects("Other")
	otherID := SandboxObjectID("Other", "web1")
	other.Create(otherID, "web1")
	objs["web1/other"] = obj{other.Storage(otherID), "web1"}
	objs["nobody"] = obj{o.Storage(ObjectIDFromName("MyContainer", "web1")), ""}
	for name, ob := range objs {
		mustObjectPut(t, ob.s, "k", name)
		if _, err := ob.s.Exec("CREATE TABLE t(x); INSERT INTO t VALUES (?)", name); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Purge("web1"); err != nil {
		t.Fatal(err)
	}
	for name, ob := range objs {
		gone := ob.owner == "web1"
		got, _ := ob.s.Get("k")
		_, statErr := os.Stat(filepath.Join(db.dir, "do", ob.s.class, ob.s.id+".sqlite"))
		_, lookErr := db.Objects(ob.s.class).Lookup(ob.s.id)
		if gone {
			if len(got) != 0 || !errors.Is(statErr, os.ErrNotExist) || !errors.Is(lookErr, ErrNotFound) {
				t.Errorf("%s survived the purge: keys %q, SQL file %v, record %v", name, got, statErr, lookErr)
			}
			continue
		}
		if string(got["k"]) != name || statErr != nil || lookErr != nil {
			t.Errorf("%s was touched by web1's purge: keys %q, SQL file %v, record %v", name, got, statErr, lookErr)
		}
		c, err := ob.s.Exec("SELECT x FROM t")
		if err != nil || len(c.Rows) != 1 || c.Rows[0][0] != name {
			t.Errorf("%s's SQL after web1's purge: %+v %v", name, c, err)
		}
	}
	if u, _ := db.Usage("web1"); u.DO != (Amount{}) {
		t.Errorf("web1's usage after its purge: %+v", u.DO)
	}
	if u, _ := db.Usage("web2"); u.DO.Keys != 1 {
		t.Errorf("web2's usage after web1's purge: %+v", u.DO)
	}
}

func TestAVersion2FileOpensAndKeepsItsUsage(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	// Make it what a version 2 build left: its version and a 48-byte
	// usage record.
	b, err := bolt.Open(filepath.Join(dir, FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	v2 := encodeUsage(Amounts{KV: Amount{Bytes: 5, Keys: 1}})[:48]
	b.Update(func(tx *bolt.Tx) error {
		tx.Bucket(bucketMeta).Put(keyVersion, []byte("2"))
		kv, _ := nestedRW(tx, bucketKV, [][]byte{[]byte("default"), []byte(ScopeShared)})
		kv.Put([]byte("k"), encodeRecord(Entry{Value: []byte("1234"), Owner: "web1"}))
		return tx.Bucket(bucketUsage).Put([]byte("web1"), v2)
	})
	b.Close()
	db, err = Open(dir, nil)
	if err != nil {
		t.Fatalf("opening a version 2 file: %v", err)
	}
	defer db.Close()
	if u, _ := db.Usage("web1"); u != (Amounts{KV: Amount{Bytes: 5, Keys: 1}}) {
		t.Fatalf("usage = %+v", u)
	}
	if err := db.Check(); err != nil {
		t.Fatal(err)
	}
	// Charging DO storage rewrites the record in the new layout.
	id := SandboxObjectID("C", "web1")
	db.Objects("C").Create(id, "web1")
	mustObjectPut(t, db.Objects("C").Storage(id), "a", "b")
	if u, _ := db.Usage("web1"); u != (Amounts{KV: Amount{Bytes: 5, Keys: 1}, DO: Amount{Bytes: 2, Keys: 1}}) {
		t.Fatalf("usage = %+v", u)
	}
	db.bolt.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyVersion); string(v) != "3" {
			t.Errorf("schema version %s, want 3", v)
		}
		return nil
	})
}

// Two objects in parallel, and one object from many goroutines that take a
// lock per object as the worker's input gate does: no increment is lost,
// and -race finds nothing shared unguarded.
func TestObjectsRunInParallelAndOneObjectsCallsInTurn(t *testing.T) {
	db := openTest(t, nil)
	o := db.Objects("Counter")
	ids := []string{NewObjectID(), NewObjectID()}
	locks := map[string]*sync.Mutex{ids[0]: {}, ids[1]: {}}
	for _, id := range ids {
		if _, err := o.Storage(id).Exec("CREATE TABLE c(n INTEGER)"); err != nil {
			t.Fatal(err)
		}
		if _, err := o.Storage(id).Exec("INSERT INTO c VALUES (0)"); err != nil {
			t.Fatal(err)
		}
	}
	const workers, rounds = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*len(ids))
	for _, id := range ids {
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := o.Storage(id)
				for range rounds {
					err := func() error {
						locks[id].Lock()
						defer locks[id].Unlock()
						// Read, then write in another call: only the
						// lock keeps the increments from colliding.
						got, err := s.Get("n")
						if err != nil {
							return err
						}
						var n int
						fmt.Sscan(string(got["n"]), &n)
						if err := s.Put(map[string][]byte{"n": []byte(fmt.Sprint(n + 1))}); err != nil {
							return err
						}
						c, err := s.Exec("SELECT n FROM c")
						if err != nil {
							return err
						}
						_, err = s.Exec("UPDATE c SET n = ?", c.Rows[0][0].(int64)+1)
						return err
					}()
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, id := range ids {
		got, _ := o.Storage(id).Get("n")
		c, err := o.Storage(id).Exec("SELECT n FROM c")
		if err != nil {
			t.Fatal(err)
		}
		if string(got["n"]) != fmt.Sprint(workers*rounds) || c.Rows[0][0] != int64(workers*rounds) {
			t.Fatalf("object %s: kv %s, sql %v; want %d", id, got["n"], c.Rows[0][0], workers*rounds)
		}
	}
}

func BenchmarkObjectPutGet(b *testing.B) {
	db, err := Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	s := db.Objects("Counter").Storage(NewObjectID())
	v := []byte("a value of some thirty-two bytes")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		k := fmt.Sprint("key", i%64)
		if err := s.Put(map[string][]byte{k: v}); err != nil {
			b.Fatal(err)
		}
		if got, err := s.Get(k); err != nil || len(got[k]) != len(v) {
			b.Fatal(got, err)
		}
	}
}

func ExampleObjectStorage() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	db, _ := Open(dir, nil)
	defer db.Close()

	// The object idFromString(ctx.containerId) reaches: web1's own.
	counters := db.Objects("MyContainer")
	id := SandboxObjectID("MyContainer", "web1")
	counters.Create(id, "web1")
	s := counters.Storage(id)

	s.Put(map[string][]byte{"b": []byte("2"), "a": []byte("1"), "é": []byte("3")})
	s.Transaction(func(tx *ObjectTxn) error {
		got, _ := tx.Get("a")
		return tx.Put(map[string][]byte{"a": append(got["a"], '!')})
	})
	entries, _ := s.List(ObjectListOptions{Reverse: true, Limit: 2})
	for _, e := range entries {
		fmt.Printf("%s=%s\n", e.Key, e.Value)
	}
	s.Exec("CREATE TABLE hits(path TEXT)")
	s.Exec("INSERT INTO hits VALUES (?), (?)", "/", "/x")
	c, _ := s.Exec("SELECT count(*) AS n FROM hits")
	row, _ := c.One()
	fmt.Println(c.Columns[0], row[0])
	// Output:
	// é=3
	// b=2
	// n 2
}
