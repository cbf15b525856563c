package jsrt

import (
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// threadClock pins the goroutine to its thread and returns a reader of that thread's CPU
// time, readable from any goroutine (the limit's timer), and the unpin. The clock id is
// the kernel's per-thread CPU clock (MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)), the one
// pthread_getcpuclockid returns, so time the host spends descheduling the VM's thread on
// a busy machine is not charged to the script.
func threadClock() (now func() time.Duration, unpin func()) {
	runtime.LockOSThread()
	clock := int32(^unix.Gettid()<<3 | 6)
	now = func() time.Duration {
		var ts unix.Timespec
		if err := unix.ClockGettime(clock, &ts); err != nil {
			return 0
		}
		return time.Duration(ts.Nano())
	}
	if now() == 0 {
		start := time.Now() // no per-thread clock: wall time of the segment instead
		now = func() time.Duration { return time.Since(start) }
	}
	return now, runtime.UnlockOSThread
}
