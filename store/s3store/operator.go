package s3store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
)

// Operator is the operator's view of stores whose blobs are in s and the
// rest in op (bbolt, or etcd with bbolt): a purge also deletes the
// sandbox's scope of every bucket in s; a check also probes s and
// recounts its blob usage (Reconcile); Usage adds the blob usage s
// charges (Account) to op's. Quotas stay op's.
func Operator(op backend.Operator, s *Store) backend.Operator { return operator{op, s} }

type operator struct {
	backend.Operator
	s *Store
}

// Purge implements backend.Operator.
func (o operator) Purge(sandbox string) error {
	err := o.Operator.Purge(sandbox)
	if err != nil && !errors.Is(err, store.ErrNothingToPurge) {
		return err
	}
	n, serr := o.s.PurgeScope(store.SandboxScope(sandbox))
	if serr != nil {
		return serr
	}
	if n > 0 && errors.Is(err, store.ErrNothingToPurge) {
		return nil
	}
	return err
}

// Check implements backend.Operator.
func (o operator) Check() error {
	if err := o.Operator.Check(); err != nil {
		return err
	}
	if err := o.s.Check(); err != nil {
		return fmt.Errorf("s3 blob store %s: %w", o.s.where, err)
	}
	if _, err := o.s.Reconcile(); err != nil {
		return fmt.Errorf("s3 blob store %s: recounting the blob usage: %w", o.s.where, err)
	}
	return nil
}

// Usage implements backend.Operator: op's usage, with the blobs the S3
// ledger charges to the sandbox added.
func (o operator) Usage(sandbox string) (store.Amounts, error) {
	u, err := o.Operator.Usage(sandbox)
	if err != nil || o.s.acct == nil {
		return u, err
	}
	b, err := o.s.acct.usage(sandbox)
	u.Blob.Bytes += b.Bytes
	u.Blob.Keys += b.Keys
	return u, err
}

// buckets returns the object-name prefixes of the buckets: the first
// level of names under the prefix (".staging" and ".check" are
// interceptd's own).
func (s *Store) buckets() ([]string, error) {
	var out []string
	token := ""
	for {
		r, err := s.core.ListObjectsV2(s.bucket, s.prefix, "", token, "/", 1000)
		if err != nil {
			return nil, err
		}
		for _, p := range r.CommonPrefixes {
			if b := strings.TrimPrefix(p.Prefix, s.prefix); !strings.HasPrefix(b, ".") {
				out = append(out, p.Prefix)
			}
		}
		if !r.IsTruncated || r.NextContinuationToken == "" {
			return out, nil
		}
		token = r.NextContinuationToken
	}
}

// blobsOf returns the Blobs an object name is in, and its key.
func (s *Store) blobsOf(name string) (*Blobs, string, bool) {
	rest := strings.TrimPrefix(name, s.prefix)
	bucket, rest, ok1 := strings.Cut(rest, "/")
	scope, key, ok2 := strings.Cut(rest, "/")
	if !ok1 || !ok2 || strings.HasPrefix(bucket, ".") {
		return nil, "", false
	}
	return &Blobs{s: s, base: s.prefix + bucket + "/" + scope + "/"}, key, true
}

// walk calls f, eight at a time, with every object under each of the
// prefixes unders (recursively), and returns the first error.
func (s *Store) walk(unders []string, f func(name string) error) error {
	// No deadline for the whole walk, which may be large: the transport's
	// response-header timeout bounds each call.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
			cancel()
		}
		mu.Unlock()
	}
	names := make(chan string)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range names {
				if err := f(n); err != nil {
					fail(err)
				}
			}
		}()
	}
	func() {
		defer close(names)
		for _, under := range unders {
			for oi := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: under, Recursive: true}) {
				if oi.Err != nil {
					if ctx.Err() == nil {
						fail(s.wrap("list", oi.Err))
					}
					return
				}
				select {
				case names <- oi.Key:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	wg.Wait()
	return firstErr
}

// PurgeScope deletes the objects of scope in every bucket, and returns how
// many there were. With accounting, each object is deleted conditionally
// on what its HEAD saw and given back to its owner, as Delete does, the
// owners marked in the ledger meanwhile.
func (s *Store) PurgeScope(scope string) (int, error) {
	bs, err := s.buckets()
	if err != nil {
		return 0, s.wrap("purge", err)
	}
	unders := make([]string, len(bs))
	for i, b := range bs {
		unders[i] = b + url.PathEscape(scope) + "/"
	}
	var (
		mu  sync.Mutex // guards n, h, adj
		n   int
		h   = s.acct.start(time.Hour)
		adj = map[string]store.Amount{}
	)
	err = s.walk(unders, func(name string) error {
		b, key, ok := s.blobsOf(name)
		if !ok {
			return nil
		}
		var cur *store.ObjectInfo
		etag := ""
		if h != nil {
			var err error
			if cur, etag, err = b.head(key); err != nil || cur == nil {
				return err
			}
			mu.Lock()
			err = h.mark(cur.Owner)
			if err == nil && h.due() {
				// A long purge keeps its owners out of a recount.
				for o := range h.owners {
					if err = h.reserve(o, store.Amount{}); err != nil {
						break
					}
				}
			}
			mu.Unlock()
			if err != nil {
				return err
			}
		}
		err := s.removeIfMatch(name, etag)
		if isPreconditionFailed(err) || errors.Is(err, errGone) {
			// Replaced since the HEAD: a write into a scope being
			// purged; the next purge takes it. Or deleted by another,
			// who gave its charge back.
			return nil
		}
		if err != nil {
			return s.wrap("purge", err)
		}
		mu.Lock()
		defer mu.Unlock()
		n++
		if cur != nil && cur.Owner != "" {
			a := adj[cur.Owner]
			a.Bytes -= chargeOf(cur)
			a.Keys--
			adj[cur.Owner] = a
		}
		return nil
	})
	h.end(adj)
	return n, err
}

// Reconcile recounts the blob usage of every owner from the objects
// themselves (a listing, and a HEAD of each for its owner) and corrects
// the ledger where it differs: what a crash between an S3 call and its
// accounting left, once its lease has run out. An owner with an operation
// in flight, or one whose record changed during the recount, is left for
// the next run. It returns the owners it corrected.
func (s *Store) Reconcile() ([]string, error) {
	a := s.acct
	if a == nil {
		return nil, nil
	}
	// The records first: an owner whose record is the same after the
	// recount had no operation begin or end meanwhile, so the recount of
	// its objects is exact.
	var names []string
	for cursor := ""; ; {
		r, err := a.ledger.List(store.ListOptions{Cursor: cursor})
		if err != nil {
			return nil, fmt.Errorf("listing the s3 blob usage: %w", err)
		}
		for _, k := range r.Keys {
			names = append(names, k.Name)
		}
		if r.ListComplete || r.Cursor == "" {
			break
		}
		cursor = r.Cursor
	}
	recs, raws := map[string]*ledgerRecord{}, map[string][]byte{}
	for i := 0; i < len(names); i += store.MaxTxnOps {
		r, w, err := a.read(names[i:min(i+store.MaxTxnOps, len(names))])
		if err != nil {
			return nil, err
		}
		for k, v := range r {
			recs[k], raws[k] = v, w[k]
		}
	}
	counted := map[string]*store.Amount{}
	var mu sync.Mutex
	err := s.walk([]string{s.prefix}, func(name string) error {
		b, key, ok := s.blobsOf(name)
		if !ok {
			return nil
		}
		cur, _, err := b.head(key)
		if err != nil || cur == nil || cur.Owner == "" {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		c := counted[cur.Owner]
		if c == nil {
			c = &store.Amount{}
			counted[cur.Owner] = c
		}
		c.Bytes += chargeOf(cur)
		c.Keys++
		return nil
	})
	if err != nil {
		return nil, err
	}
	now := a.now()
	var fixed []string
	for o := range counted {
		if recs[o] == nil {
			recs[o] = &ledgerRecord{}
		}
	}
	for o, r := range recs {
		want := store.Amount{}
		if c := counted[o]; c != nil {
			want = *c
		}
		if r.live(now) {
			continue
		}
		if len(r.Pending) == 0 && r.Bytes == want.Bytes && r.Objects == want.Keys && (want != store.Amount{} || raws[o] == nil) {
			continue
		}
		t := store.Txn{Conditions: []store.Condition{{Key: o, Absent: true}}}
		if raws[o] != nil {
			t.Conditions = []store.Condition{{Key: o, Equals: raws[o]}}
		}
		if want == (store.Amount{}) {
			t.Deletes = []string{o}
		} else {
			v, _ := json.Marshal(ledgerRecord{Rev: r.Rev + 1, Bytes: want.Bytes, Objects: want.Keys})
			t.Writes = []store.Write{{Key: o, Entry: store.Entry{Value: v}}}
		}
		if _, err := a.ledger.Apply(t); errors.Is(err, store.ErrConditionFailed) {
			continue // changed during the recount: the next run
		} else if err != nil {
			return fixed, fmt.Errorf("correcting the s3 blob usage of sandbox %s: %w", o, err)
		}
		if len(r.Pending) == 0 && r.Bytes == want.Bytes && r.Objects == want.Keys {
			continue // a record of nothing, deleted
		}
		slog.Warn("s3 store: corrected a sandbox's blob usage from a recount",
			"sandbox", o, "recorded_bytes", r.Bytes, "recorded_objects", r.Objects, "pending", len(r.Pending),
			"counted_bytes", want.Bytes, "counted_objects", want.Keys)
		fixed = append(fixed, o)
	}
	return fixed, nil
}
