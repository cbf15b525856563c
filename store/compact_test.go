package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestCompactShrinksTheFileAfterDeletionsAndKeepsEverythingLive(t *testing.T) {
	dir := t.TempDir()
	db, err := Open(dir, &Options{ChunkSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	kv := db.KV("default")
	state := db.Keys(KindState, "default", SandboxScope("s"), Limits{})
	blobs := db.Blobs("default", ScopeShared, Limits{})
	value := bytes.Repeat([]byte("v"), 4<<10)
	for i := 0; i < 2000; i++ {
		if err := kv.Put(fmt.Sprintf("k%04d", i), Entry{Value: value, Owner: "s"}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 4; i++ {
		if _, err := blobs.Put(fmt.Sprintf("o%d", i), bytes.NewReader(bytes.Repeat([]byte{byte(i)}, 4<<20)), PutOptions{Size: 4 << 20, Owner: "s"}); err != nil {
			t.Fatal(err)
		}
	}
	state.Put("kept", Entry{Value: []byte("state"), Owner: "s"})
	for i := 0; i < 2000; i++ {
		if i%100 != 0 {
			kv.Delete(fmt.Sprintf("k%04d", i))
		}
	}
	for i := 1; i < 4; i++ {
		blobs.Delete(fmt.Sprintf("o%d", i))
	}
	db.collect()
	usage := usageOf(t, db, "s")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	res, err := Compact(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(filepath.Join(dir, FileName))
	t.Logf("compacted %d → %d bytes", res.Before, res.After)
	if res.After != fi.Size() || res.After*3 > res.Before {
		t.Errorf("compacted %d → %d bytes (file %d): want under a third", res.Before, res.After, fi.Size())
	}
	if _, err := os.Stat(filepath.Join(dir, FileName+".compact")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the temporary file is left: %v", err)
	}

	db = openTestDir(t, dir)
	kv, blobs = db.KV("default"), db.Blobs("default", ScopeShared, Limits{})
	res2, _ := kv.List(ListOptions{})
	if len(res2.Keys) != 20 {
		t.Errorf("%d keys after compaction, want 20", len(res2.Keys))
	}
	if e, err := kv.Get("k0100"); err != nil || !bytes.Equal(e.Value, value) || e.Owner != "s" {
		t.Errorf("k0100 after compaction: %v %v", err, e.Owner)
	}
	if got := readAll(t, blobs, "o0"); got != string(bytes.Repeat([]byte{0}, 4<<20)) {
		t.Errorf("o0 after compaction: %d bytes", len(got))
	}
	if e, err := db.Keys(KindState, "default", SandboxScope("s"), Limits{}).Get("kept"); err != nil || string(e.Value) != "state" {
		t.Errorf("state after compaction: %q %v", e.Value, err)
	}
	if u := usageOf(t, db, "s"); u != usage {
		t.Errorf("usage after compaction %+v, before %+v", u, usage)
	}
}

func TestCompactRefusesAStoreThatIsOpen(t *testing.T) {
	dir := t.TempDir()
	db := openTestDir(t, dir)
	db.KV("default").Put("k", Entry{Value: []byte("v")})
	if _, err := Compact(dir); !errors.Is(err, ErrLocked) {
		t.Errorf("compacting an open store: %v, want ErrLocked", err)
	}
	if e, err := db.KV("default").Get("k"); err != nil || string(e.Value) != "v" {
		t.Errorf("the open store after the refusal: %v", err)
	}
}

// openTestDir is openTest in a given directory.
func openTestDir(t *testing.T, dir string) *DB {
	t.Helper()
	db, err := Open(dir, nil)
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

func TestADaemonThatWaitedForTheLockDuringACompactionOpensTheNewFile(t *testing.T) {
	oldDir, newDir := t.TempDir(), t.TempDir()
	for dir, key := range map[string]string{oldDir: "old", newDir: "new"} {
		db, err := Open(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		db.KV("default").Put(key, Entry{Value: []byte(key)})
		db.Close()
	}
	// A compaction holds the old file's lock...
	hold, err := bolt.Open(filepath.Join(oldDir, FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	opened := make(chan *DB)
	go func() {
		db, err := Open(oldDir, &Options{LockTimeout: 10 * time.Second})
		if err != nil {
			t.Error(err)
		}
		opened <- db
	}()
	time.Sleep(300 * time.Millisecond) // the daemon waits for the lock
	// ...renames its copy over the path, and lets go.
	if err := os.Rename(filepath.Join(newDir, FileName), filepath.Join(oldDir, FileName)); err != nil {
		t.Fatal(err)
	}
	hold.Close()
	db := <-opened
	if db == nil {
		t.FailNow()
	}
	defer db.Close()
	if _, err := db.KV("default").Get("new"); err != nil {
		t.Errorf("the daemon does not see the compacted file: %v", err)
	}
	if _, err := db.KV("default").Get("old"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the daemon opened the replaced file: %v", err)
	}
}
