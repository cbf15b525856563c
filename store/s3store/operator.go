package s3store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/minio/minio-go/v7"

	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
)

// Operator is the operator's view of stores whose blobs are in s and the
// rest in op (the bbolt store): a purge also deletes the sandbox's scope of
// every bucket in s, and a check also probes s. Usage and quotas stay op's:
// S3-held blobs are charged to no one (docs/stores.md says so).
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
	return nil
}

// PurgeScope deletes the objects of scope in every bucket, and returns how
// many there were. The buckets are the first level of names under the
// prefix (".staging" and ".check" are interceptd's own).
func (s *Store) PurgeScope(scope string) (int, error) {
	var buckets []string
	token := ""
	for {
		r, err := s.core.ListObjectsV2(s.bucket, s.prefix, "", token, "/", 1000)
		if err != nil {
			return 0, s.wrap("purge", err)
		}
		for _, p := range r.CommonPrefixes {
			if b := strings.TrimPrefix(p.Prefix, s.prefix); !strings.HasPrefix(b, ".") {
				buckets = append(buckets, p.Prefix)
			}
		}
		if !r.IsTruncated || r.NextContinuationToken == "" {
			break
		}
		token = r.NextContinuationToken
	}
	n := 0
	for _, b := range buckets {
		under := b + url.PathEscape(scope) + "/"
		// No deadline for the whole scope, which may be large: the
		// transport's response-header timeout bounds each call.
		ctx, cancel := context.WithCancel(context.Background())
		objs := make(chan minio.ObjectInfo)
		var lerr error // read after objs is closed
		go func() {
			defer close(objs)
			for oi := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: under, Recursive: true}) {
				if oi.Err != nil {
					lerr = oi.Err
					return
				}
				n++
				select {
				case objs <- oi:
				case <-ctx.Done():
					return
				}
			}
		}()
		for r := range s.c.RemoveObjects(ctx, s.bucket, objs, minio.RemoveObjectsOptions{}) {
			if r.Err != nil && !isNotFound(r.Err) {
				cancel()
				return n, s.wrap("purge", r.Err)
			}
		}
		cancel()
		if lerr != nil {
			return n, s.wrap("purge", lerr)
		}
	}
	return n, nil
}
