package store

import bolt "go.etcd.io/bbolt"

type writeReq struct {
	fn  func(*bolt.Tx) error
	err chan error
}

// maxGroup bounds how many writes share one commit.
const maxGroup = 256

// update runs fn in a write transaction shared with other queued writes and
// returns once that transaction is on disk. fn may run more than once (alone,
// after a shared commit failed), so it must only depend on the transaction.
// An error from fn rolls back what fn wrote; fn should report expected
// outcomes (a failed condition) through its own variables and return nil.
func (db *DB) update(fn func(*bolt.Tx) error) error {
	req := &writeReq{fn: fn, err: make(chan error, 1)}
	if err := db.queue(req); err != nil {
		return err
	}
	select {
	case err := <-req.err:
		return err
	case <-db.committed:
		// The committer has exited; it answered req if it took it.
		select {
		case err := <-req.err:
			return err
		default:
			return ErrClosed
		}
	}
}

// enqueue queues fn like update but does not wait for its commit; Close
// still commits it.
func (db *DB) enqueue(fn func(*bolt.Tx) error) error {
	return db.queue(&writeReq{fn: fn, err: make(chan error, 1)})
}

func (db *DB) queue(req *writeReq) error {
	select {
	case <-db.stop:
		return ErrClosed
	default:
	}
	select {
	case db.writes <- req:
		return nil
	case <-db.stop:
		return ErrClosed
	}
}

func (db *DB) committer() {
	defer db.stopped.Done()
	defer close(db.committed)
	batch := make([]*writeReq, 0, maxGroup)
	for {
		var first *writeReq
		select {
		case first = <-db.writes:
		case <-db.stop:
			// Finish what is queued, then refuse.
			for {
				select {
				case r := <-db.writes:
					db.commit([]*writeReq{r})
				default:
					return
				}
			}
		}
		batch = append(batch[:0], first)
	drain:
		for len(batch) < maxGroup {
			select {
			case r := <-db.writes:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		db.commit(batch)
	}
}

// commit runs a group of writes in one transaction. If the shared
// transaction fails, each write is retried alone so one bad write cannot fail
// the others.
func (db *DB) commit(batch []*writeReq) {
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		for _, r := range batch {
			if err := r.fn(tx); err != nil {
				return err
			}
		}
		return nil
	})
	// Before any writer hears back: see readCache.
	db.cache.drop()
	if err == nil || len(batch) == 1 {
		for _, r := range batch {
			r.err <- mapBoltErr(err)
		}
		if db.opts.Metrics != nil {
			db.opts.Metrics.commits.Observe(float64(len(batch)))
		}
		return
	}
	for _, r := range batch {
		err := db.bolt.Update(r.fn)
		db.cache.drop()
		r.err <- mapBoltErr(err)
	}
}
