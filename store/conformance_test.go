package store_test

import (
	"sync"
	"testing"
	"time"

	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
	"github.com/interceptd/interceptd/store/storetest"
)

// boltHarness opens a fresh bbolt store per test, on a clock the suite
// moves, and checks the file's consistency when the test ends.
func boltHarness() storetest.Harness {
	var mu sync.Mutex
	now := time.Now()
	dbs := map[backend.Stores]*store.DB{}
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	return storetest.Harness{
		Open: func(t *testing.T) backend.Stores {
			db, err := store.Open(t.TempDir(), &store.Options{Now: clock})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := db.Check(); err != nil {
					t.Errorf("store check: %v", err)
				}
				db.Close()
			})
			s := backend.Bolt(db)
			mu.Lock()
			dbs[s] = db
			mu.Unlock()
			return s
		},
		Operator: func(s backend.Stores) backend.Operator { mu.Lock(); defer mu.Unlock(); return dbs[s] },
		Now:      clock,
		Advance:  func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() },
	}
}

func TestBoltKeepsTheKVContract(t *testing.T)     { storetest.TestKV(t, boltHarness()) }
func TestBoltKeepsTheStateContract(t *testing.T)  { storetest.TestState(t, boltHarness()) }
func TestBoltKeepsTheBlobContract(t *testing.T)   { storetest.TestBlobs(t, boltHarness()) }
func TestBoltKeepsTheObjectContract(t *testing.T) { storetest.TestObjects(t, boltHarness()) }
func TestBoltKeepsTheQuotaContract(t *testing.T)  { storetest.TestQuotas(t, boltHarness()) }
