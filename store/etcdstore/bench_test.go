package etcdstore_test

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/handlers"
	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
	"github.com/interceptd/interceptd/store/etcdstore"
	"github.com/interceptd/interceptd/store/etcdstore/etcdtest"
	"github.com/prometheus/client_golang/prometheus"
)

// engine is one KV backend a benchmark runs on.
type engine struct {
	name string
	kv   backend.KV
}

// engines opens, in one run, the bbolt store and the etcd backend on one
// real etcd member (loopback), so that their figures compare.
func engines(b *testing.B) []engine {
	_, es := openEngines(b, nil)
	return es
}

// openEngines is engines, with the etcd member (for its process) and the
// etcd backend's metrics in m (nil: none).
func openEngines(b *testing.B, m *etcdstore.Metrics) (*etcdtest.Cluster, []engine) {
	c := etcdtest.Start(b)
	s, err := etcdstore.Open(etcdstore.Options{Endpoints: c.Endpoints(), Prefix: "/bench/",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: m})
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
	return c, []engine{
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

// BenchmarkKVPutOwned measures puts of 128 bytes charged to sandboxes, as
// the kv handler makes them (each charges its owner's usage, under its
// quota): 1 writer, 32 writers of one owner (one sandbox's connections)
// and 32 writers spread as 4 over each of 8 owners. Beside ns/op it
// reports, per write, the requests the etcd backend sent (reqs/op), the
// commits it had to start again because a key moved (conflicts/op), the
// CPU time of this process (cpu-µs/op: the daemon's side, the writers
// included) and of the etcd member (etcd-cpu-µs/op, from /proc).
func BenchmarkKVPutOwned(b *testing.B) {
	reg := prometheus.NewRegistry()
	c, engines := openEngines(b, etcdstore.NewMetrics(reg))
	pid := c.Members[0].Pid()
	for _, e := range engines {
		for _, shape := range []struct {
			name            string
			writers, owners int
		}{{"writers=1", 1, 1}, {"writers=32", 32, 1}, {"writers=32/owners=8", 32, 8}} {
			b.Run(fmt.Sprintf("engine=%s/%s", e.name, shape.name), func(b *testing.B) {
				val := make([]byte, 128)
				var n atomic.Int64
				var wg sync.WaitGroup
				reqs0, conf0 := counterSum(b, reg, "interceptd_store_etcd_requests_total"), counterSum(b, reg, "interceptd_store_etcd_conflicts_total")
				cpu0, etcd0 := selfCPU(), procCPU(pid)
				b.ResetTimer()
				for w := 0; w < shape.writers; w++ {
					wg.Add(1)
					owner := fmt.Sprintf("sb%d", w%shape.owners)
					go func() {
						defer wg.Done()
						for {
							i := n.Add(1)
							if i > int64(b.N) {
								return
							}
							key := fmt.Sprintf("o%s-%d-%d", shape.name, shape.owners, i%1000)
							if err := e.kv.Put(key, store.Entry{Value: val, Owner: owner}); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				per := func(x float64) float64 { return x / float64(b.N) }
				b.ReportMetric(per(float64(selfCPU()-cpu0)/1e3), "cpu-µs/op")
				if e.name == "etcd" {
					b.ReportMetric(per(counterSum(b, reg, "interceptd_store_etcd_requests_total")-reqs0), "reqs/op")
					b.ReportMetric(per(counterSum(b, reg, "interceptd_store_etcd_conflicts_total")-conf0), "conflicts/op")
					b.ReportMetric(per(float64(procCPU(pid)-etcd0)/1e3), "etcd-cpu-µs/op")
				}
			})
		}
	}
}

// counterSum adds up every series of a counter family in reg.
func counterSum(b *testing.B, reg *prometheus.Registry, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// selfCPU is this process's user and system CPU time in ns.
func selfCPU() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// procCPU is a process's user and system CPU time in ns, from
// /proc/<pid>/stat (clock ticks of 10 ms); 0 when it cannot be read.
func procCPU(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return (ut + st) * 1e7
}
