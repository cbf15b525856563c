package jsrt

import (
	"errors"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// ErrMemoryLimit is returned by Call when the process's heap passed the
// limit set with SetHeapLimit while the script ran: the runtime is then
// Broken, as after ErrCPULimit.
var ErrMemoryLimit = errors.New("worker exceeded the memory limit")

// goja cannot say what one runtime holds, and a script that builds a huge
// string or array grows the one Go heap the whole daemon lives in, until
// the allocator fails and the daemon dies with every sandbox's traffic. So
// the guard watches the heap while JavaScript runs, and when its live
// objects pass the limit it interrupts every JavaScript segment running at
// that moment: the one that allocates is among them, and the others lose a
// request, not the daemon. The runtimes interrupted are replaced, and what
// they held is garbage.

type memInterrupt struct{}

var guard struct {
	limit   atomic.Uint64
	mu      sync.Mutex
	running map[*Runtime]struct{}
	wake    chan struct{}
	started bool
}

// SetHeapLimit bounds the heap's live objects, in bytes, while JavaScript
// runs; 0 (the default) sets no bound. The check runs every few
// milliseconds, so the heap can pass the limit by what a script allocates
// in that time.
func SetHeapLimit(bytes uint64) {
	guard.limit.Store(bytes)
}

// enterGuard registers a segment of rt as running; the returned function
// ends it.
func enterGuard(rt *Runtime) func() {
	if guard.limit.Load() == 0 {
		return func() {}
	}
	guard.mu.Lock()
	if guard.running == nil {
		guard.running = map[*Runtime]struct{}{}
		guard.wake = make(chan struct{}, 1)
	}
	guard.running[rt] = struct{}{}
	if !guard.started {
		guard.started = true
		go watchHeap()
	}
	guard.mu.Unlock()
	select {
	case guard.wake <- struct{}{}:
	default:
	}
	return func() {
		guard.mu.Lock()
		delete(guard.running, rt)
		guard.mu.Unlock()
	}
}

// heapCheckEvery is how often the heap is read while JavaScript runs.
const heapCheckEvery = 5 * time.Millisecond

func watchHeap() {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	tick := time.NewTicker(heapCheckEvery)
	defer tick.Stop()
	for {
		guard.mu.Lock()
		idle := len(guard.running) == 0
		guard.mu.Unlock()
		if idle {
			<-guard.wake // nothing runs: sleep until something does
			continue
		}
		<-tick.C
		limit := guard.limit.Load()
		if limit == 0 {
			continue
		}
		if !over(sample, limit) {
			continue
		}
		// The count includes garbage not yet collected (a script
		// interrupted a moment ago left plenty): collect, and interrupt
		// only if the heap is still over.
		runtime.GC()
		if !over(sample, limit) {
			continue
		}
		guard.mu.Lock()
		for rt := range guard.running {
			rt.intMu.Lock()
			if rt.armed {
				rt.vm.Interrupt(memInterrupt{})
			}
			rt.intMu.Unlock()
		}
		guard.mu.Unlock()
	}
}

func over(sample []metrics.Sample, limit uint64) bool {
	metrics.Read(sample)
	return sample[0].Value.Kind() == metrics.KindUint64 && sample[0].Value.Uint64() >= limit
}
