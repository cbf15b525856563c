//go:build !linux

package jsrt

import "time"

// threadClock measures wall time where there is no per-thread CPU clock.
func threadClock() (now func() time.Duration, unpin func()) {
	start := time.Now()
	return func() time.Duration { return time.Since(start) }, func() {}
}
