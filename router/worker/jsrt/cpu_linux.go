package jsrt

import (
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

var (
	probeOnce   sync.Once
	threadCPUOK bool
)

// threadClock pins the goroutine to its thread and returns a reader of that thread's CPU
// time, readable from any goroutine (the limit's timer), and the unpin. The clock id is
// the kernel's per-thread CPU clock (MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)), the one
// pthread_getcpuclockid returns, so time the host spends descheduling the VM's thread on
// a busy machine is not charged to the script. cpu is false where the kernel has no such
// clock: now is then the wall time since the call, which counts waiting too.
func threadClock() (now func() time.Duration, unpin func(), cpu bool) {
	runtime.LockOSThread()
	clock := int32(^unix.Gettid()<<3 | 6)
	read := func() time.Duration {
		var ts unix.Timespec
		if err := unix.ClockGettime(clock, &ts); err != nil {
			return 0
		}
		return time.Duration(ts.Nano())
	}
	// Whether the kernel has the clock is the same for every thread: ask once.
	probeOnce.Do(func() { threadCPUOK = read() != 0 })
	if !threadCPUOK {
		start := time.Now() // no per-thread clock: wall time instead
		return func() time.Duration { return time.Since(start) }, runtime.UnlockOSThread, false
	}
	return read, runtime.UnlockOSThread, true
}
