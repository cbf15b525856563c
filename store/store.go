// Package store keeps interceptd's durable state in one bbolt file: KV
// namespaces now, blob buckets and per-sandbox state later. It is written in
// bbolt's voice: an Options struct, closure transactions underneath, and
// sentinel errors that callers test with errors.Is.
package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// FileName is the name of the bbolt file inside the data directory.
const FileName = "interceptd.db"

var (
	// ErrNotFound is returned when a key does not exist or has expired.
	ErrNotFound = errors.New("not found")
	// ErrKeyTooLarge is returned when a key exceeds Options.MaxKeySize.
	ErrKeyTooLarge = errors.New("key too large")
	// ErrValueTooLarge is returned when a value exceeds Options.MaxValueSize.
	ErrValueTooLarge = errors.New("value too large")
	// ErrInvalidKey is returned for the empty key or one that is not valid UTF-8.
	ErrInvalidKey = errors.New("invalid key")
	// ErrClosed is returned by operations on a closed DB.
	ErrClosed = errors.New("store closed")
)

// Options configures Open. The zero value gives the documented defaults.
type Options struct {
	// LockTimeout is how long Open waits for the file lock that another
	// process (a second daemon on the same data dir) holds. Default 5s.
	LockTimeout time.Duration
	// MaxKeySize bounds KV keys in bytes. Default 512.
	MaxKeySize int
	// MaxValueSize bounds KV values in bytes. Default 25 MiB.
	MaxValueSize int
	// Metrics receives operation counts and durations; nil records nothing.
	Metrics *Metrics
	// Now is the clock, for tests. Default time.Now.
	Now func() time.Time
}

func (o *Options) withDefaults() Options {
	r := Options{}
	if o != nil {
		r = *o
	}
	if r.LockTimeout == 0 {
		r.LockTimeout = 5 * time.Second
	}
	if r.MaxKeySize == 0 {
		r.MaxKeySize = 512
	}
	if r.MaxValueSize == 0 {
		r.MaxValueSize = 25 << 20
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	return r
}

// DB is an open store. It is safe for concurrent use.
type DB struct {
	bolt *bolt.DB
	opts Options
}

// Top-level buckets. Each KV namespace is a nested bucket under bucketKV.
var (
	bucketKV        = []byte("kv")
	bucketMeta      = []byte("meta")
	bucketSandboxes = []byte("sandboxes")
	keyVersion      = []byte("schema_version")
)

// schemaVersion is written to the meta bucket so that later layouts can migrate.
const schemaVersion = 1

// Open opens (creating if needed) the store in dir/FileName.
func Open(dir string, opts *Options) (*DB, error) {
	o := opts.withDefaults()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	path := filepath.Join(dir, FileName)
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: o.LockTimeout})
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketKV, bucketMeta, bucketSandboxes} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keyVersion); v != nil && string(v) != fmt.Sprint(schemaVersion) {
			return fmt.Errorf("schema version %s is newer than this build's %d", v, schemaVersion)
		}
		return meta.Put(keyVersion, []byte(fmt.Sprint(schemaVersion)))
	})
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("initialising %s: %w", path, err)
	}
	return &DB{bolt: b, opts: o}, nil
}

// Path returns the file the store lives in.
func (db *DB) Path() string { return db.bolt.Path() }

// Close releases the file. Operations after Close return ErrClosed.
func (db *DB) Close() error { return db.bolt.Close() }

// Check runs bbolt's consistency check and returns the first problem found.
func (db *DB) Check() error {
	return db.bolt.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	})
}

func (db *DB) observe(op string, start time.Time, err error) {
	if db.opts.Metrics != nil {
		db.opts.Metrics.observe(op, start, err)
	}
}

func mapBoltErr(err error) error {
	if errors.Is(err, bolt.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}
