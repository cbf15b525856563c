package etcdstore_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
	"github.com/interceptd/interceptd/store/etcdstore"
	"github.com/interceptd/interceptd/store/etcdstore/etcdtest"
	"github.com/prometheus/client_golang/prometheus"
)

// counter returns the value of the series of name whose one label has value.
func counter(t *testing.T, reg *prometheus.Registry, name, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func open(t *testing.T, endpoints []string, prefix string, o etcdstore.Options) *etcdstore.Store {
	t.Helper()
	o.Endpoints, o.Prefix = endpoints, prefix
	s, err := etcdstore.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// waitLive waits until a store's cache serves reads.
func waitLive(t *testing.T, s *etcdstore.Store) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !s.Live() {
		if time.Now().After(deadline) {
			t.Fatal("the cache's watch never became current")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// visibleWithin polls b until key reads as want ("" for not found) and
// returns how long that took after the write.
func visibleWithin(t *testing.T, kv backend.KV, key, want string, since time.Time) time.Duration {
	t.Helper()
	for {
		e, err := kv.Get(key)
		got := string(e.Value)
		if errors.Is(err, store.ErrNotFound) {
			got, err = "", nil
		}
		if err != nil {
			t.Fatal(err)
		}
		if got == want {
			return time.Since(since)
		}
		if time.Since(since) > 5*time.Second {
			t.Fatalf("%q reads %q 5s after the write of %q", key, got, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestAWriteOnOneHostReachesAnotherHostsCacheThroughTheWatch(t *testing.T) {
	c := etcdtest.Start(t)
	a := open(t, c.Endpoints(), "/fleet/", etcdstore.Options{})
	reg := prometheus.NewRegistry()
	b := open(t, c.Endpoints(), "/fleet/", etcdstore.Options{Metrics: etcdstore.NewMetrics(reg)})
	waitLive(t, b)
	ka := a.Keys(store.KindKV, "ns", store.ScopeShared, store.Limits{})
	kb := b.Keys(store.KindKV, "ns", store.ScopeShared, store.Limits{})
	if err := ka.Put("k", store.Entry{Value: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	visibleWithin(t, kb, "k", "1", time.Now())
	// Now b holds "1" in its cache: a's overwrite and delete must reach it.
	var worst time.Duration
	for i := 2; i < 22; i++ {
		v := fmt.Sprint(i)
		kb.Get("k") // keep it cached
		start := time.Now()
		if err := ka.Put("k", store.Entry{Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
		worst = max(worst, visibleWithin(t, kb, "k", v, start))
	}
	start := time.Now()
	if err := ka.Delete("k"); err != nil {
		t.Fatal(err)
	}
	worst = max(worst, visibleWithin(t, kb, "k", "", start))
	t.Logf("a write on one host was read from another host's cache at most %v after it was acknowledged", worst)
	if worst > time.Second {
		t.Errorf("the watch took %v to bring a write to another host", worst)
	}
	if hits := counter(t, reg, "interceptd_store_etcd_cache_reads_total", "hit"); hits == 0 {
		t.Error("no read was served by the cache: the test proved nothing about it")
	}
}

func TestAHostsOwnWriteIsReadBackAtOnceWhateverItsCacheHeld(t *testing.T) {
	c := etcdtest.Start(t)
	a := open(t, c.Endpoints(), "/own/", etcdstore.Options{})
	waitLive(t, a)
	kv := a.Keys(store.KindState, "ns", store.SandboxScope("sb"), store.Limits{})
	for i := 0; i < 50; i++ {
		v := fmt.Sprint(i)
		if err := kv.Put("k", store.Entry{Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
		if e, err := kv.Get("k"); err != nil || string(e.Value) != v {
			t.Fatalf("after writing %s read %q, %v", v, e.Value, err)
		}
	}
}

func TestAnUnreachableEtcdIsUnavailableWithinTheTimeoutAndTheCacheStopsServing(t *testing.T) {
	c := etcdtest.Start(t)
	const timeout = 500 * time.Millisecond
	s := open(t, c.Endpoints(), "/down/", etcdstore.Options{RequestTimeout: timeout, WatchProbe: 100 * time.Millisecond})
	waitLive(t, s)
	kv := s.Keys(store.KindKV, "ns", store.ScopeShared, store.Limits{})
	if err := kv.Put("k", store.Entry{Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get("k"); err != nil {
		t.Fatal(err)
	}
	c.Members[0].Kill()
	deadline := time.Now().Add(5 * time.Second)
	for s.Live() {
		if time.Now().After(deadline) {
			t.Fatal("the cache still serves 5s after etcd died")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ops := []struct {
		name string
		run  func() error
	}{
		{"a get the cache no longer serves", func() error { _, err := kv.Get("k"); return err }},
		{"a put", func() error { return kv.Put("k", store.Entry{Value: []byte("w")}) }},
		{"a delete", func() error { return kv.Delete("k") }},
		{"a list", func() error { _, err := kv.List(store.ListOptions{}); return err }},
		{"a transaction", func() error {
			_, err := kv.Apply(store.Txn{Conditions: []store.Condition{{Key: "k", Exists: true}}})
			return err
		}},
	}
	for _, op := range ops {
		start := time.Now()
		err := op.run()
		took := time.Since(start)
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s: %v, want store.ErrUnavailable", op.name, err)
		}
		// A commit reads, then writes: two requests, each bounded.
		if took > 2*timeout+250*time.Millisecond {
			t.Errorf("%s took %v, over the request timeout of %v", op.name, took, timeout)
		}
	}
	c.Members[0].Start()
	c.Wait(t, 10*time.Second)
	deadline = time.Now().Add(10 * time.Second)
	for {
		err := kv.Put("k", store.Entry{Value: []byte("back")})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd is back but a put still fails: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitLive(t, s)
	if e, err := kv.Get("k"); err != nil || string(e.Value) != "back" {
		t.Fatalf("after etcd returned: %q, %v", e.Value, err)
	}
}

func TestAValueOverEtcdsRequestLimitIsRefusedNamingTheLimit(t *testing.T) {
	c := etcdtest.Start(t)
	s := open(t, c.Endpoints(), "/big/", etcdstore.Options{})
	// The kv handler asks for bbolt's 25 MiB; etcd takes 1.5 MiB a request.
	kv := s.Keys(store.KindKV, "ns", store.ScopeShared, store.Limits{}.WithDefaults())
	max := kv.Limits().MaxValueBytes
	if max != etcdstore.DefaultMaxRequestBytes-64<<10 {
		t.Fatalf("max value %d", max)
	}
	if err := kv.Put("at", store.Entry{Value: make([]byte, max)}); err != nil {
		t.Fatalf("a value at the limit: %v", err)
	}
	err := kv.Put("over", store.Entry{Value: make([]byte, max+1)})
	if !errors.Is(err, store.ErrValueTooLarge) || !strings.Contains(err.Error(), fmt.Sprint(max)) || !strings.Contains(err.Error(), "etcd's request limit") {
		t.Fatalf("got %v, want store.ErrValueTooLarge naming the limit", err)
	}
	_, err = kv.Apply(store.Txn{Writes: []store.Write{
		{Key: "a", Entry: store.Entry{Value: make([]byte, max/2+1)}},
		{Key: "b", Entry: store.Entry{Value: make([]byte, max/2+1)}},
	}})
	if !errors.Is(err, store.ErrValueTooLarge) {
		t.Fatalf("a transaction over the request limit: %v", err)
	}
}

func TestTheSweeperReclaimsExpiredKeysAndGivesTheirOwnerItsQuotaBack(t *testing.T) {
	c := etcdtest.Start(t)
	now := time.Now()
	s := open(t, c.Endpoints(), "/sweep/", etcdstore.Options{Now: func() time.Time { return now }})
	kv := s.Keys(store.KindKV, "ns", store.SandboxScope("sb"), store.Limits{})
	if err := kv.Put("short", store.Entry{Value: []byte("v"), Owner: "sb", Expires: now.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	if err := kv.Put("long", store.Entry{Value: []byte("v"), Owner: "sb", Expires: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Sweep(); err != nil || n != 0 {
		t.Fatalf("a sweep before any expiry: %d, %v", n, err)
	}
	now = now.Add(2 * time.Second)
	if n, err := s.Sweep(); err != nil || n != 1 {
		t.Fatalf("a sweep after one expiry: %d, %v", n, err)
	}
	u, err := s.Usage("sb")
	if err != nil || u.KV.Keys != 1 {
		t.Fatalf("usage after the sweep: %+v, %v", u.KV, err)
	}
	if st, err := s.Stats(); err != nil || st.ExpiryEntries != 1 {
		t.Fatalf("expiry entries after the sweep: %+v, %v", st, err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestPingWritesAndReadsThePrefix(t *testing.T) {
	c := etcdtest.Start(t)
	s := open(t, c.Endpoints(), "/ping/", etcdstore.Options{RequestTimeout: 500 * time.Millisecond})
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	c.Members[0].Kill()
	if err := s.Ping(t.Context()); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("ping of a dead etcd: %v, want store.ErrUnavailable", err)
	}
}

func TestConcurrentWritesChargedToOneSandboxAllLandAndKeepItsUsageExact(t *testing.T) {
	c := etcdtest.Start(t)
	s := open(t, c.Endpoints(), "/owner/", etcdstore.Options{})
	kv := s.Keys(store.KindKV, "ns", store.SandboxScope("sb"), store.Limits{})
	const writers, each = 32, 12
	failed := 0
	for _, err := range putConcurrently(kv, writers, each, func(w, i int) (string, store.Entry) {
		return fmt.Sprintf("k%d-%d", w, i), store.Entry{Value: []byte("v"), Owner: "sb"}
	}) {
		if err != nil {
			failed++
			t.Log(err)
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d writes failed", failed, writers*each)
	}
	if u, err := s.Usage("sb"); err != nil || u.KV.Keys != int64(writers*each-failed) {
		t.Errorf("usage %+v, %v; want %d keys", u.KV, err, writers*each-failed)
	}
	if err := s.Check(); err != nil {
		t.Error(err)
	}
}

func TestCompareAndSwapIncrementsFromTwoHostsLoseNoUpdate(t *testing.T) {
	c := etcdtest.Start(t)
	hosts := []*etcdstore.Store{open(t, c.Endpoints(), "/cas/", etcdstore.Options{}), open(t, c.Endpoints(), "/cas/", etcdstore.Options{})}
	for _, h := range hosts {
		waitLive(t, h)
	}
	space := func(h *etcdstore.Store) backend.KV {
		return h.Keys(store.KindState, "ns", store.SandboxScope("sb"), store.Limits{})
	}
	if err := space(hosts[0]).Put("n", store.Entry{Value: []byte("0"), Owner: "sb"}); err != nil {
		t.Fatal(err)
	}
	const perHost, each = 4, 10
	errs := make(chan error, 2*perHost)
	for _, h := range hosts {
		for range perHost {
			go func() {
				kv := space(h)
				for done := 0; done < each; {
					// The cache may hold a value the other host replaced:
					// the condition fails and the loop reads again.
					e, err := kv.Get("n")
					if err != nil {
						errs <- err
						return
					}
					var n int
					fmt.Sscan(string(e.Value), &n)
					_, err = kv.Apply(store.Txn{
						Conditions: []store.Condition{{Key: "n", Equals: e.Value}},
						Writes:     []store.Write{{Key: "n", Entry: store.Entry{Value: []byte(fmt.Sprint(n + 1)), Owner: "sb"}}},
					})
					switch {
					case err == nil:
						done++
					case !errors.Is(err, store.ErrConditionFailed):
						errs <- err
						return
					}
				}
				errs <- nil
			}()
		}
	}
	for range 2 * perHost {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	e, err := space(hosts[1]).Get("n")
	if want := fmt.Sprint(2 * perHost * each); err != nil || string(e.Value) != want {
		t.Fatalf("counter %q, %v; want %s: an increment was lost", e.Value, err, want)
	}
	if u, err := hosts[0].Usage("sb"); err != nil || u.State.Keys != 1 {
		t.Fatalf("usage %+v, %v", u.State, err)
	}
}
