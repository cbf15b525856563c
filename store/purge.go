package store

import (
	"encoding/json"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Purge deletes everything scoped to a sandbox: its state, its keys in
// sandbox-scoped KV namespaces, its objects in sandbox-scoped blob buckets
// and the Durable Objects it owns (their keys, records and SQL databases). Sandbox state otherwise outlives the sandbox, so a sandbox
// re-created under the same name finds it. What the sandbox wrote to
// shared stores stays, and stays charged to it. When nothing at all was
// stored under the name it returns ErrNothingToPurge (and changes nothing).
// ErrNothingToPurge: Purge found nothing stored under the sandbox's name.
var ErrNothingToPurge = errors.New("nothing is stored under that sandbox's name")

func (db *DB) Purge(sandbox string) error {
	scope := []byte(SandboxScope(sandbox))
	// No SQL call may make a database of an object between the commit
	// that forgets it and the removal of its files (see DB.objMu).
	db.objMu.Lock()
	defer db.objMu.Unlock()
	var owned []ObjectRecord
	found := false
	err := db.update(func(tx *bolt.Tx) error {
		var err error
		if owned, err = purgeObjects(db, tx, sandbox); err != nil {
			return err
		}
		found = len(owned) > 0
		// Whoever each record is charged to gets its space back.
		freed := usageDelta{}
		for _, kind := range [][]byte{bucketKV, bucketState} {
			top := tx.Bucket(kind)
			var nss [][]byte
			top.ForEachBucket(func(k []byte) error { nss = append(nss, k); return nil })
			for _, ns := range nss {
				if sb := top.Bucket(ns).Bucket(scope); sb != nil {
					found = true
					sb.ForEach(func(k, v []byte) error {
						freed.add(recordOwner(v), string(kind), -recordCharge(k, v), -1)
						return nil
					})
				}
				if err := top.Bucket(ns).DeleteBucket(scope); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
					return err
				}
			}
		}
		top := tx.Bucket(bucketBlob)
		gc := tx.Bucket(bucketBlobGC)
		var buckets [][]byte
		top.ForEachBucket(func(k []byte) error { buckets = append(buckets, k); return nil })
		for _, name := range buckets {
			sb := top.Bucket(name).Bucket(scope)
			if sb == nil {
				continue
			}
			found = true
			err := sb.ForEach(func(k, v []byte) error {
				var oi ObjectInfo
				if json.Unmarshal(v, &oi) == nil {
					freed.add(oi.Owner, KindBlob, -oi.charge(), -1)
					return gc.Put([]byte(oi.Upload), []byte(gcGarbage))
				}
				return nil
			})
			if err != nil {
				return err
			}
			if err := top.Bucket(name).DeleteBucket(scope); err != nil {
				return err
			}
		}
		return db.release(tx, freed, nil, nil)
	})
	db.kickGC()
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range owned {
		if err := db.sql.Remove(r.Class, r.ID); err != nil {
			errs = append(errs, fmt.Errorf("removing the SQL database of %s object %s: %w", r.Class, r.ID, err))
		}
	}
	if !found && len(errs) == 0 {
		return ErrNothingToPurge
	}
	return errors.Join(errs...)
}
