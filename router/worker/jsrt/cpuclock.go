package jsrt

import (
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The CPU limit counts the CPU time of the thread that runs JavaScript, not
// wall time: on a busy host a segment can wait for a CPU for longer than
// the limit, and a request that did nothing wrong must not be cut for it.
// A segment runs locked to its OS thread, whose CPU clock Linux exposes to
// any thread (clock_gettime with the thread's CPU clock id), so the watch
// that interrupts an endless loop can read it from its timer.

// threadClock is a thread's CPU-time clock.
type threadClock int32

// currentThreadClock returns the clock of the calling thread (which must
// be locked to its goroutine), or false where there is none.
func currentThreadClock() (threadClock, bool) {
	tid := unix.Gettid()
	// MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED): (~tid << 3) | PERTHREAD(4) | SCHED(2).
	c := threadClock((^int32(tid))<<3 | 6)
	if _, ok := c.now(); !ok {
		return 0, false
	}
	return c, true
}

func (c threadClock) now() (time.Duration, bool) {
	var ts unix.Timespec
	if err := unix.ClockGettime(int32(c), &ts); err != nil {
		return 0, false
	}
	return time.Duration(ts.Nano()), true
}

// cpuWatch interrupts a segment once its thread has spent budget of CPU:
// its timer fires at the earliest moment that could be (budget of wall
// time), reads the thread's clock, and waits again for what is left.
type cpuWatch struct {
	mu      sync.Mutex
	clock   threadClock
	start   time.Duration
	budget  time.Duration
	timer   *time.Timer
	fire    func()
	stopped bool
}

func startCPUWatch(clock threadClock, budget time.Duration, fire func()) *cpuWatch {
	w := &cpuWatch{clock: clock, budget: budget, fire: fire}
	w.start, _ = clock.now()
	w.timer = time.AfterFunc(budget, w.check)
	return w
}

func (w *cpuWatch) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	now, ok := w.clock.now()
	if used := now - w.start; !ok || used >= w.budget {
		w.fire()
		return
	}
	w.timer = time.AfterFunc(w.budget-(now-w.start), w.check)
}

// stop ends the watch and returns the CPU the segment spent.
func (w *cpuWatch) stop() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.timer.Stop()
	now, _ := w.clock.now()
	return now - w.start
}
