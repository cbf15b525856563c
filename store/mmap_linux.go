package store

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

var pageSize = os.Getpagesize()

// dropMapped tells the kernel this process is done with the pages of b, a
// chunk read through bbolt's read-only shared mapping of the file, which
// spans [lo, hi). Streaming a large object would otherwise leave every page
// it touched mapped, and the daemon's resident memory would grow by the
// object's size. The pages stay in the page cache; a later read maps them
// again.
//
// The range dropped is widened to whole 2 MiB blocks (clipped to the
// mapping): the page cache keeps large folios, and a fault maps the whole
// folio around it, so reading one chunk also maps the tail of the one
// before, which had already been dropped (a 512 MiB read left 180 MiB
// mapped before this). Dropping pages some other reader is using is
// harmless: the mapping is read-only and file-backed, and they fault back.
// before widens the range further back, to reach the page that holds b's
// key: bbolt keeps two or more large values in one leaf, whose header may
// be a value's length before b.
func dropMapped(b []byte, before int, lo, hi uintptr) {
	if len(b) < pageSize {
		return
	}
	const block = 2 << 20
	p := unsafe.Pointer(&b[0])
	base := uintptr(p)
	start, end := base, base+uintptr(len(b))
	if uintptr(before) < start-lo {
		start -= uintptr(before)
	} else {
		start = lo
	}
	start = max(start&^(block-1), lo)
	end = min((end+block-1)&^(block-1), hi)
	// Page-align inward at the mapping's edges, outward elsewhere (a
	// widened bound is already block-aligned).
	start = (start + uintptr(pageSize) - 1) &^ uintptr(pageSize-1)
	end &^= uintptr(pageSize - 1)
	if end <= start {
		return
	}
	from := unsafe.Add(p, int(start)-int(base))
	unix.Madvise(unsafe.Slice((*byte)(from), end-start), unix.MADV_DONTNEED)
}
