package store

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

var pageSize = os.Getpagesize()

// dropMapped tells the kernel this process is done with the pages of b, a
// chunk read through bbolt's read-only shared mapping of the file. Streaming
// a large object would otherwise leave every page it touched mapped, and the
// daemon's resident memory would grow by the object's size. The pages stay in
// the page cache; a later read maps them again.
func dropMapped(b []byte) {
	if len(b) < pageSize {
		return
	}
	p := unsafe.Pointer(&b[0])
	off := int(uintptr(p) & uintptr(pageSize-1))
	start := unsafe.Add(p, -off)
	length := (off + len(b) + pageSize - 1) &^ (pageSize - 1)
	unix.Madvise(unsafe.Slice((*byte)(start), length), unix.MADV_DONTNEED)
}
