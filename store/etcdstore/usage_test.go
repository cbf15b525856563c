package etcdstore_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/handlers"
	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/etcdstore"
	"github.com/interceptd/interceptd/store/etcdstore/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestAllUsageReadsEveryOwnersCountersFleetWide(t *testing.T) {
	c := etcdtest.Start(t)
	a := open(t, c.Endpoints(), "/usage/", etcdstore.Options{})
	b := open(t, c.Endpoints(), "/usage/", etcdstore.Options{})
	// Written through one host, read through the other: one fleet.
	for _, w := range []struct{ kind, owner, key, value string }{
		{store.KindKV, "web/1", "k", "12345"},
		{store.KindState, "web/1", "s", "12"},
		{store.KindKV, "db", "k", "1"},
	} {
		kv := a.Keys(w.kind, "ns", store.SandboxScope(w.owner), store.Limits{})
		if err := kv.Put(w.key, store.Entry{Value: []byte(w.value), Owner: w.owner}); err != nil {
			t.Fatal(err)
		}
	}
	all, err := b.AllUsage()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]store.Amounts{
		"web/1": {KV: store.Amount{Bytes: 6, Keys: 1}, State: store.Amount{Bytes: 3, Keys: 1}},
		"db":    {KV: store.Amount{Bytes: 2, Keys: 1}},
	}
	if fmt.Sprint(all) != fmt.Sprint(want) {
		t.Errorf("AllUsage = %v, want %v", all, want)
	}
}

func TestTheUsageCacheReadsEtcdOncePerRefreshAndKeepsAnOutageAsLong(t *testing.T) {
	c := etcdtest.Start(t)
	s := open(t, c.Endpoints(), "/usagecache/", etcdstore.Options{RequestTimeout: 300 * time.Millisecond})
	kv := s.Keys(store.KindKV, "ns", store.SandboxScope("sb"), store.Limits{})
	put := func(v string) {
		t.Helper()
		if err := kv.Put("k", store.Entry{Value: []byte(v), Owner: "sb"}); err != nil {
			t.Fatal(err)
		}
	}
	put("1")
	const refresh = 500 * time.Millisecond
	cache := s.UsageCache(refresh)
	bytes := func() int64 {
		t.Helper()
		all, err := cache.Get()
		if err != nil {
			t.Fatal(err)
		}
		return all["sb"].KV.Bytes
	}
	if got := bytes(); got != 2 {
		t.Fatalf("first read: %d bytes, want 2", got)
	}
	put("12345")
	if got := bytes(); got != 2 {
		t.Errorf("within the refresh interval: %d bytes, want the cached 2 (each scrape would read etcd)", got)
	}
	time.Sleep(refresh)
	if got := bytes(); got != 6 {
		t.Errorf("after the refresh interval: %d bytes, want 6", got)
	}

	c.Members[0].Kill()
	time.Sleep(refresh)
	start := time.Now()
	if _, err := cache.Get(); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("with etcd down: %v, want store.ErrUnavailable", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("the read with etcd down took %v, over its request timeout", took)
	}
	start = time.Now()
	if _, err := cache.Get(); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("again with etcd down: %v", err)
	}
	if took := time.Since(start); took > 50*time.Millisecond {
		t.Errorf("a second read within the refresh waited %v: the outage was not kept", took)
	}
}

func TestStoreCheckSaysWhenTheServersMaxTxnOpsIsTooLowAndAFullStateTransactionNamesIt(t *testing.T) {
	servers := []struct {
		name  string
		flags []string
		ok    bool
	}{
		{"an etcd with the default --max-txn-ops of 128", []string{"--max-txn-ops", "128"}, false},
		{"an etcd with --max-txn-ops 512", []string{"--max-txn-ops", "512"}, true},
	}
	for _, sv := range servers {
		t.Run(sv.name, func(t *testing.T) {
			c := etcdtest.StartWithFlags(t, sv.flags...)
			s := open(t, c.Endpoints(), "/txnops/", etcdstore.Options{})
			err := s.CheckTxnOps(t.Context())
			if sv.ok != (err == nil) {
				t.Fatalf("CheckTxnOps: %v", err)
			}
			if err != nil && (!errors.Is(err, store.ErrMisconfigured) || !strings.Contains(err.Error(), "--max-txn-ops 512")) {
				t.Errorf("CheckTxnOps: %v, want store.ErrMisconfigured naming --max-txn-ops 512", err)
			}
			// The operator's check (interceptd store --check) says it too.
			op := s.WithLocal(localStore(t))
			if err := op.Check(); sv.ok != (err == nil) || (err != nil && !strings.Contains(err.Error(), "--max-txn-ops")) {
				t.Errorf("the operator's Check: %v", err)
			}
			// The probe leaves nothing under the prefix.
			if r, err := c.Client(t).Get(t.Context(), "/txnops/", clientWithPrefix()...); err != nil || r.Count != 0 {
				t.Errorf("under the prefix after the probe: %v keys, %v", r.Count, err)
			}

			// A state transaction of store.MaxTxnOps keys with expiries,
			// through the state handler.
			var w strings.Builder
			w.WriteString(`{"writes": [`)
			for i := range store.MaxTxnOps {
				if i > 0 {
					w.WriteString(",")
				}
				fmt.Fprintf(&w, `{"key": "k%03d", "value": "v", "ttl": 3600}`, i)
			}
			w.WriteString(`]}`)
			h := &handlers.KV{Store: s, Kind: store.KindState, Namespace: "state", PerSandbox: true, Transactions: true}
			code, body := serve(h, httptest.NewRequest(http.MethodPost, "http://state.do/", strings.NewReader(w.String())))
			if sv.ok {
				if code != http.StatusOK {
					t.Errorf("a full transaction: %d %s", code, body)
				}
				return
			}
			if code != http.StatusInternalServerError || !strings.Contains(body, "store_misconfigured") || !strings.Contains(body, "--max-txn-ops") {
				t.Errorf("a full transaction: %d %s, want 500 store_misconfigured naming --max-txn-ops", code, body)
			}
		})
	}
}

func TestTheKVHandlersOwnRefusalOfALargeValueSaysItIsEtcdsRequestLimit(t *testing.T) {
	c := etcdtest.Start(t)
	s := open(t, c.Endpoints(), "/413/", etcdstore.Options{})
	h := &handlers.KV{Store: s, Kind: store.KindKV, Namespace: "ns", Limits: store.Limits{}.WithDefaults()}
	max := s.MaxValueBytes()
	bodies := []struct {
		name   string
		length int64 // -1: chunked, no Content-Length
	}{
		{"a body whose Content-Length is over the limit", int64(max + 1)},
		{"a chunked body that runs over the limit", -1},
	}
	for _, b := range bodies {
		t.Run(b.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPut, "http://my.kv/big", io.LimitReader(zeros{}, int64(max+1)))
			r.ContentLength = b.length
			code, body := serve(h, r)
			if code != http.StatusRequestEntityTooLarge || !strings.Contains(body, fmt.Sprint(max)) ||
				!strings.Contains(body, "--max-request-bytes") || !strings.Contains(body, "etcd") {
				t.Errorf("got %d %q, want 413 naming %d and the etcd servers' --max-request-bytes", code, body, max)
			}
		})
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// serve runs h as the router would for sandbox "sb" and returns the
// status and body (the error's reason when h returns one).
func serve(h router.Handler, r *http.Request) (int, string) {
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, r, router.Env{Sandbox: "sb", Host: r.Host, Handler: r.Host}); err != nil {
		router.WriteError(w, err)
	}
	return w.Code, w.Body.String() + w.Header().Get("X-Interceptd-Error")
}

// localStore is an empty bbolt store, the host's, closed in cleanup.
func localStore(t *testing.T) *store.DB {
	t.Helper()
	db, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func clientWithPrefix() []clientv3.OpOption {
	return []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCountOnly()}
}
