package s3store_test

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
	"github.com/interceptd/interceptd/store/etcdstore"
	"github.com/interceptd/interceptd/store/etcdstore/etcdtest"
	"github.com/interceptd/interceptd/store/s3store"
	"github.com/interceptd/interceptd/store/s3store/s3test"
	"github.com/interceptd/interceptd/store/storetest"
)

const testBucket = "interceptd-test"

// shared is the package's weed server, started once by TestMain (starting
// one takes seconds, its first write more); each test gets a prefix of its
// own in its bucket. nil when there is no weed binary.
var shared *s3test.Server

func TestMain(m *testing.M) {
	code := func() int {
		if s3test.Binary() == "" {
			return m.Run() // the tests that need it skip
		}
		dir, err := os.MkdirTemp("", "s3store-test-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		shared, err = s3test.New(dir, s3test.Options{Buckets: []string{testBucket}})
		if shared != nil {
			defer shared.Stop()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "starting the S3 server:", err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// server is the shared server, or skips t when there is none.
func server(t testing.TB) *s3test.Server {
	t.Helper()
	if shared == nil {
		t.Skip("no SeaweedFS weed binary (set $INTERCEPTD_WEED or put weed on $PATH; .ci/test builds it)")
	}
	return shared
}

var prefixes atomic.Int64

func open(t testing.TB, srv *s3test.Server, tweak func(*s3store.Options)) *s3store.Store {
	t.Helper()
	o := s3store.Options{
		Endpoint: srv.Endpoint(), Bucket: testBucket, Region: "us-east-1",
		Prefix:    fmt.Sprintf("t%d/", prefixes.Add(1)),
		PathStyle: true, Insecure: true,
		AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey,
		RequestTimeout: 10 * time.Second,
	}
	if tweak != nil {
		tweak(&o)
	}
	s, err := s3store.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Blobs only: the composed stores' other kinds are nil, which the blob
// suite never touches.
func TestS3KeepsTheBlobContract(t *testing.T) {
	srv := server(t)
	storetest.TestBlobs(t, storetest.Harness{
		Open: func(t *testing.T) backend.Stores {
			return backend.Compose(nil, open(t, srv, nil), nil)
		},
		Unsupported: unsupported,
	})
}

// unsupported is the blob check S3 cannot keep.
var unsupported = map[string]string{
	// S3 keeps one version of an object (a versioned bucket is not
	// something every S3-compatible server has, nor every operator
	// wants): a reader pinned by ETag fails with s3store.ErrChanged
	// instead, which TestAReaderOfAReplacedObjectFailsRatherThanMix
	// checks.
	"an open reader keeps the version it opened when the object is replaced or deleted": "S3 keeps no old version; reads are pinned by ETag and fail with ErrChanged",
}

// The daemon always charges S3-held blobs: the contract holds with the
// accounting on, and the ledger is exact after it (quotaHarness).
func TestS3KeepsTheBlobContractWhileChargingItsOwners(t *testing.T) {
	h := quotaHarness(t, server(t), nil)
	h.Unsupported = unsupported
	storetest.TestBlobs(t, h)
}

// quotaHarness opens, per test, a fresh prefix of the shared S3 server
// for blobs, with KV, state, Durable Objects and the accounting in a fresh
// bbolt store, or (etcd) KV, state and the accounting in a fresh prefix of
// a real etcd: the two engines the S3 ledger lives in.
func quotaHarness(t *testing.T, srv *s3test.Server, etcd *etcdtest.Cluster) storetest.Harness {
	var mu sync.Mutex
	ops := map[backend.Stores]backend.Operator{}
	return storetest.Harness{
		Open: func(t *testing.T) backend.Stores {
			db, err := store.Open(t.TempDir(), nil)
			if err != nil {
				t.Fatal(err)
			}
			var s backend.Stores = backend.Bolt(db)
			var op, quotas backend.Operator = db, db
			if etcd != nil {
				es, err := etcdstore.Open(etcdstore.Options{
					Endpoints: etcd.Endpoints(),
					Prefix:    fmt.Sprintf("/s3-suite-%d/", prefixes.Add(1)),
				})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { es.Close() })
				// As the daemon wires it: the ledger and the quotas
				// in etcd, fleet-wide.
				s, op, quotas = backend.Compose(es, s, s), es.WithLocal(db), es
			}
			s3 := open(t, srv, nil)
			s3.Account(s, quotas)
			t.Cleanup(func() {
				// Every blob operation of the suite has settled: the
				// ledger must be what the objects hold.
				if fixed, err := s3.Reconcile(); err != nil || len(fixed) > 0 {
					t.Errorf("recount: corrected %v, %v", fixed, err)
				}
				db.Close()
			})
			all := backend.Compose(s, s3, s)
			mu.Lock()
			ops[all] = s3store.Operator(op, s3)
			mu.Unlock()
			return all
		},
		Operator: func(s backend.Stores) backend.Operator { mu.Lock(); defer mu.Unlock(); return ops[s] },
	}
}

func TestS3KeepsTheQuotaContractWithTheAccountingInBbolt(t *testing.T) {
	storetest.TestQuotas(t, quotaHarness(t, server(t), nil))
}

func TestS3KeepsTheQuotaContractWithTheAccountingInEtcd(t *testing.T) {
	srv := server(t)
	storetest.TestQuotas(t, quotaHarness(t, srv, etcdtest.Start(t)))
}
