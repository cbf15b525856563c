package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSoak runs 200 sandboxes with concurrent traffic (each writes and reads
// back state keys of its own and reads a seeded kv key; 60 s; SOAK_SECONDS
// shortens it), expects no errors, and after deleting them expects the
// daemon's goroutines, file descriptors and heap back near the baseline.
func TestSoak(t *testing.T) {
	seconds := 60
	if s, err := strconv.Atoi(os.Getenv("SOAK_SECONDS")); err == nil {
		seconds = s
	}
	if testing.Short() {
		t.Skip("soak skipped in -short mode")
	}
	e := NewEnv(t, Options{})
	if _, errOut, code := e.CLI("kv", "put", "soak", "value"); code != 0 {
		t.Fatalf("seeding the kv: exit %d: %s", code, errOut)
	}
	time.Sleep(500 * time.Millisecond)
	baseG, baseFD := e.gauge("go_goroutines"), e.gauge("process_open_fds")
	baseHeap := e.gauge("go_memstats_heap_inuse_bytes")

	const n = 200
	var sbs []Sandbox
	for i := 0; i < n; i++ {
		sbs = append(sbs, e.CreateWith(fmt.Sprintf("soak%d", i)))
	}
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds)*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i, sb := range sbs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
				err = inNetns(sb.NetnsPath, func() error {
					var d net.Dialer
					c, err = d.DialContext(ctx, "tcp4", virtualKV+":80")
					return err
				})
				return c, err
			}}
			defer tr.CloseIdleConnections()
			hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			// Every fourth request writes one of 16 state keys of the
			// sandbox's own, the next reads it back; the rest read the
			// seeded kv key. Anything but the expected status and body
			// is a failure (a 404 is one).
			for j := 0; ctx.Err() == nil; j++ {
				method, url, body, want, wantBody := "GET", "http://my.kv/soak", "", 200, "value"
				switch j % 4 {
				case 0:
					method, url, body, want, wantBody = "PUT", fmt.Sprintf("http://state.do/n%d", j%16), fmt.Sprintf("v%d-%d", i, j), 204, ""
				case 1:
					url, wantBody = fmt.Sprintf("http://state.do/n%d", (j-1)%16), fmt.Sprintf("v%d-%d", i, j-1)
				}
				req, _ := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
				resp, err := hc.Do(req)
				if err == nil {
					got, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != want || string(got) != wantBody {
						err = fmt.Errorf("%s %s: %s %q, want %d %q", method, url, resp.Status, got, want, wantBody)
					}
				}
				if err != nil && ctx.Err() == nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("sandbox %d: %v", i, err))
				} else if err == nil {
					ok.Add(1)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	time.Sleep(time.Duration(seconds) * time.Second / 2)
	midG, midFD := e.gauge("go_goroutines"), e.gauge("process_open_fds")
	wg.Wait()
	for _, sb := range sbs {
		if _, errOut, code := e.CLI("sandbox", "delete", sb.Name); code != 0 {
			t.Fatalf("delete %s: %s", sb.Name, errOut)
		}
	}
	// Let idle connections close and the reaper finish.
	var g, fd, heap float64
	deadline := time.Now().Add(30 * time.Second)
	for {
		time.Sleep(time.Second)
		g, fd, heap = e.gauge("go_goroutines"), e.gauge("process_open_fds"), e.gauge("go_memstats_heap_inuse_bytes")
		if (g <= baseG+10 && fd <= baseFD+5) || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("soak: %d sandboxes for %ds: %d requests ok, %d failed; goroutines %.0f before, %.0f during, %.0f after; fds %.0f, %.0f, %.0f; heap in use %.1f MiB before, %.1f after",
		n, seconds, ok.Load(), failed.Load(), baseG, midG, g, baseFD, midFD, fd, baseHeap/(1<<20), heap/(1<<20))
	if ok.Load() == 0 {
		t.Error("no request succeeded")
	}
	if puts, _ := sample(e.Scrape(), `interceptd_store_operations_total{kind="state",op="put",result="ok"}`); puts == 0 {
		t.Error("no state key was written")
	}
	if failed.Load() > 0 {
		t.Errorf("%d requests failed; first: %v", failed.Load(), firstErr.Load())
	}
	if g > baseG+10 || fd > baseFD+5 {
		t.Errorf("not back to baseline: goroutines %.0f (was %.0f), fds %.0f (was %.0f)", g, baseG, fd, baseFD)
	}
	if heap > baseHeap+32<<20 {
		t.Errorf("heap in use %.1f MiB after, %.1f MiB before", heap/(1<<20), baseHeap/(1<<20))
	}
}
