// Package store keeps interceptd's durable state in one bbolt file: KV
// namespaces, per-sandbox state and blob buckets. It is written in bbolt's
// voice: an Options struct with every field explained, closure transactions
// underneath, and sentinel errors that callers test with errors.Is.
//
// Every write returns once it is on disk. Writes from concurrent callers are
// grouped into shared commits (one fsync for many writes) by a single
// committer goroutine, which adds no delay for a lone writer: whatever queues
// while a commit is running goes into the next one.
//
// Layout (bucket paths):
//
//	meta                                   schema version
//	kv|state / <namespace> / <scope> / key  records (see encodeRecord)
//	expiry / <expiry><kind>\0<ns>\0<scope>\0<key>   index of keys with a TTL
//	blob / <bucket> / <scope> / key         object info (JSON)
//	blob_chunks / <upload id> / <index>     object content in chunks
//	blob_gc / <upload id>                   uploads in progress or to reclaim
//	usage / <sandbox>                       what its writes occupy (quota.go)
//	quotas / <sandbox>                      its quota overrides (JSON)
//	do_objects / <class> / <id>             Durable Object record: its owner (objects.go)
//	do / <class> / <id> / key               Durable Object storage: the value's bytes
//
// A scope is "shared" or "sandbox:<name>". Durable Objects' SQL databases
// are files beside the bbolt file, under do/ (package dosql).
package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/interceptd/interceptd/store/dosql"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
)

// FileName is the name of the bbolt file inside the data directory.
const FileName = "interceptd.db"

var (
	// ErrNotFound is returned when a key or object does not exist or has expired.
	ErrNotFound = errors.New("not found")
	// ErrKeyTooLarge is returned when a key exceeds its limit.
	ErrKeyTooLarge = errors.New("key too large")
	// ErrValueTooLarge is returned when a value or object exceeds its limit.
	ErrValueTooLarge = errors.New("value too large")
	// ErrMetadataTooLarge is returned when metadata exceeds its limit.
	ErrMetadataTooLarge = errors.New("metadata too large")
	// ErrInvalidKey is returned for the empty key or one that is not valid UTF-8.
	ErrInvalidKey = errors.New("invalid key")
	// ErrInvalidMetadata is returned for metadata that is not a JSON document.
	ErrInvalidMetadata = errors.New("metadata is not valid JSON")
	// ErrInvalidCursor is returned for a listing cursor this store did not make.
	ErrInvalidCursor = errors.New("invalid cursor")
	// ErrConditionFailed is returned when a transaction's condition does not
	// hold; the error is a *ConditionError naming it.
	ErrConditionFailed = errors.New("condition failed")
	// ErrPreconditionFailed is what a blob write's precondition
	// (PutOptions.Precondition, DeleteIf) wraps when it does not hold for
	// the stored object; the store counts it as precondition_failed.
	ErrPreconditionFailed = errors.New("precondition failed")
	// ErrBadDigest is returned when an upload's content does not match the
	// Content-MD5 the client supplied.
	ErrBadDigest = errors.New("content does not match Content-MD5")
	// ErrIncomplete is returned when an upload ends before its announced size.
	ErrIncomplete = errors.New("upload ended before its announced size")
	// ErrClosed is returned by operations on a closed DB.
	ErrClosed = errors.New("store closed")
	// ErrUnavailable is returned by a remote engine (etcd, S3) that cannot
	// be reached, or does not answer within its timeout: the operation may
	// or may not have taken effect for a write whose answer was lost, and
	// none has for one that was never sent. Handlers answer 503 with the
	// reason store_unavailable; the daemon keeps intercepting.
	ErrUnavailable = errors.New("store_unavailable")
	// ErrMisconfigured is returned by a remote engine whose servers are set
	// up so that they refuse an operation the contract allows (an etcd
	// whose --max-txn-ops is under what a transaction needs): retrying
	// does not help, the servers' operator must change a setting, which
	// the error names. Handlers answer 500 with the reason
	// store_misconfigured.
	ErrMisconfigured = errors.New("store_misconfigured")
)

// Limits bound keys and values. Zero fields take the defaults.
type Limits struct {
	// MaxKeyBytes bounds keys. Default 512.
	MaxKeyBytes int
	// MaxValueBytes bounds KV and state values. Default 25 MiB.
	MaxValueBytes int
	// MaxMetadataBytes bounds KV metadata. Default 1024.
	MaxMetadataBytes int
	// MaxObjectBytes bounds blob objects. Default 5 GiB.
	MaxObjectBytes int64
}

// WithDefaults fills zero fields with the defaults.
func (l Limits) WithDefaults() Limits {
	if l.MaxKeyBytes == 0 {
		l.MaxKeyBytes = 512
	}
	if l.MaxValueBytes == 0 {
		l.MaxValueBytes = 25 << 20
	}
	if l.MaxMetadataBytes == 0 {
		l.MaxMetadataBytes = 1024
	}
	if l.MaxObjectBytes == 0 {
		l.MaxObjectBytes = 5 << 30
	}
	return l
}

// Options configures Open. The zero value gives the documented defaults.
type Options struct {
	// LockTimeout is how long Open waits for the file lock that another
	// process (a second daemon on the same data dir) holds. Default 5s.
	LockTimeout time.Duration
	// Limits are the default limits of stores that do not set their own.
	Limits Limits
	// ReapInterval is how often expired keys are reclaimed. Default 30s.
	// Expired keys are invisible at once; reaping only frees the space.
	ReapInterval time.Duration
	// ChunkSize is the size of blob chunks. Default 1 MiB.
	ChunkSize int
	// Quotas bound what the writes charged to one sandbox may occupy, per
	// kind; zero fields mean no limit. SetQuota overrides them per sandbox.
	Quotas Amounts
	// MinFreeBytes refuses writes (ErrDiskFull) while the data directory's
	// filesystem has less free space than this; 0 disables the floor.
	MinFreeBytes int64
	// ObjectSQL configures the Durable Objects' SQL databases; its Dir is
	// always <data dir>/do.
	ObjectSQL dosql.Options
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
	r.Limits = r.Limits.WithDefaults()
	if r.ReapInterval == 0 {
		r.ReapInterval = 30 * time.Second
	}
	if r.ChunkSize == 0 {
		r.ChunkSize = 1 << 20
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	return r
}

// DB is an open store. It is safe for concurrent use.
type DB struct {
	bolt *bolt.DB
	// opts are as Open was given them; defMu guards Quotas and
	// MinFreeBytes, which a reload replaces (SetDefaults).
	opts  Options
	defMu sync.RWMutex
	dir   string
	// file is the database file opened again, read-only, for reading blob
	// chunks without mapping them (see Object.Read).
	file *os.File
	// cache answers hot KV and state reads (see readCache).
	cache readCache

	writes    chan *writeReq
	stop      chan struct{}
	committed chan struct{} // closed when the committer has exited
	stopped   sync.WaitGroup
	closeMu   sync.Once

	// sql holds the Durable Objects' SQL databases. objMu orders SQL calls
	// (read-locked) after an object's record exists and against Purge
	// (write-locked), so that a purge cannot leave an object's database
	// behind without the record that leads the next purge to it.
	sql   *dosql.DB
	objMu sync.RWMutex

	// Blob uploads referenced by open readers; see blob.go.
	refMu sync.Mutex
	refs  map[string]int
	gc    chan struct{}
}

// Top-level buckets.
var (
	bucketMeta       = []byte("meta")
	bucketSandboxes  = []byte("sandboxes")
	bucketKV         = []byte("kv")
	bucketState      = []byte("state")
	bucketExpiry     = []byte("expiry")
	bucketBlob       = []byte("blob")
	bucketBlobChunks = []byte("blob_chunks")
	bucketBlobGC     = []byte("blob_gc")
	bucketDO         = []byte("do")
	bucketDOObjects  = []byte("do_objects")
	keyVersion       = []byte("schema_version")
)

// schemaVersion is written to the meta bucket so that later layouts can
// migrate. Version 2 added owners to records and the usage and quotas
// buckets; a version 1 file needs nothing more (its data is charged to
// nobody), but a build that reads only version 1 must not open a version 2
// file, whose records it would call corrupt. Version 3 added Durable
// Objects (the do and do_objects buckets) and DO usage to the usage records
// (64 bytes instead of 48); a version 2 file needs nothing more (its usage
// records read as no DO usage), but a version 2 build would read the longer
// usage records as no usage at all.
const schemaVersion = 3

// Open opens (creating if needed) the store in dir/FileName.
func Open(dir string, opts *Options) (*DB, error) {
	o := opts.withDefaults()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	path := filepath.Join(dir, FileName)
	b, rf, err := openFile(path, o.LockTimeout)
	if err != nil {
		return nil, err
	}
	db0 := &DB{opts: o} // for abandon, before the DB is whole
	err = b.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketSandboxes, bucketKV, bucketState, bucketExpiry, bucketBlob, bucketBlobChunks, bucketBlobGC, bucketUsage, bucketQuotas, bucketDO, bucketDOObjects} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keyVersion); v != nil && string(v) != "1" && string(v) != "2" && string(v) != fmt.Sprint(schemaVersion) {
			return fmt.Errorf("schema version %s is newer than this build's %d", v, schemaVersion)
		}
		// Uploads that were in progress when the last process died can
		// never complete: their chunks are garbage now, and their owners
		// get what they were charged back.
		var pending [][]byte
		tx.Bucket(bucketBlobGC).ForEach(func(k, v []byte) error {
			if isPending(v) {
				pending = append(pending, bytes.Clone(k))
			}
			return nil
		})
		for _, id := range pending {
			if err := db0.abandon(tx, id); err != nil {
				return err
			}
		}
		return meta.Put(keyVersion, []byte(fmt.Sprint(schemaVersion)))
	})
	if err != nil {
		b.Close()
		rf.Close()
		return nil, fmt.Errorf("initialising %s: %w", path, err)
	}
	sqlOpts := o.ObjectSQL
	sqlOpts.Dir = filepath.Join(dir, "do")
	sqldb, err := dosql.Open(sqlOpts)
	if err != nil {
		b.Close()
		rf.Close()
		return nil, err
	}
	db := &DB{
		bolt: b, opts: o, file: rf, dir: dir, sql: sqldb,
		writes: make(chan *writeReq, 1024), stop: make(chan struct{}), committed: make(chan struct{}),
		refs: map[string]int{}, gc: make(chan struct{}, 1),
	}
	if o.Metrics != nil {
		o.Metrics.watchFile(db)
	}
	db.stopped.Add(3)
	go db.committer()
	go db.reaper()
	go db.collector()
	db.kickGC()
	return db, nil
}

// openFile opens the bbolt file at path and the same file again for reading
// (see DB.file). Compact renames a new file over the path while a daemon
// may be waiting for the lock on the old one: a handle to a file that is no
// longer at path is closed and the path opened again.
func openFile(path string, timeout time.Duration) (*bolt.DB, *os.File, error) {
	for try := 0; ; try++ {
		before, err := os.Stat(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("opening %s: %w", path, err)
		}
		b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
		if err != nil {
			return nil, nil, fmt.Errorf("opening %s: %w", path, err)
		}
		rf, err := os.Open(path)
		if err != nil {
			b.Close()
			return nil, nil, fmt.Errorf("opening %s for reading: %w", path, err)
		}
		// bbolt's handle is to the file that was at path when Open began
		// or a later one; the same file there before and after means
		// it is that one.
		after, err := rf.Stat()
		if err == nil && (before == nil || os.SameFile(before, after)) {
			return b, rf, nil
		}
		b.Close()
		rf.Close()
		if try == 3 {
			return nil, nil, fmt.Errorf("opening %s: the file kept being replaced", path)
		}
	}
}

// Path returns the file the store lives in.
func (db *DB) Path() string { return db.bolt.Path() }

// FileSize is the size of the database file (interceptd_store_file_size_bytes).
func (db *DB) FileSize() (int64, error) {
	fi, err := os.Stat(db.Path())
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// Close waits for queued writes, stops the background work and releases the
// file. Operations after Close return ErrClosed.
func (db *DB) Close() error {
	var err error
	db.closeMu.Do(func() {
		close(db.stop)
		db.stopped.Wait()
		err = errors.Join(db.bolt.Close(), db.file.Close(), db.sql.Close())
	})
	return err
}

// Check runs bbolt's consistency check and returns the first problem found;
// then it recounts every sandbox's usage from the records and says where
// the recorded usage differs.
//
// It runs in a write transaction that is rolled back: the freelist it checks
// against is shared with writers, and only the writer lock keeps it still.
func (db *DB) Check() error {
	var first error
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			first = err
			break
		}
		if first == nil {
			if err := checkUsage(tx); err != nil {
				first = fmt.Errorf("usage accounting: %w", err)
			}
		}
		return errRollback
	})
	if errors.Is(err, errRollback) {
		return first
	}
	return mapBoltErr(err)
}

var errRollback = errors.New("rollback")

// Stats counts what the store holds, for operators and tests.
type Stats struct {
	FileBytes     int64 `json:"file_bytes"`
	BlobUploads   int   `json:"blob_uploads"`   // chunk sets, live or not
	BlobGarbage   int   `json:"blob_garbage"`   // chunk sets waiting to be reclaimed
	BlobPending   int   `json:"blob_pending"`   // uploads in progress
	ExpiryEntries int   `json:"expiry_entries"` // keys with a TTL not yet reaped
}

// Stats returns counts of what the store holds.
func (db *DB) Stats() (Stats, error) {
	var s Stats
	err := db.bolt.View(func(tx *bolt.Tx) error {
		s.FileBytes = tx.Size()
		s.BlobUploads = tx.Bucket(bucketBlobChunks).Stats().BucketN - 1
		s.ExpiryEntries = tx.Bucket(bucketExpiry).Stats().KeyN
		return tx.Bucket(bucketBlobGC).ForEach(func(k, v []byte) error {
			if isPending(v) {
				s.BlobPending++
			} else {
				s.BlobGarbage++
			}
			return nil
		})
	})
	return s, mapBoltErr(err)
}

func (db *DB) observe(kind, op string, start time.Time, err error) {
	if db.opts.Metrics != nil {
		db.opts.Metrics.observe(kind, op, start, err)
	}
}

func (db *DB) countBytes(kind, dir string, n int) {
	if m := db.opts.Metrics; m != nil && n > 0 {
		m.byteDirs.Get([2]string{kind, dir}, func() prometheus.Counter {
			return m.bytes.WithLabelValues(kind, dir)
		}).Add(float64(n))
	}
}

func mapBoltErr(err error) error {
	if errors.Is(err, bolt.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// ScopeShared is the scope of keys every sandbox sees.
const ScopeShared = "shared"

// SandboxScope returns the scope of keys private to one sandbox.
func SandboxScope(sandbox string) string { return "sandbox:" + sandbox }
