package handlers

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
)

// downKV is a KV space whose engine cannot be reached: every call fails with
// store.ErrUnavailable, wrapped as a remote engine wraps it.
type downKV struct{ backend.KV }

var errDown = fmt.Errorf("etcd 127.0.0.1:2379: context deadline exceeded: %w", store.ErrUnavailable)

func (downKV) Get(string) (store.Entry, error)                  { return store.Entry{}, errDown }
func (downKV) Put(string, store.Entry) error                    { return errDown }
func (downKV) Delete(string) error                              { return errDown }
func (downKV) CheckKey(string) error                            { return nil }
func (downKV) Limits() store.Limits                             { return store.Limits{MaxKeyBytes: 512, MaxValueBytes: 1 << 20} }
func (downKV) List(store.ListOptions) (store.ListResult, error) { return store.ListResult{}, errDown }
func (downKV) Apply(store.Txn) (map[string]*store.Entry, error) { return nil, errDown }

type downKVSpaces struct{}

func (downKVSpaces) Keys(string, string, string, store.Limits) backend.KV { return downKV{} }

type downBlobs struct{ backend.Blobs }

func (downBlobs) Put(string, io.Reader, store.PutOptions) (store.ObjectInfo, error) {
	return store.ObjectInfo{}, errDown
}
func (downBlobs) Head(string) (store.ObjectInfo, error)                { return store.ObjectInfo{}, errDown }
func (downBlobs) Open(string) (backend.Object, error)                  { return nil, errDown }
func (downBlobs) Delete(string) error                                  { return errDown }
func (downBlobs) DeleteIf(string, func(*store.ObjectInfo) error) error { return errDown }
func (downBlobs) List(store.BlobListOptions) (store.BlobList, error) {
	return store.BlobList{}, errDown
}

type downBuckets struct{}

func (downBuckets) Blobs(string, string, store.Limits) backend.Blobs { return downBlobs{} }

func TestAnUnreachableStoreAnswers503StoreUnavailableWithoutItsAddress(t *testing.T) {
	kv := &KV{Store: downKVSpaces{}, Kind: store.KindKV, Namespace: "kv"}
	state := &KV{Store: downKVSpaces{}, Kind: store.KindState, Namespace: "state", PerSandbox: true, Transactions: true}
	blob := &Blob{Store: downBuckets{}, Bucket: "b"}
	tests := []struct {
		name   string
		h      router.Handler
		method string
		target string
		body   string
	}{
		{"a kv read", kv, "GET", "http://my.kv/k", ""},
		{"a kv write", kv, "PUT", "http://my.kv/k", "v"},
		{"a kv delete", kv, "DELETE", "http://my.kv/k", ""},
		{"a kv listing", kv, "GET", "http://my.kv/", ""},
		{"a state transaction", state, "POST", "http://state.do/", `{"writes":[{"key":"a","value":"1"}]}`},
		{"a blob upload", blob, "PUT", "http://my.r2/o", "data"},
		{"a blob download", blob, "GET", "http://my.r2/o", ""},
		{"a blob listing", blob, "GET", "http://my.r2/", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, tt.target, strings.NewReader(tt.body))
			if tt.body != "" {
				r.Header.Set("Content-Type", "application/json")
			}
			w := httptest.NewRecorder()
			err := tt.h.ServeHTTP(w, r, router.Env{Sandbox: "web1"})
			var he *router.Error
			if !errors.As(err, &he) || he.Status != http.StatusServiceUnavailable || !strings.HasPrefix(he.Reason, "store_unavailable") {
				t.Fatalf("returned %#v (wrote %d %q), want a 503 store_unavailable", err, w.Code, w.Body)
			}
			if strings.Contains(he.Reason, "127.0.0.1") || !errors.Is(he.Err, store.ErrUnavailable) {
				t.Errorf("the reason %q shows the engine's address, or the cause %v is lost", he.Reason, he.Err)
			}
		})
	}
}
