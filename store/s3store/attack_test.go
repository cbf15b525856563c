package s3store_test

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"testing"

	"github.com/interceptd/interceptd/store"
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
	// it, and S3 answers both DELETEs with success. Were both to give
	// its charge back, sb1 would be charged less than it holds (here
	// below nothing), and have that much more room.
	s, op := accounted(t, nil, nil)
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
}
