package s3store_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"io"
	"math/rand"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/s3store"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
)

func content(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func etag(b []byte) string { s := md5.Sum(b); return hex.EncodeToString(s[:]) }

// smallParts makes multipart uploads and ranged reads happen at a few MiB.
func smallParts(o *s3store.Options) { o.PartSize = s3store.MinPartSize }

// onlyReader hides bytes.Reader's other methods, as a request body would.
type onlyReader struct{ io.Reader }

func TestObjectsOverAPartAreStreamedInPartsWithTheirMD5AsETag(t *testing.T) {
	srv := server(t)
	s := open(t, srv, smallParts)
	b := s.Blobs("big", store.ScopeShared, store.Limits{})
	data := content(3*s3store.MinPartSize+777, 1)
	tests := []struct {
		name string
		size int64
	}{
		{"with its size announced", int64(len(data))},
		{"with its size unknown", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			oi, err := b.Put("o", onlyReader{bytes.NewReader(data)}, store.PutOptions{Size: tt.size, Custom: map[string]string{"k": "v"}})
			if err != nil {
				t.Fatal(err)
			}
			if oi.ETag != etag(data) || oi.Size != int64(len(data)) || oi.Custom["k"] != "v" {
				t.Fatalf("put returned %+v", oi)
			}
			o, err := b.Open("o")
			if err != nil {
				t.Fatal(err)
			}
			defer o.Close()
			got, err := io.ReadAll(o)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes that differ, %v", len(got), err)
			}
			if o.Info().ETag != etag(data) {
				t.Fatalf("open's ETag %s", o.Info().ETag)
			}
		})
	}
	t.Run("and no staging object is left behind", func(t *testing.T) {
		wantNoStaging(t, srv.Client(), s)
	})
}

func wantNoStaging(t *testing.T, c *minio.Client, s *s3store.Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for oi := range c.ListObjects(ctx, testBucket, minio.ListObjectsOptions{Recursive: true}) {
		if strings.Contains(oi.Key, ".staging/") {
			t.Errorf("staging object %s left", oi.Key)
		}
	}
}

func TestARefusedLargeUploadLeavesTheOldObjectAndNothingStaged(t *testing.T) {
	srv := server(t)
	s := open(t, srv, smallParts)
	b := s.Blobs("big", store.ScopeShared, store.Limits{MaxObjectBytes: 4 * s3store.MinPartSize})
	data := content(2*s3store.MinPartSize+1, 2)
	if _, err := b.Put("o", bytes.NewReader([]byte("old")), store.PutOptions{Size: 3}); err != nil {
		t.Fatal(err)
	}
	wrong := md5.Sum([]byte("not it"))
	tests := []struct {
		name string
		r    io.Reader
		o    store.PutOptions
		want error
	}{
		{"a content that does not match Content-MD5", bytes.NewReader(data), store.PutOptions{Size: -1, ContentMD5: wrong[:]}, store.ErrBadDigest},
		{"a body shorter than announced", bytes.NewReader(data), store.PutOptions{Size: int64(len(data)) + 10}, store.ErrIncomplete},
		{"a body longer than announced", bytes.NewReader(data), store.PutOptions{Size: int64(len(data)) - 10}, store.ErrValueTooLarge},
		{"a body over the object limit", bytes.NewReader(content(4*s3store.MinPartSize+1, 3)), store.PutOptions{Size: -1}, store.ErrValueTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := b.Put("o", tt.r, tt.o); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			o, err := b.Open("o")
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(o)
			o.Close()
			if string(got) != "old" {
				t.Fatalf("the object is now %.20q", got)
			}
		})
	}
	wantNoStaging(t, srv.Client(), s)
}

// A writer that lands between the precondition's last check and the write
// that makes an upload visible is caught by the store's conditional
// request (If-None-Match / If-Match), not only by the check before it.
func TestAWriteRacingTheCommitIsRefusedByTheConditionalRequest(t *testing.T) {
	srv := server(t)
	s := open(t, srv, smallParts)
	tests := []struct {
		name string
		size int
		old  bool // an object exists to start with
	}{
		{"a single-part upload if absent", 10, false},
		{"a multipart upload if absent", 2*s3store.MinPartSize + 5, false},
		{"a single-part upload if unchanged", 10, true},
		{"a multipart upload if unchanged", 2*s3store.MinPartSize + 5, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := s.Blobs("race", store.ScopeShared, store.Limits{})
			key := "o" + string(rune('a'+i))
			var before *store.ObjectInfo
			if tt.old {
				oi, err := b.Put(key, strings.NewReader("first"), store.PutOptions{Size: -1})
				if err != nil {
					t.Fatal(err)
				}
				before = &oi
			}
			calls := 0
			// Approves the state it first saw, and on its last call (at
			// the commit) lets a racer write first: the check still
			// passes, so only the conditional request can refuse.
			pre := func(cur *store.ObjectInfo) error {
				calls++
				if calls == 2 {
					if _, err := b.Put(key, strings.NewReader("racer"), store.PutOptions{Size: -1}); err != nil {
						t.Errorf("racer: %v", err)
					}
					return nil
				}
				if (cur == nil) != (before == nil) || (cur != nil && cur.ETag != before.ETag) {
					return store.ErrPreconditionFailed
				}
				return nil
			}
			_, err := b.Put(key, bytes.NewReader(content(tt.size, 4)), store.PutOptions{Size: -1, Precondition: pre})
			if !errors.Is(err, store.ErrPreconditionFailed) {
				t.Fatalf("got %v, want store.ErrPreconditionFailed", err)
			}
			o, err := b.Open(key)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(o)
			o.Close()
			if string(got) != "racer" {
				t.Fatalf("the object is %.20q, want the racer's", got)
			}
		})
	}
}

func TestAWriteRacingAConditionalDeleteIsKeptByTheConditionalRequest(t *testing.T) {
	srv := server(t)
	s := open(t, srv, nil)
	if ok, err := s.ConditionalDeletes(); err != nil || !ok {
		t.Fatalf("the probe says SeaweedFS ignores If-Match on DELETE (%v): it honours it", err)
	}
	tests := []struct {
		name  string
		owner string // "": no accounting
	}{
		{"without accounting", ""},
		{"with the object charged to its owner", "sb1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := s
			if tt.owner != "" {
				st, _ = accounted(t, nil, nil)
			}
			b := st.Blobs("race", store.ScopeShared, store.Limits{})
			before, err := b.Put("o", strings.NewReader("first"), store.PutOptions{Size: -1, Owner: tt.owner})
			if err != nil {
				t.Fatal(err)
			}
			calls := 0
			// Approves the object it first saw, after letting a racer
			// replace it: only the conditional DELETE can keep the
			// racer's write; asked again, it refuses the racer's.
			pre := func(cur *store.ObjectInfo) error {
				calls++
				if calls == 1 {
					if _, err := b.Put("o", strings.NewReader("racer"), store.PutOptions{Size: -1, Owner: tt.owner}); err != nil {
						t.Errorf("racer: %v", err)
					}
					return nil
				}
				if cur == nil || cur.ETag != before.ETag {
					return store.ErrPreconditionFailed
				}
				return nil
			}
			if err := b.DeleteIf("o", pre); !errors.Is(err, store.ErrPreconditionFailed) {
				t.Fatalf("got %v, want store.ErrPreconditionFailed", err)
			}
			o, err := b.Open("o")
			if err != nil {
				t.Fatalf("the racer's object: %v", err)
			}
			got, _ := io.ReadAll(o)
			o.Close()
			if string(got) != "racer" {
				t.Fatalf("the object is %q, want the racer's", got)
			}
			if fixed, err := st.Reconcile(); err != nil || len(fixed) > 0 {
				t.Errorf("recount corrected %v (%v)", fixed, err)
			}
		})
	}
}

func TestAReaderOfAReplacedObjectFailsRatherThanMix(t *testing.T) {
	srv := server(t)
	s := open(t, srv, smallParts)
	b := s.Blobs("pin", store.ScopeShared, store.Limits{})
	data := content(3*s3store.MinPartSize, 5)
	for _, change := range []string{"replaced", "deleted"} {
		t.Run("when it is "+change, func(t *testing.T) {
			if _, err := b.Put("o", bytes.NewReader(data), store.PutOptions{Size: -1}); err != nil {
				t.Fatal(err)
			}
			o, err := b.Open("o")
			if err != nil {
				t.Fatal(err)
			}
			defer o.Close()
			first := make([]byte, 1000)
			if _, err := io.ReadFull(o, first); err != nil || !bytes.Equal(first, data[:1000]) {
				t.Fatalf("first read: %v", err)
			}
			if change == "replaced" {
				_, err = b.Put("o", bytes.NewReader(content(len(data), 6)), store.PutOptions{Size: -1})
			} else {
				err = b.Delete("o")
			}
			if err != nil {
				t.Fatal(err)
			}
			rest, err := io.ReadAll(o)
			if !errors.Is(err, s3store.ErrChanged) {
				t.Fatalf("read %d more bytes, %v; want s3store.ErrChanged", len(rest), err)
			}
			if !bytes.Equal(rest, data[1000:1000+len(rest)]) {
				t.Fatal("the bytes read before the error are not the opened version's")
			}
		})
	}
}

// An endpoint that refuses connections, and one that accepts and never
// answers: both are store.ErrUnavailable, the second within the timeout.
func TestAnUnreachableStoreIsUnavailableWithinTheTimeout(t *testing.T) {
	refused, _ := net.Listen("tcp", "127.0.0.1:0")
	refusedAddr := refused.Addr().String()
	refused.Close()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	const timeout = 700 * time.Millisecond
	for _, ep := range []struct{ name, addr string }{{"refusing", refusedAddr}, {"silent", silent.Addr().String()}} {
		s, err := s3store.New(s3store.Options{Endpoint: ep.addr, Bucket: testBucket, Region: "us-east-1", PathStyle: true,
			Insecure: true, AccessKey: "a", SecretKey: "b", RequestTimeout: timeout})
		if err != nil {
			t.Fatal(err)
		}
		b := s.Blobs("b", store.ScopeShared, store.Limits{})
		ops := []struct {
			name string
			run  func() error
		}{
			{"put", func() error {
				_, err := b.Put("k", strings.NewReader("v"), store.PutOptions{Size: 1})
				return err
			}},
			{"large put", func() error {
				_, err := b.Put("k", bytes.NewReader(make([]byte, 9<<20)), store.PutOptions{Size: -1})
				return err
			}},
			{"head", func() error { _, err := b.Head("k"); return err }},
			{"open", func() error { _, err := b.Open("k"); return err }},
			{"delete", func() error { return b.Delete("k") }},
			{"list", func() error { _, err := b.List(store.BlobListOptions{}); return err }},
			{"check", s.Check},
		}
		for _, op := range ops {
			t.Run("a "+op.name+" on a "+ep.name+" endpoint", func(t *testing.T) {
				start := time.Now()
				err := op.run()
				if !errors.Is(err, store.ErrUnavailable) {
					t.Fatalf("got %v, want store.ErrUnavailable", err)
				}
				if d := time.Since(start); d > 3*timeout {
					t.Fatalf("took %v, timeout %v", d, timeout)
				}
			})
		}
	}
}

func TestCheckWritesReadsAndDeletesAProbeAndNamesAMissingBucket(t *testing.T) {
	srv := server(t)
	if err := open(t, srv, func(o *s3store.Options) { o.Prefix = "check-test/" }).Check(); err != nil {
		t.Fatalf("check: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for oi := range srv.Client().ListObjects(ctx, testBucket, minio.ListObjectsOptions{Prefix: "check-test/", Recursive: true}) {
		t.Errorf("left %s", oi.Key)
	}
	err := open(t, srv, func(o *s3store.Options) { o.Bucket = "no-such-bucket" }).Check()
	if err == nil || !strings.Contains(err.Error(), "no-such-bucket") || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("check of a missing bucket: %v", err)
	}
}

// S3 promises listings in the byte order of UTF-8 keys, which is the
// order the contract asks: checked on the server, with keys past ASCII.
func TestAListingIsInByteOrderPastASCII(t *testing.T) {
	srv := server(t)
	b := open(t, srv, nil).Blobs("order", store.ScopeShared, store.Limits{})
	keys := []string{"b", "é", "a\x7f", "B", "~", "a", "ab", "日本"}
	for _, k := range keys {
		if _, err := b.Put(k, strings.NewReader(k), store.PutOptions{Size: -1}); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"B", "a", "ab", "a\x7f", "b", "~", "é", "日本"}
	var got []string
	cursor := ""
	for {
		res, err := b.List(store.BlobListOptions{Limit: 3, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range res.Objects {
			got = append(got, o.Key)
		}
		if !res.Truncated {
			break
		}
		cursor = res.Cursor
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("listed %q, want %q", got, want)
	}
}

func TestAStoreThatIgnoresIfMatchOnDeleteIsDetectedAndDeleteIfFallsBack(t *testing.T) {
	srv := server(t)
	// A proxy that drops If-Match from DELETEs: a server that ignores it.
	// (The header is added after signing, so dropping it breaks nothing.)
	target, _ := url.Parse("http://" + srv.Endpoint())
	rp := httputil.NewSingleHostReverseProxy(target)
	ps := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodDelete {
			r.Header.Del("If-Match")
		}
		rp.ServeHTTP(w, r)
	}))
	defer ps.Close()
	tests := []struct {
		name     string
		endpoint string
		honoured bool
	}{
		{"SeaweedFS itself honours it", srv.Endpoint(), true},
		{"a store that drops it is found out", strings.TrimPrefix(ps.URL, "http://"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t, srv, func(o *s3store.Options) { o.Endpoint = tt.endpoint })
			if err := s.Check(); err != nil {
				t.Fatal(err)
			}
			if ok, err := s.ConditionalDeletes(); err != nil || ok != tt.honoured {
				t.Fatalf("conditional deletes honoured: %v (%v), want %v", ok, err, tt.honoured)
			}
			// DeleteIf works either way: with the condition, or on the HEAD.
			b := s.Blobs("probe", store.ScopeShared, store.Limits{})
			oi, err := b.Put("o", strings.NewReader("v"), store.PutOptions{Size: 1})
			if err != nil {
				t.Fatal(err)
			}
			if err := b.DeleteIf("o", func(cur *store.ObjectInfo) error {
				if cur == nil || cur.ETag != oi.ETag {
					return store.ErrPreconditionFailed
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if _, err := b.Head("o"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("after DeleteIf: %v", err)
			}
		})
	}
}
