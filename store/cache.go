package store

import "sync"

// readCache keeps recently read small KV and state entries, so that a hot
// key is answered without a bbolt read transaction (which, with the record
// decode, was most of what a hot GET cost beyond the router's fixed work).
//
// It is dropped whole by every commit, before the commit's writers are
// answered: a client that has its acknowledgement cannot read what it
// replaced. A read fills it only if no commit finished while the read ran
// (the generation check, under the same lock as the drop), so a read that
// raced a commit cannot leave the older value behind.
type readCache struct {
	mu    sync.Mutex
	gen   uint64
	m     map[string]Entry
	bytes int
}

const (
	cacheMaxValue = 4 << 10 // larger entries are not kept
	cacheMaxBytes = 4 << 20 // the cache is dropped when it would grow past this
)

func (c *readCache) get(k []byte) (Entry, bool) {
	c.mu.Lock()
	e, ok := c.m[string(k)] // no allocation for the lookup
	c.mu.Unlock()
	return e, ok
}

// generation is read before a read transaction and handed to fill after.
func (c *readCache) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

func (c *readCache) fill(k string, e Entry, gen uint64) {
	size := len(k) + len(e.Value) + len(e.Metadata)
	if len(e.Value)+len(e.Metadata) > cacheMaxValue {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if c.m == nil || c.bytes+size > cacheMaxBytes {
		c.m, c.bytes = map[string]Entry{}, 0
	}
	c.m[k] = e
	c.bytes += size
}

// drop empties the cache after a commit.
func (c *readCache) drop() {
	c.mu.Lock()
	c.gen++
	if len(c.m) > 0 {
		c.m, c.bytes = nil, 0
	}
	c.mu.Unlock()
}
