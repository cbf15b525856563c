package jsrt

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"
)

func TestAScriptThatGrowsTheHeapPastTheLimitIsInterrupted(t *testing.T) {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	SetHeapLimit(ms.HeapAlloc + 64<<20)
	defer SetHeapLimit(0)
	rt := New(Options{CPULimit: 20 * time.Second})
	fn := handler(t, rt, `export default { outbound() { const a = []; for (;;) a.push("x".repeat(1024) + a.length); } }`)
	start := time.Now()
	_, err := rt.Call(context.Background(), fn)
	if !errors.Is(err, ErrMemoryLimit) {
		t.Fatalf("got %v, want ErrMemoryLimit", err)
	}
	if !rt.Broken() {
		t.Errorf("the runtime is not marked broken")
	}
	t.Logf("interrupted after %v", time.Since(start))
	// A runtime that allocates little is not touched. The broken one still
	// holds what it built (the pool drops it; here the test must): let it
	// go, or the heap stays over the limit.
	rt, fn = nil, nil
	runtime.GC()
	rt2 := New(Options{})
	ok := handler(t, rt2, `export default { outbound() { return new Response("fine") } }`)
	if _, err := rt2.Call(context.Background(), ok); err != nil {
		t.Errorf("a small script under the limit: %v", err)
	}
}
