package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

// KV is one KV namespace. Obtain it with DB.KV; it is cheap and stateless.
type KV struct {
	db *DB
	ns []byte
}

// KV returns the namespace called name. The namespace's bucket is created on
// first write, so reading an unused namespace costs nothing.
func (db *DB) KV(name string) *KV { return &KV{db: db, ns: []byte(name)} }

// Entry is a stored value with the attributes that travel with it.
type Entry struct {
	Value []byte
	// Expires is zero for a key that never expires.
	Expires time.Time
	// Metadata is an opaque small document stored beside the value.
	Metadata []byte
}

// record layout, version 1 (little endian):
//
//	[1]  version (1)
//	[8]  expiry, unix nanoseconds, 0 = never
//	[4]  metadata length m
//	[m]  metadata
//	[..] value
//
// The version byte and the reserved fields let the fuller KV semantics
// (expiry, metadata) land without migrating existing files.
const recordV1 = 1

func encodeRecord(e Entry) []byte {
	b := make([]byte, 13+len(e.Metadata)+len(e.Value))
	b[0] = recordV1
	if !e.Expires.IsZero() {
		binary.LittleEndian.PutUint64(b[1:9], uint64(e.Expires.UnixNano()))
	}
	binary.LittleEndian.PutUint32(b[9:13], uint32(len(e.Metadata)))
	copy(b[13:], e.Metadata)
	copy(b[13+len(e.Metadata):], e.Value)
	return b
}

var errCorrupt = errors.New("corrupt record")

func decodeRecord(b []byte) (Entry, error) {
	if len(b) < 13 || b[0] != recordV1 {
		return Entry{}, errCorrupt
	}
	var e Entry
	if ns := binary.LittleEndian.Uint64(b[1:9]); ns != 0 {
		e.Expires = time.Unix(0, int64(ns))
	}
	m := int(binary.LittleEndian.Uint32(b[9:13]))
	if 13+m > len(b) {
		return Entry{}, errCorrupt
	}
	// bbolt memory is only valid inside the transaction: copy out.
	e.Metadata = append([]byte(nil), b[13:13+m]...)
	e.Value = append([]byte(nil), b[13+m:]...)
	return e, nil
}

func (kv *KV) checkKey(key string) error {
	if key == "" || !utf8.ValidString(key) {
		return ErrInvalidKey
	}
	if len(key) > kv.db.opts.MaxKeySize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrKeyTooLarge, len(key), kv.db.opts.MaxKeySize)
	}
	return nil
}

// Get returns the entry stored under key, or ErrNotFound.
func (kv *KV) Get(key string) (e Entry, err error) {
	defer func(t time.Time) { kv.db.observe("kv_get", t, err) }(time.Now())
	if err := kv.checkKey(key); err != nil {
		return Entry{}, err
	}
	err = kv.db.bolt.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKV).Bucket(kv.ns)
		if b == nil {
			return ErrNotFound
		}
		raw := b.Get([]byte(key))
		if raw == nil {
			return ErrNotFound
		}
		var derr error
		e, derr = decodeRecord(raw)
		if derr != nil {
			return fmt.Errorf("key %q: %w", key, derr)
		}
		if !e.Expires.IsZero() && !kv.db.opts.Now().Before(e.Expires) {
			return ErrNotFound
		}
		return nil
	})
	return e, mapBoltErr(err)
}

// Put stores e under key, replacing any previous entry and its attributes.
// It returns once the write is durable.
func (kv *KV) Put(key string, e Entry) (err error) {
	defer func(t time.Time) { kv.db.observe("kv_put", t, err) }(time.Now())
	if err := kv.checkKey(key); err != nil {
		return err
	}
	if len(e.Value) > kv.db.opts.MaxValueSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrValueTooLarge, len(e.Value), kv.db.opts.MaxValueSize)
	}
	rec := encodeRecord(e)
	err = kv.db.bolt.Update(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(bucketKV).CreateBucketIfNotExists(kv.ns)
		if err != nil {
			return err
		}
		return b.Put([]byte(key), rec)
	})
	return mapBoltErr(err)
}

// Delete removes key. Deleting an absent key is not an error.
func (kv *KV) Delete(key string) (err error) {
	defer func(t time.Time) { kv.db.observe("kv_delete", t, err) }(time.Now())
	if err := kv.checkKey(key); err != nil {
		return err
	}
	err = kv.db.bolt.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKV).Bucket(kv.ns)
		if b == nil {
			return nil
		}
		return b.Delete([]byte(key))
	})
	return mapBoltErr(err)
}
