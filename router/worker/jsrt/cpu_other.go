//go:build !linux

package jsrt

import "time"

// threadClock measures wall time where there is no per-thread CPU clock (cpu is false).
func threadClock() (now func() time.Duration, unpin func(), cpu bool) {
	start := time.Now()
	return func() time.Duration { return time.Since(start) }, func() {}, false
}
