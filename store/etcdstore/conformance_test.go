package etcdstore_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
	"github.com/interceptd/interceptd/store/etcdstore"
	"github.com/interceptd/interceptd/store/etcdstore/etcdtest"
	"github.com/interceptd/interceptd/store/storetest"
)

var prefixes atomic.Int64

// harness opens, per test, a fresh prefix of one real etcd server, composed
// with a fresh bbolt store for blobs and Durable Objects, on a clock the
// suite moves.
func harness(t *testing.T) storetest.Harness {
	cluster := etcdtest.Start(t)
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	ops := map[backend.Stores]backend.Operator{}
	return storetest.Harness{
		Open: func(t *testing.T) backend.Stores {
			es, err := etcdstore.Open(etcdstore.Options{
				Endpoints: cluster.Endpoints(),
				Prefix:    fmt.Sprintf("/suite-%d/", prefixes.Add(1)),
				Now:       clock,
			})
			if err != nil {
				t.Fatal(err)
			}
			db, err := store.Open(t.TempDir(), &store.Options{Now: clock})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := es.Check(); err != nil {
					t.Errorf("etcd usage check: %v", err)
				}
				es.Close()
				db.Close()
			})
			s := backend.Compose(es, backend.Bolt(db), backend.Bolt(db))
			mu.Lock()
			ops[s] = es.WithLocal(db)
			mu.Unlock()
			return s
		},
		Operator: func(s backend.Stores) backend.Operator { mu.Lock(); defer mu.Unlock(); return ops[s] },
		Now:      clock,
		Advance:  func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() },
	}
}

func TestEtcdKeepsTheKVContract(t *testing.T)    { storetest.TestKV(t, harness(t)) }
func TestEtcdKeepsTheStateContract(t *testing.T) { storetest.TestState(t, harness(t)) }
func TestEtcdKeepsTheQuotaContract(t *testing.T) { storetest.TestQuotas(t, harness(t)) }
