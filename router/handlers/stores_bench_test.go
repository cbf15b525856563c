package handlers_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/handlers"
	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
	"github.com/prometheus/client_golang/prometheus"
)

// benchStores opens a bbolt store as the daemon does (with metrics) and
// returns it as the handlers take it. It is the one line that differs from
// the benchmark's copy on a tree before the storage interfaces.
func benchStores(b *testing.B) backend.Stores {
	db, err := store.Open(b.TempDir(), &store.Options{Metrics: store.NewMetrics(prometheus.NewRegistry())})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return backend.Bolt(db)
}

// BenchmarkStoreHandlers calls the kv, state and blob handlers directly,
// without a network, so that what the storage layer between a handler and
// bbolt costs is most of what is measured.
func BenchmarkStoreHandlers(b *testing.B) {
	s := benchStores(b)
	l := store.Limits{}.WithDefaults()
	kv := &handlers.KV{Store: s, Kind: store.KindKV, Namespace: "default", Limits: l}
	state := &handlers.KV{Store: s, Kind: store.KindState, Namespace: "default", PerSandbox: true, Transactions: true, Limits: l}
	blob := &handlers.Blob{Store: s, Bucket: "default", Limits: l}
	env := router.Env{Sandbox: "sb1"}
	serve := func(b *testing.B, h router.Handler, method, target, body string, hdr http.Header, want int) {
		r := httptest.NewRequest(method, target, strings.NewReader(body))
		for k, v := range hdr {
			r.Header[k] = v
		}
		w := httptest.NewRecorder()
		if err := h.ServeHTTP(w, r, env); err != nil {
			b.Fatalf("%s %s: %v", method, target, err)
		}
		if w.Code != want {
			b.Fatalf("%s %s: %d, want %d", method, target, w.Code, want)
		}
	}
	small := strings.Repeat("v", 128)
	serve(b, kv, http.MethodPut, "/hot", small, nil, http.StatusNoContent)
	serve(b, state, http.MethodPut, "/hot", small, nil, http.StatusNoContent)
	serve(b, blob, http.MethodPut, "/obj", string(bytes.Repeat([]byte("b"), 64<<10)), nil, http.StatusOK)
	txn := `{"conditions":[{"key":"hot","exists":true}],"reads":["hot"],"writes":[{"key":"n","value":"1"}]}`
	tests := []struct {
		name               string
		h                  router.Handler
		method, target, in string
		hdr                http.Header
		want               int
	}{
		{"a KV GET of a hot key", kv, http.MethodGet, "/hot", "", nil, http.StatusOK},
		{"a KV PUT of 128 bytes", kv, http.MethodPut, "/k", small, nil, http.StatusNoContent},
		{"a KV listing", kv, http.MethodGet, "/?prefix=h", "", nil, http.StatusOK},
		{"a state GET of a hot key", state, http.MethodGet, "/hot", "", nil, http.StatusOK},
		{"a state transaction", state, http.MethodPost, "/", txn, nil, http.StatusOK},
		{"a blob GET of 64 KiB", blob, http.MethodGet, "/obj", "", nil, http.StatusOK},
		{"a blob GET of a range", blob, http.MethodGet, "/obj", "", http.Header{"Range": {"bytes=1000-1999"}}, http.StatusPartialContent},
		{"a blob GET answered 304", blob, http.MethodGet, "/obj", "", http.Header{"If-None-Match": {"*"}}, http.StatusNotModified},
		{"a blob PUT of 4 KiB", blob, http.MethodPut, "/put", strings.Repeat("p", 4096), nil, http.StatusOK},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				serve(b, tt.h, tt.method, tt.target, tt.in, tt.hdr, tt.want)
			}
		})
	}
}
