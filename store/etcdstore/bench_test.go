package etcdstore_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/handlers"
	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
	"github.com/interceptd/interceptd/store/etcdstore"
	"github.com/interceptd/interceptd/store/etcdstore/etcdtest"
)

// engines opens, in one run, the bbolt store and the etcd backend on one
// real etcd member (loopback), so that their figures compare.
func engines(b *testing.B) []struct {
	name string
	kv   backend.KV
} {
	c := etcdtest.Start(b)
	s, err := etcdstore.Open(etcdstore.Options{Endpoints: c.Endpoints(), Prefix: "/bench/",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	// The cache serves once its watch is current.
	for !s.Live() {
		time.Sleep(10 * time.Millisecond)
	}
	db, err := store.Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return []struct {
		name string
		kv   backend.KV
	}{
		{"bbolt", backend.Bolt(db).Keys(store.KindKV, "bench", store.ScopeShared, store.Limits{})},
		{"etcd", s.Keys(store.KindKV, "bench", store.ScopeShared, store.Limits{})},
	}
}

// BenchmarkKVGet reads one hot key: the etcd backend's cache serves it.
func BenchmarkKVGet(b *testing.B) {
	for _, e := range engines(b) {
		b.Run("engine="+e.name, func(b *testing.B) {
			if err := e.kv.Put("hot", store.Entry{Value: make([]byte, 128)}); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := e.kv.Get("hot"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkKVPut measures durable puts of 128 bytes with 1 and 32
// concurrent writers (ns/op is the time per write over all writers).
func BenchmarkKVPut(b *testing.B) {
	for _, e := range engines(b) {
		for _, writers := range []int{1, 32} {
			b.Run(fmt.Sprintf("engine=%s/writers=%d", e.name, writers), func(b *testing.B) {
				val := make([]byte, 128)
				var n atomic.Int64
				var wg sync.WaitGroup
				b.ResetTimer()
				for w := 0; w < writers; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							i := n.Add(1)
							if i > int64(b.N) {
								return
							}
							if err := e.kv.Put(fmt.Sprintf("k%d-%d", writers, i), store.Entry{Value: val}); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
			})
		}
	}
}

// BenchmarkKVHandlerGet reads one hot key through the kv handler (as a
// sandbox's GET reaches it, without the network), on each engine.
func BenchmarkKVHandlerGet(b *testing.B) {
	for _, e := range engines(b) {
		b.Run("engine="+e.name, func(b *testing.B) {
			if err := e.kv.Put("hot", store.Entry{Value: make([]byte, 128)}); err != nil {
				b.Fatal(err)
			}
			h := &handlers.KV{Store: oneSpace{e.kv}, Kind: store.KindKV, Namespace: "bench", Limits: store.Limits{}.WithDefaults()}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				w := httptest.NewRecorder()
				if err := h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/hot", nil), router.Env{Sandbox: "sb1"}); err != nil || w.Code != http.StatusOK {
					b.Fatalf("%d %v", w.Code, err)
				}
			}
		})
	}
}

// oneSpace serves one KV space whatever the handler asks for.
type oneSpace struct{ kv backend.KV }

func (o oneSpace) Keys(kind, namespace, scope string, l store.Limits) backend.KV { return o.kv }
func (o oneSpace) Blobs(string, string, store.Limits) backend.Blobs              { return nil }
func (o oneSpace) Objects(string) backend.Objects                                { return nil }
