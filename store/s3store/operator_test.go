package s3store_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/s3store"
)

func TestAPurgeDeletesTheSandboxsScopeInEveryBucketAndKeepsTheRest(t *testing.T) {
	srv := server(t)
	s := open(t, srv, nil)
	db, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	op := s3store.Operator(db, s)
	put := func(bucket, scope, key string) {
		t.Helper()
		if _, err := s.Blobs(bucket, scope, store.Limits{}).Put(key, strings.NewReader("v"), store.PutOptions{Size: 1}); err != nil {
			t.Fatal(err)
		}
	}
	mine, other := store.SandboxScope("sb1"), store.SandboxScope("sb10")
	put("one", mine, "a")
	put("one", mine, "dir/b")
	put("two", mine, "c")
	put("one", other, "a")
	put("one", store.ScopeShared, "a")
	if err := op.Purge("sb1"); err != nil {
		t.Fatalf("purge: %v", err)
	}
	tests := []struct {
		bucket, scope, key string
		kept               bool
	}{
		{"one", mine, "a", false},
		{"one", mine, "dir/b", false},
		{"two", mine, "c", false},
		{"one", other, "a", true},
		{"one", store.ScopeShared, "a", true},
	}
	for _, tt := range tests {
		_, err := s.Blobs(tt.bucket, tt.scope, store.Limits{}).Head(tt.key)
		if tt.kept && err != nil {
			t.Errorf("%s %s %s was purged: %v", tt.bucket, tt.scope, tt.key, err)
		}
		if !tt.kept && !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s %s %s after the purge: %v", tt.bucket, tt.scope, tt.key, err)
		}
	}
	if err := op.Purge("sb1"); !errors.Is(err, store.ErrNothingToPurge) {
		t.Errorf("a second purge: %v, want store.ErrNothingToPurge", err)
	}
	if err := op.Check(); err != nil {
		t.Errorf("check: %v", err)
	}
}
