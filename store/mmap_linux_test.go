package store

import (
	"io"
	"os"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// pattern is a reader of n bytes that are not all the same.
type pattern struct{ n int64 }

func (z *pattern) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	k := min(int64(len(p)), z.n)
	for i := range p[:k] {
		p[i] = byte(i)
	}
	z.n -= k
	return int(k), nil
}

// mappedBytes counts the pages of [base, base+size) present in this
// process's page tables (/proc/self/pagemap, bit 63).
func mappedBytes(t *testing.T, base, size uintptr) int {
	t.Helper()
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Skipf("no pagemap: %v", err)
	}
	defer f.Close()
	n := int(size) / pageSize
	buf := make([]byte, 8*n)
	if _, err := f.ReadAt(buf, int64(base/uintptr(pageSize))*8); err != nil {
		t.Fatal(err)
	}
	total := 0
	for i := 0; i < n; i++ {
		if buf[8*i+7]&0x80 != 0 {
			total += pageSize
		}
	}
	return total
}

func TestReadingALargeObjectLeavesItsPagesUnmapped(t *testing.T) {
	db, err := Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	b := db.Blobs("default", ScopeShared, Limits{}.WithDefaults())
	const size = 64 << 20
	if _, err := b.Put("big", &pattern{size}, PutOptions{Size: -1}); err != nil {
		t.Fatal(err)
	}
	o, err := b.Open("big")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := io.CopyBuffer(io.Discard, o, make([]byte, 32<<10)); n != size || err != nil {
		t.Fatalf("read %d, %v", n, err)
	}
	o.Close()
	db.bolt.View(func(tx *bolt.Tx) error {
		m := mappedBytes(t, db.bolt.Info().Data, uintptr(tx.Size()))
		t.Logf("after reading a %d MiB object, %.1f MiB of the store's mapping is resident", size>>20, float64(m)/(1<<20))
		// Before chunks were read from the file and their leaves' pages
		// released, this was about a third of the object.
		if m > size/8 {
			t.Errorf("%d MiB of a %d MiB object stayed mapped", m>>20, size>>20)
		}
		return nil
	})
}
