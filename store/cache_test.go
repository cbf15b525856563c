package store

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestAReadAfterAnAcknowledgedWriteSeesItWhileOthersReadTheKeyHot(t *testing.T) {
	db := openTest(t, nil)
	kv := db.KV("hot")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 { // readers keep the key in the cache
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
					kv.Get("k")
				}
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	for i := range 300 {
		v := fmt.Sprint(i)
		if err := kv.Put("k", Entry{Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
		if e, err := kv.Get("k"); err != nil || string(e.Value) != v {
			t.Fatalf("after writing %q, read %q, %v", v, e.Value, err)
		}
	}
	if err := kv.Delete("k"); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get("k"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
}

func TestACachedEntryStillExpires(t *testing.T) {
	now := time.Unix(1000, 0)
	var mu sync.Mutex
	db := openTest(t, &Options{Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }})
	kv := db.KV("ttl")
	if err := kv.Put("k", Entry{Value: []byte("v"), Expires: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get("k"); err != nil { // now cached
		t.Fatal(err)
	}
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	if _, err := kv.Get("k"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an expired cached entry was served: %v", err)
	}
}

func TestScopesDoNotShareCachedEntries(t *testing.T) {
	db := openTest(t, nil)
	a := db.Keys(KindState, "s", SandboxScope("a"), Limits{})
	b := db.Keys(KindState, "s", SandboxScope("b"), Limits{})
	a.Put("k", Entry{Value: []byte("a's")})
	if e, err := a.Get("k"); err != nil || string(e.Value) != "a's" {
		t.Fatal(e, err)
	}
	if _, err := b.Get("k"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("b read a's key: %v", err)
	}
}
