package store

import (
	"sync"
	"time"
)

// UsageCache serves an all-sandboxes usage read (such as an engine's
// AllUsage) to readers that ask often (the usage series, read at every
// scrape), reading at most once per refresh interval however many ask:
// one read answers the readers waiting for it, and a failure is kept as
// long as a success would be, so that scrapes during an outage do not
// each wait out the engine's timeout.
type UsageCache struct {
	load    func() (map[string]Amounts, error)
	refresh time.Duration

	mu      sync.Mutex
	read    time.Time // when the figures or the error were read
	all     map[string]Amounts
	err     error
	pending chan struct{} // closed when the read under way ends; nil: none
}

// NewUsageCache returns a cache of load that calls it again once what it
// holds is older than refresh (0: every Get reads, but concurrent Gets
// share one read).
func NewUsageCache(refresh time.Duration, load func() (map[string]Amounts, error)) *UsageCache {
	return &UsageCache{load: load, refresh: refresh}
}

// Get returns every sandbox's usage as read at most the refresh interval
// ago (the map is the caller's to keep, not to change), or the error of
// that read.
func (c *UsageCache) Get() (map[string]Amounts, error) {
	c.mu.Lock()
	for {
		if !c.read.IsZero() && time.Since(c.read) < c.refresh {
			all, err := c.all, c.err
			c.mu.Unlock()
			return all, err
		}
		if c.pending == nil {
			break
		}
		wait := c.pending
		c.mu.Unlock()
		<-wait
		c.mu.Lock()
		if c.refresh == 0 {
			// Nothing is kept: the read just made is the answer.
			all, err := c.all, c.err
			c.mu.Unlock()
			return all, err
		}
	}
	done := make(chan struct{})
	c.pending = done
	c.mu.Unlock()
	all, err := c.load()
	c.mu.Lock()
	c.all, c.err, c.read, c.pending = all, err, time.Now(), nil
	c.mu.Unlock()
	close(done)
	return all, err
}
