package store

import bolt "go.etcd.io/bbolt"

// SaveSandbox records a sandbox so that a restarted daemon can re-adopt it.
func (db *DB) SaveSandbox(name string, rec []byte) error {
	return db.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSandboxes).Put([]byte(name), rec)
	})
}

// DeleteSandbox forgets a sandbox record; an absent one is not an error.
func (db *DB) DeleteSandbox(name string) error {
	return db.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSandboxes).Delete([]byte(name))
	})
}

// ForgetSandbox queues the removal of a sandbox record and returns without
// waiting for it to reach the disk: it commits with the next group of
// writes. For a sandbox whose namespace is already gone, a record left by a
// crash in between is harmless: a restarted daemon drops a record whose
// namespace has vanished. Half the fsyncs of a create-and-delete cycle.
func (db *DB) ForgetSandbox(name string) error {
	return db.enqueue(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSandboxes).Delete([]byte(name))
	})
}

// Sandboxes returns every sandbox record by name.
func (db *DB) Sandboxes() (map[string][]byte, error) {
	out := map[string][]byte{}
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSandboxes).ForEach(func(k, v []byte) error {
			out[string(k)] = append([]byte(nil), v...)
			return nil
		})
	})
	return out, mapBoltErr(err)
}
