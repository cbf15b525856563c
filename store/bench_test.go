package store

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// BenchmarkKVPut measures durable puts (each one fsync'd before it returns)
// with 1 and 32 concurrent writers: group commit should make the second far
// faster per write.
func BenchmarkKVPut(b *testing.B) {
	for _, writers := range []int{1, 32} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			db, err := Open(b.TempDir(), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			kv := db.KV("bench")
			val := make([]byte, 128)
			var n atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := n.Add(1)
						if i > int64(b.N) {
							return
						}
						if err := kv.Put(fmt.Sprintf("k%d", i), Entry{Value: val}); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}

// BenchmarkKVGet measures a hot-key read.
func BenchmarkKVGet(b *testing.B) {
	db, err := Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	kv := db.KV("bench")
	kv.Put("hot", Entry{Value: make([]byte, 128)})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := kv.Get("hot"); err != nil {
			b.Fatal(err)
		}
	}
}
