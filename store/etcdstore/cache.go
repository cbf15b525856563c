package etcdstore

import (
	"context"
	"sync"
	"time"

	"github.com/interceptd/interceptd/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// cache keeps recently read small records so that a hot key is answered
// without a round trip to etcd. It is kept correct across hosts by a watch
// on the data prefix: every change etcd reports drops the key, and a
// host's own writes drop theirs before the writer is answered.
//
// It serves only while the watch is known current ("live"): created, and
// answering the progress requests sent every Options.WatchProbe. A watch
// silent for three probes, cancelled or broken drops the cache whole and
// the reads go to etcd until it answers again; so a stale entry can be
// served for at most the watch's delivery lag, bounded by about three
// probes when the watch breaks silently. A read fills the cache only if
// the cache was live and nothing was dropped while the read ran (the
// generation), so a read that raced a change cannot leave the older value
// behind.
type cache struct {
	mu    sync.Mutex
	gen   uint64
	live  bool
	m     map[string]store.Entry
	bytes int
}

const (
	cacheMaxValue = 4 << 10 // larger entries are not kept
	cacheMaxBytes = 4 << 20 // the cache is dropped when it would grow past this
)

func (c *cache) get(k []byte) (store.Entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live {
		return store.Entry{}, false
	}
	e, ok := c.m[string(k)] // no allocation for the lookup
	return e, ok
}

// token is taken before a read from etcd and handed to fill after.
func (c *cache) token() (uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen, c.live
}

func (c *cache) fill(k string, e store.Entry, gen uint64) {
	if len(e.Value)+len(e.Metadata) > cacheMaxValue {
		return
	}
	size := len(k) + len(e.Value) + len(e.Metadata)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live || c.gen != gen {
		return
	}
	if c.m == nil || c.bytes+size > cacheMaxBytes {
		c.m, c.bytes = map[string]store.Entry{}, 0
	}
	c.m[k] = e
	c.bytes += size
}

// invalidate drops keys (full etcd keys).
func (c *cache) invalidate(keys ...string) {
	if len(keys) == 0 {
		return
	}
	c.mu.Lock()
	c.gen++
	for _, k := range keys {
		if e, ok := c.m[k]; ok {
			c.bytes -= len(k) + len(e.Value) + len(e.Metadata)
			delete(c.m, k)
		}
	}
	c.mu.Unlock()
}

// setLive says whether the cache may serve; a change either way drops
// everything it held (nothing read before it can be trusted after).
func (c *cache) setLive(live bool) (changed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.live == live {
		return false
	}
	c.gen++
	c.m, c.bytes = nil, 0
	c.live = live
	return true
}

// Live says whether the cache serves reads (its watch is current).
func (s *Store) Live() bool {
	_, live := s.cache.token()
	return live
}

// watch keeps a watch on the data prefix open for as long as the store is.
func (s *Store) watch() {
	defer s.stopped.Done()
	backoff := 100 * time.Millisecond
	for {
		up := s.watchOnce()
		select {
		case <-s.stop:
			return
		default:
		}
		s.down("watch_broken")
		if up {
			backoff = 100 * time.Millisecond
		}
		select {
		case <-s.stop:
			return
		case <-time.After(backoff):
		}
		if backoff < 2*time.Second {
			backoff *= 2
		}
	}
}

func (s *Store) down(reason string) {
	if s.cache.setLive(false) {
		s.m.invalidation(reason)
		s.m.setWatchUp(false)
		s.log.Warn("etcd store: the cache's watch is not current; reads go to etcd", "reason", reason)
	}
}

func (s *Store) up() {
	if s.cache.setLive(true) {
		s.m.setWatchUp(true)
		s.log.Info("etcd store: the cache's watch is current; the cache serves reads")
	}
}

// watchOnce runs one watch until it ends; it reports whether it was ever
// current.
func (s *Store) watchOnce() (wasUp bool) {
	// WithRequireLeader: a member cut off from its cluster cancels the
	// watch instead of keeping it open with nothing to say.
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(s.ctx))
	defer cancel()
	wch := s.cli.Watch(ctx, s.dataPrefix(), clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	probe := time.NewTicker(s.opts.WatchProbe)
	defer probe.Stop()
	heard := time.Now()
	created := false
	for {
		select {
		case <-s.stop:
			return wasUp
		case r, ok := <-wch:
			if !ok {
				return wasUp
			}
			if err := r.Err(); err != nil || r.Canceled {
				s.log.Warn("etcd store: the watch ended", "err", err)
				return wasUp
			}
			heard = time.Now()
			if r.Created {
				created = true
			}
			for _, ev := range r.Events {
				s.cache.invalidate(string(ev.Kv.Key))
				s.m.invalidation("event")
			}
			if created {
				s.up()
				wasUp = true
			}
		case <-probe.C:
			if time.Since(heard) > 3*s.opts.WatchProbe {
				s.down("watch_silent")
			}
			pctx, pcancel := context.WithTimeout(clientv3.WithRequireLeader(s.ctx), s.opts.WatchProbe)
			s.cli.RequestProgress(pctx)
			pcancel()
		}
	}
}
