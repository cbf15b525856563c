package s3store_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
	"github.com/interceptd/interceptd/store/s3store"
)

// Attacks of a sandbox on its blob quota through the ledger. Each test
// drives the race it names step by step, so that it is not left to
// timing.

// gate is a body that gives nothing until it is opened.
type gate struct {
	open    chan struct{}
	r       io.Reader
	once    sync.Once
	started chan struct{} // closed at the first Read
}

func (g *gate) Read(p []byte) (int, error) {
	g.once.Do(func() { close(g.started) })
	<-g.open
	return g.r.Read(p)
}

func TestTheCreditOfAnOverwrittenObjectIsNotSpentTwiceWhenItIsDeletedMeanwhile(t *testing.T) {
	// The overwrite of "a" starts while "a" (sb1's) is there, so it is
	// credited a's charge and reserves nothing; "a" is then deleted
	// (its charge given back) and "b" takes the room. Were the
	// overwrite committed on the credit it took at its start, sb1
	// would hold a and b, twice its quota, and could go on so.
	s, op := accounted(t, nil, map[string]map[string]int64{"sb1": {"blob.bytes": 150}})
	b := s.Blobs("q", store.ScopeShared, store.Limits{})
	if _, err := b.Put("a", bytes.NewReader(content(100, 1)), store.PutOptions{Size: -1, Owner: "sb1"}); err != nil {
		t.Fatal(err)
	}
	g := &gate{open: make(chan struct{}), started: make(chan struct{}), r: bytes.NewReader(content(100, 2))}
	done := make(chan error, 1)
	go func() {
		_, err := b.Put("a", g, store.PutOptions{Size: -1, Owner: "sb1"})
		done <- err
	}()
	<-g.started // the overwrite has HEADed "a" and reserved
	if err := b.Delete("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put("b", bytes.NewReader(content(100, 3)), store.PutOptions{Size: -1, Owner: "sb1"}); err != nil {
		t.Fatal(err)
	}
	close(g.open)
	err := <-done
	if !errors.Is(err, store.ErrQuotaExceeded) {
		t.Errorf("the overwrite: got %v, want store.ErrQuotaExceeded", err)
	}
	if u := blobUsage(t, op, "sb1"); u.Bytes > 150 {
		t.Errorf("sb1 is charged %+v, over its quota of 150 bytes", u)
	}
}

func TestTwoDeletesOfOneObjectGiveItsChargeBackOnce(t *testing.T) {
	// Both deletes HEAD the object before either DELETEs it: both see
	// it, and send If-Match with its ETag. The second is refused: by
	// SeaweedFS with 412, by AWS with 404 (the object is gone), which a
	// proxy plays here. Were both to give its charge back, sb1 would be
	// charged less than it holds (here below nothing), and have that
	// much more room.
	srv := server(t)
	target, _ := url.Parse("http://" + srv.Endpoint())
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(r *http.Response) error {
		if r.Request.Method == http.MethodDelete && r.StatusCode == http.StatusPreconditionFailed && !strings.Contains(r.Request.URL.Path, ".check/") {
			body := `<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>`
			r.Body.Close()
			r.Body = io.NopCloser(strings.NewReader(body))
			r.ContentLength = int64(len(body))
			r.Header.Set("Content-Length", strconv.Itoa(len(body)))
			r.StatusCode, r.Status = http.StatusNotFound, "404 Not Found"
		}
		return nil
	}
	aws := httptest.NewServer(rp)
	defer aws.Close()
	for _, tt := range []struct{ name, endpoint string }{
		{"SeaweedFS refuses the second with 412", srv.Endpoint()},
		{"AWS refuses the second with 404", strings.TrimPrefix(aws.URL, "http://")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, op := accounted(t, func(o *s3store.Options) { o.Endpoint = tt.endpoint }, nil)
			b := s.Blobs("q", store.ScopeShared, store.Limits{})
			for _, k := range []string{"a", "keep"} {
				if _, err := b.Put(k, bytes.NewReader(content(100, 1)), store.PutOptions{Size: -1, Owner: "sb1"}); err != nil {
					t.Fatal(err)
				}
			}
			const n = 4
			var seen sync.WaitGroup
			seen.Add(n)
			var wg sync.WaitGroup
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					first := true
					err := b.DeleteIf("a", func(cur *store.ObjectInfo) error {
						if first {
							first = false
							seen.Done()
							seen.Wait() // every delete has seen "a"
						}
						return nil
					})
					if err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			if u := blobUsage(t, op, "sb1"); u != (store.Amount{Bytes: 4 + 100, Keys: 1}) {
				t.Fatalf("sb1 is charged %+v for the one object of 104 bytes it holds", u)
			}
		})
	}
}

// aborted gives r, then fails as a request body does whose client went
// away mid-body (chunked, so no length was announced).
type aborted struct{ r io.Reader }

func (a *aborted) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if err == io.EOF {
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

func TestAnUploadWhoseClientAbortsMidBodyIsNotStored(t *testing.T) {
	// An aborted body of unknown size must not be taken for a whole one
	// ending there: the bbolt store refuses it with the body's error.
	s, op := accounted(t, smallParts, nil)
	b := s.Blobs("q", store.ScopeShared, store.Limits{})
	for _, tt := range []struct {
		name string
		n    int
	}{
		{"within one part", 30},
		{"in the second part", s3store.MinPartSize + 30},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := b.Put("a", &aborted{bytes.NewReader(content(tt.n, 1))}, store.PutOptions{Size: -1, Owner: "sb1"})
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("got %v, want io.ErrUnexpectedEOF", err)
			}
			if _, err := b.Head("a"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("head: %v, want store.ErrNotFound", err)
			}
			if u := blobUsage(t, op, "sb1"); u != (store.Amount{}) {
				t.Errorf("sb1 is charged %+v for nothing", u)
			}
		})
	}
}

func TestAnUploadSlowerThanItsLeaseIsChargedAfterARecountWipedItsReservation(t *testing.T) {
	// A sandbox trickles a body past the lease of its reservation; a
	// recount (store --check) meanwhile charges it only for what is
	// committed, and it fills that room. Were the upload settled
	// against the reservation the recount wiped, its object would be
	// charged nothing.
	s, op := accounted(t, nil, map[string]map[string]int64{"sb1": {"blob.bytes": 150}})
	b := s.Blobs("q", store.ScopeShared, store.Limits{})
	g, done := uploadPastARecount(t, s, b, bytes.NewReader(content(100, 2)))
	if _, err := b.Put("b", bytes.NewReader(content(100, 3)), store.PutOptions{Size: 100, Owner: "sb1"}); err != nil {
		t.Fatal(err)
	}
	close(g.open)
	if err := <-done; !errors.Is(err, store.ErrQuotaExceeded) {
		t.Errorf("the slow upload: got %v, want store.ErrQuotaExceeded", err)
	}
	held := int64(0)
	for _, k := range []string{"a", "b"} {
		if _, err := b.Head(k); err == nil {
			held += 101
		}
	}
	if u := blobUsage(t, op, "sb1"); u.Bytes != held || held > 150 {
		t.Errorf("sb1 holds %d bytes and is charged %+v (quota 150)", held, u)
	}
}

func TestAStoreThatRefusesIfMatchOnDeleteIsProbedOnce(t *testing.T) {
	// A store that answers 501 to a DELETE carrying If-Match gave an
	// answer, not an outage: DeleteIf falls back to its HEAD, and does
	// not probe again at every delete (three calls each, one at a time).
	srv := server(t)
	target, _ := url.Parse("http://" + srv.Endpoint())
	rp := httputil.NewSingleHostReverseProxy(target)
	var refused atomic.Int32
	ps := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodDelete && r.Header.Get("If-Match") != "" {
			refused.Add(1)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusNotImplemented)
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>NotImplemented</Code><Message>A header you provided implies functionality that is not implemented.</Message></Error>`)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	defer ps.Close()
	s, op := accounted(t, func(o *s3store.Options) { o.Endpoint = strings.TrimPrefix(ps.URL, "http://") }, nil)
	b := s.Blobs("q", store.ScopeShared, store.Limits{})
	for i := range 3 {
		k := strconv.Itoa(i)
		if _, err := b.Put(k, strings.NewReader("v"), store.PutOptions{Size: 1, Owner: "sb1"}); err != nil {
			t.Fatal(err)
		}
		if err := b.DeleteIf(k, func(*store.ObjectInfo) error { return nil }); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Head(k); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("after DeleteIf: %v", err)
		}
	}
	if ok, err := s.ConditionalDeletes(); ok || err != nil {
		t.Errorf("conditional deletes honoured: %v (%v), want false", ok, err)
	}
	if n := refused.Load(); n != 1 {
		t.Errorf("%d DELETEs carried If-Match, want the probe's one", n)
	}
	if u := blobUsage(t, op, "sb1"); u != (store.Amount{}) {
		t.Errorf("sb1 is charged %+v for nothing", u)
	}
}

// reset gives r, then fails as a body whose connection was reset.
type reset struct{ r io.Reader }

func (a *reset) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if err == io.EOF {
		return n, errors.New("connection reset by peer")
	}
	return n, err
}

func TestAnUploadThatFailsAfterARecountWipedItsReservationGivesNothingBack(t *testing.T) {
	// The reservation a recount wiped is no longer in the record: the
	// failed upload must not give it back again, or the owner is
	// charged below what it holds (below nothing), and has that much
	// more room.
	s, op := accounted(t, nil, map[string]map[string]int64{"sb1": {"blob.bytes": 150}})
	b := s.Blobs("q", store.ScopeShared, store.Limits{})
	g, done := uploadPastARecount(t, s, b, &reset{bytes.NewReader(content(50, 2))})
	close(g.open)
	if err := <-done; err == nil {
		t.Fatal("the reset upload was taken")
	}
	if u := blobUsage(t, op, "sb1"); u != (store.Amount{}) {
		t.Errorf("sb1 holds nothing and is charged %+v", u)
	}
}

func TestObjectsOfABucketNamedWithALeadingDotAreRecountedAndPurged(t *testing.T) {
	// A handler's bucket may start with a dot (1-64 of [A-Za-z0-9_.-]);
	// the store's own names (.staging/, .check/) do too. Were such a
	// bucket's objects taken for the store's own, a recount would
	// charge their owner nothing for them, and a purge leave them.
	s, op := accounted(t, nil, nil)
	var skew atomic.Int64
	s.SetClock(func() time.Time { return time.Now().Add(time.Duration(skew.Load())) })
	b := s.Blobs(".hidden", store.SandboxScope("sb1"), store.Limits{})
	if _, err := b.Put("a", bytes.NewReader(content(100, 1)), store.PutOptions{Size: 100, Owner: "sb1"}); err != nil {
		t.Fatal(err)
	}
	skew.Store(int64(time.Hour))
	if _, err := s.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if u := blobUsage(t, op, "sb1"); u != (store.Amount{Bytes: 101, Keys: 1}) {
		t.Errorf("after a recount sb1 is charged %+v for its object of 101 bytes", u)
	}
	if _, err := s.PurgeScope(store.SandboxScope("sb1")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Head("a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after the purge: %v, want store.ErrNotFound", err)
	}
}

// uploadPastARecount starts sb1's upload of "a" (100 bytes announced, its
// body r held behind the returned gate), waits until its 101 bytes are
// reserved, then moves s's clock past the reservation's lease and recounts
// (as store --check does), which wipes the reservation. done gets the
// upload's result once the gate opens.
func uploadPastARecount(t *testing.T, s *s3store.Store, b backend.Blobs, r io.Reader) (g *gate, done chan error) {
	t.Helper()
	var skew atomic.Int64
	s.SetClock(func() time.Time { return time.Now().Add(time.Duration(skew.Load())) })
	g = &gate{open: make(chan struct{}), started: make(chan struct{}), r: r}
	done = make(chan error, 1)
	go func() {
		_, err := b.Put("a", g, store.PutOptions{Size: 100, Owner: "sb1"})
		done <- err
	}()
	<-g.started // 101 bytes reserved
	skew.Store(int64(time.Hour))
	if _, err := s.Reconcile(); err != nil {
		t.Fatal(err)
	}
	return g, done
}
