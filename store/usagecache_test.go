package store

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestTheUsageCacheReadsOncePerRefreshSharesAReadAndKeepsAnOutageAsLong(t *testing.T) {
	var loads atomic.Int64
	var fail atomic.Bool
	release := make(chan struct{})
	c := NewUsageCache(300*time.Millisecond, func() (map[string]Amounts, error) {
		n := loads.Add(1)
		if n == 1 {
			<-release // the first read is slow: every reader waits for it
		}
		if fail.Load() {
			return nil, ErrUnavailable
		}
		return map[string]Amounts{"sb": {Blob: Amount{Bytes: n}}}, nil
	})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if all, err := c.Get(); err != nil || all["sb"].Blob.Bytes != 1 {
				t.Errorf("a reader of the first read: %v %v", all, err)
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	if n := loads.Load(); n != 1 {
		t.Fatalf("8 concurrent readers made %d reads, want 1", n)
	}
	if all, _ := c.Get(); all["sb"].Blob.Bytes != 1 || loads.Load() != 1 {
		t.Errorf("within the refresh: %v after %d reads, want the cached figures", all, loads.Load())
	}
	time.Sleep(300 * time.Millisecond)
	fail.Store(true)
	if _, err := c.Get(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("after the refresh, with the engine down: %v", err)
	}
	if _, err := c.Get(); !errors.Is(err, ErrUnavailable) || loads.Load() != 2 {
		t.Errorf("again within the refresh: %v after %d reads, want the kept outage after 2", err, loads.Load())
	}
	time.Sleep(300 * time.Millisecond)
	fail.Store(false)
	if all, err := c.Get(); err != nil || all["sb"].Blob.Bytes != 3 {
		t.Errorf("once the engine is back: %v %v", all, err)
	}
}
