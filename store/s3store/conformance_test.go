package s3store_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/interceptd/interceptd/store/backend"
	"github.com/interceptd/interceptd/store/s3store"
	"github.com/interceptd/interceptd/store/s3store/s3test"
	"github.com/interceptd/interceptd/store/storetest"
)

const testBucket = "interceptd-test"

// server is one weed server for the package's tests (starting one takes
// seconds); each test gets a prefix of its own in its bucket.
func server(t testing.TB) *s3test.Server {
	t.Helper()
	return s3test.Start(t, s3test.Options{Buckets: []string{testBucket}})
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
		Unsupported: map[string]string{
			// S3 keeps one version of an object (a versioned bucket is not
			// something every S3-compatible server has, nor every operator
			// wants): a reader pinned by ETag fails with s3store.ErrChanged
			// instead, which TestAReaderOfAReplacedObjectFailsRatherThanMix
			// checks.
			"an open reader keeps the version it opened when the object is replaced or deleted": "S3 keeps no old version; reads are pinned by ETag and fail with ErrChanged",
		},
	})
}
