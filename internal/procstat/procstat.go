// Package procstat reads a process's resident memory from /proc, for the
// benchmark and the end-to-end tests that bound the daemon's memory: one
// reader, so both measure the same thing.
package procstat

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// RSS returns the resident memory of process pid in bytes: all of it
// (VmRSS), and the anonymous part (RssAnon: heap and stacks, without the
// mapped file pages the kernel can drop).
func RSS(pid int) (total, anon int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("reading memory of process %d: %w", pid, err)
	}
	defer f.Close()
	total, anon = parseStatus(f)
	return total, anon, nil
}

// parseStatus reads VmRSS and RssAnon, given in kB, from /proc/pid/status.
func parseStatus(r io.Reader) (total, anon int64) {
	s := bufio.NewScanner(r)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			total = kb << 10
		case "RssAnon:":
			anon = kb << 10
		}
	}
	return total, anon
}

// Peak samples the RSS of process pid every interval until the returned
// stop is called; stop returns the highest total and anonymous RSS seen
// (each at its own moment). A process that cannot be read counts as zero.
func Peak(pid int, every time.Duration) (stop func() (total, anon int64)) {
	var t, a int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			tt, aa, _ := RSS(pid)
			t, a = max(t, tt), max(a, aa)
			select {
			case <-done:
				return
			case <-time.After(every):
			}
		}
	}()
	var once sync.Once
	return func() (int64, int64) {
		once.Do(func() { close(done); wg.Wait() })
		return t, a
	}
}
