package etcdstore_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
	"github.com/interceptd/interceptd/store/etcdstore"
	"github.com/interceptd/interceptd/store/etcdstore/etcdtest"
	"github.com/prometheus/client_golang/prometheus"
)

// requests adds up the requests sent to etcd, whatever their op and outcome.
func requests(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == "interceptd_store_etcd_requests_total" {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func TestAPutChargedToASandboxIsTwoRequestsAndAnOwnerChangeAThird(t *testing.T) {
	c := etcdtest.Start(t)
	reg := prometheus.NewRegistry()
	s := open(t, c.Endpoints(), "/rt/", etcdstore.Options{Metrics: etcdstore.NewMetrics(reg)})
	kv := s.Keys(store.KindKV, "ns", store.SandboxScope("a"), store.Limits{})
	step := func(what string, want float64, f func() error) {
		t.Helper()
		before := requests(t, reg)
		if err := f(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got := requests(t, reg) - before; got != want {
			t.Errorf("%s: %v requests to etcd, want %v", what, got, want)
		}
	}
	// The record and its owner's accounting in one read, then the
	// transaction.
	step("a new key", 2, func() error { return kv.Put("k", store.Entry{Value: []byte("1"), Owner: "a"}) })
	step("a replacement", 2, func() error { return kv.Put("k", store.Entry{Value: []byte("22"), Owner: "a"}) })
	// The record it replaces is charged to b, whose accounting the first
	// read could not know it needed.
	step("a replacement charged to another sandbox", 3, func() error { return kv.Put("k", store.Entry{Value: []byte("3"), Owner: "b"}) })
	step("a delete", 3, func() error { return kv.Delete("k") })
	step("a delete of an absent key", 1, func() error { return kv.Delete("k") })
	for _, o := range []string{"a", "b"} {
		if u, err := s.Usage(o); err != nil || u != (store.Amounts{}) {
			t.Errorf("usage of %s %+v, %v; want none", o, u, err)
		}
	}
	if err := s.Check(); err != nil {
		t.Error(err)
	}
}

// Two hosts fill one sandbox's key quota at once: each conflict is
// decided again on what the failed transaction's Else branch read, and
// the quota holds across the hosts exactly.
func TestTwoHostsFillingOneQuotaAtOnceStopAtItExactly(t *testing.T) {
	c := etcdtest.Start(t)
	const quota = 40
	quotas := func() store.Amounts { return store.Amounts{KV: store.Amount{Keys: quota}} }
	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry()}
	hosts := []*etcdstore.Store{
		open(t, c.Endpoints(), "/fill/", etcdstore.Options{Quotas: quotas, Metrics: etcdstore.NewMetrics(regs[0])}),
		open(t, c.Endpoints(), "/fill/", etcdstore.Options{Quotas: quotas, Metrics: etcdstore.NewMetrics(regs[1])}),
	}
	const perHost, each = 4, 15
	var mu sync.Mutex
	written, refused := 0, 0
	var wg sync.WaitGroup
	for h, s := range hosts {
		for w := range perHost {
			wg.Add(1)
			go func() {
				defer wg.Done()
				kv := s.Keys(store.KindKV, "ns", store.SandboxScope("sb"), store.Limits{})
				for i := range each {
					err := kv.Put(fmt.Sprintf("h%d-w%d-%d", h, w, i), store.Entry{Value: []byte("v"), Owner: "sb"})
					var qe *store.QuotaError
					mu.Lock()
					switch {
					case err == nil:
						written++
					case errors.As(err, &qe):
						refused++
					default:
						t.Error(err)
					}
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if written != quota || refused != 2*perHost*each-quota {
		t.Errorf("%d written, %d refused; want %d and %d", written, refused, quota, 2*perHost*each-quota)
	}
	if u, err := hosts[1].Usage("sb"); err != nil || u.KV.Keys != quota {
		t.Errorf("usage %+v, %v; want %d keys", u.KV, err, quota)
	}
	if err := hosts[0].Check(); err != nil {
		t.Error(err)
	}
	conflicts := counter(t, regs[0], "interceptd_store_etcd_conflicts_total", "put") + counter(t, regs[1], "interceptd_store_etcd_conflicts_total", "put")
	t.Logf("%v conflicts between the hosts", conflicts)
}

// Writers of one sandbox on one host take turns for their transactions
// but read before their turn: one that read a key absent and finds, in
// its turn, the accounting that the writer before it left (the key
// since written, the quota full) must read again rather than refuse a
// replacement that fits.
func TestWritersReplacingKeysOfAFullQuotaAreNeverRefused(t *testing.T) {
	c := etcdtest.Start(t)
	const keys = 10
	quotas := func() store.Amounts { return store.Amounts{KV: store.Amount{Keys: keys}} }
	s := open(t, c.Endpoints(), "/full/", etcdstore.Options{Quotas: quotas})
	kv := s.Keys(store.KindKV, "ns", store.SandboxScope("sb"), store.Limits{})
	const writers, each = 16, 20
	for _, err := range putConcurrently(kv, writers, each, func(w, i int) (string, store.Entry) {
		return fmt.Sprintf("k%d", (w+i)%keys), store.Entry{Value: []byte(fmt.Sprint(w)), Owner: "sb"}
	}) {
		if err != nil {
			t.Error(err)
		}
	}
	if u, err := s.Usage("sb"); err != nil || u.KV.Keys != keys {
		t.Errorf("usage %+v, %v; want %d keys", u.KV, err, keys)
	}
	if err := s.Check(); err != nil {
		t.Error(err)
	}
}

// Writers of one sandbox on one host that write the same keys read them
// before their turn, so their reads are often older than the writer's
// before them: that one hands on what it wrote, and they commit without a
// conflict.
func TestWritersOfOneSandboxWritingTheSameKeysRarelyConflict(t *testing.T) {
	c := etcdtest.Start(t)
	reg := prometheus.NewRegistry()
	s := open(t, c.Endpoints(), "/same/", etcdstore.Options{Metrics: etcdstore.NewMetrics(reg)})
	kv := s.Keys(store.KindKV, "ns", store.SandboxScope("sb"), store.Limits{})
	const writers, each, keys = 16, 20, 4
	for _, err := range putConcurrently(kv, writers, each, func(w, i int) (string, store.Entry) {
		return fmt.Sprintf("k%d", i%keys), store.Entry{Value: []byte(fmt.Sprint(w, i)), Owner: "sb"}
	}) {
		if err != nil {
			t.Error(err)
		}
	}
	conflicts := counter(t, reg, "interceptd_store_etcd_conflicts_total", "put")
	t.Logf("%v conflicts in %d writes", conflicts, writers*each)
	if conflicts*10 > writers*each {
		t.Errorf("%v conflicts in %d writes of one host", conflicts, writers*each)
	}
	if u, err := s.Usage("sb"); err != nil || u.KV.Keys != keys {
		t.Errorf("usage %+v, %v; want %d keys", u.KV, err, keys)
	}
	if err := s.Check(); err != nil {
		t.Error(err)
	}
}

// putConcurrently runs writers goroutines that each put each entries into
// kv (entry gives writer w's i-th key and entry) and returns every put's
// error, once all are done.
func putConcurrently(kv backend.KV, writers, each int, entry func(w, i int) (string, store.Entry)) []error {
	errs := make(chan error, writers*each)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				errs <- kv.Put(entry(w, i))
			}
		}()
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return all
}
