package store

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

// Kinds of key-value stores; they share the engine and differ in bucket.
const (
	KindKV    = "kv"
	KindState = "state"
)

// KV is one key-value space: a kind, a namespace and a scope. It is cheap
// and stateless; obtain it with DB.KV or DB.Keys.
type KV struct {
	db     *DB
	kind   string
	path   [][]byte // bucket path below the kind's top bucket
	limits Limits
}

// KV returns the shared scope of the KV namespace called name.
func (db *DB) KV(name string) *KV { return db.Keys(KindKV, name, ScopeShared, Limits{}) }

// Keys returns a key-value space. kind is KindKV or KindState; scope is
// ScopeShared or SandboxScope(name). Zero limits take the DB's defaults.
// Buckets are created on first write, so reading an unused space costs nothing.
func (db *DB) Keys(kind, namespace, scope string, l Limits) *KV {
	d := db.opts.Limits
	if l.MaxKeyBytes == 0 {
		l.MaxKeyBytes = d.MaxKeyBytes
	}
	if l.MaxValueBytes == 0 {
		l.MaxValueBytes = d.MaxValueBytes
	}
	if l.MaxMetadataBytes == 0 {
		l.MaxMetadataBytes = d.MaxMetadataBytes
	}
	return &KV{db: db, kind: kind, path: [][]byte{[]byte(namespace), []byte(scope)}, limits: l}
}

// Limits returns the space's limits.
func (kv *KV) Limits() Limits { return kv.limits }

// Entry is a stored value with the attributes that travel with it.
type Entry struct {
	Value []byte
	// Expires is zero for a key that never expires.
	Expires time.Time
	// Metadata is a small JSON document stored beside the value; nil for none.
	Metadata []byte
	// Owner is the sandbox charged for the entry (see Amounts): the one
	// whose write stored it, or "" for an operator's write. Reads return it.
	Owner string
}

// record layout, version 2 (little endian):
//
//	[1]  version (2)
//	[8]  expiry, unix nanoseconds, 0 = never
//	[4]  metadata length m
//	[1]  owner length o
//	[o]  owner: the sandbox charged for the record, or none
//	[m]  metadata
//	[..] value
//
// Version 1, written before quotas, has no owner length and no owner.
const (
	recordV1 = 1
	recordV2 = 2
)

// EncodeRecord is e as one record: the format bbolt keeps, which a remote
// engine (store/etcdstore) stores too, so that one reader serves both.
func EncodeRecord(e Entry) []byte { return encodeRecord(e) }

func encodeRecord(e Entry) []byte {
	h := 14 + len(e.Owner)
	b := make([]byte, h+len(e.Metadata)+len(e.Value))
	b[0] = recordV2
	if !e.Expires.IsZero() {
		binary.LittleEndian.PutUint64(b[1:9], uint64(e.Expires.UnixNano()))
	}
	binary.LittleEndian.PutUint32(b[9:13], uint32(len(e.Metadata)))
	b[13] = byte(len(e.Owner))
	copy(b[14:], e.Owner)
	copy(b[h:], e.Metadata)
	copy(b[h+len(e.Metadata):], e.Value)
	return b
}

var errCorrupt = errors.New("corrupt record")

// recordHeader returns the length of a record's header (owner included)
// and of its metadata, or ok false for a corrupt record.
func recordHeader(b []byte) (h, m int, ok bool) {
	if len(b) < 13 {
		return 0, 0, false
	}
	m = int(binary.LittleEndian.Uint32(b[9:13]))
	switch b[0] {
	case recordV1:
		h = 13
	case recordV2:
		if len(b) < 14 {
			return 0, 0, false
		}
		h = 14 + int(b[13])
	default:
		return 0, 0, false
	}
	return h, m, h+m <= len(b)
}

// recordOwner returns the sandbox a record is charged to ("" for none).
func recordOwner(b []byte) string {
	if h, _, ok := recordHeader(b); ok && b[0] == recordV2 {
		return string(b[14:h])
	}
	return ""
}

// recordCharge is what a record occupies for its owner's quota: its key,
// metadata and value.
func recordCharge(key, b []byte) int64 {
	h, _, ok := recordHeader(b)
	if !ok {
		return int64(len(key))
	}
	return int64(len(key) + len(b) - h)
}

// entryCharge is recordCharge of the record e would be stored as.
func entryCharge(key string, e Entry) int64 {
	return int64(len(key) + len(e.Metadata) + len(e.Value))
}

// decodeRecord copies a record out of bbolt memory, which is only valid
// inside the transaction. With withValue false the value is skipped.
func decodeRecord(b []byte, withValue bool) (Entry, error) {
	e, err := DecodeRecord(b, withValue)
	if err != nil {
		return e, err
	}
	e.Metadata = bytes.Clone(e.Metadata)
	if withValue {
		e.Value = append([]byte{}, e.Value...)
	}
	return e, nil
}

// DecodeRecord reads a record EncodeRecord made; the entry's slices share
// b. With withValue false the value is skipped (nil).
func DecodeRecord(b []byte, withValue bool) (Entry, error) {
	h, m, ok := recordHeader(b)
	if !ok {
		return Entry{}, errCorrupt
	}
	var e Entry
	if ns := binary.LittleEndian.Uint64(b[1:9]); ns != 0 {
		e.Expires = time.Unix(0, int64(ns))
	}
	if h > 14 {
		e.Owner = string(b[14:h])
	}
	if m > 0 {
		e.Metadata = b[h : h+m]
	}
	if withValue {
		e.Value = b[h+m:]
		if e.Value == nil {
			e.Value = []byte{}
		}
	}
	return e, nil
}

func recordExpiry(b []byte) time.Time {
	if len(b) < 9 {
		return time.Time{}
	}
	if ns := binary.LittleEndian.Uint64(b[1:9]); ns != 0 {
		return time.Unix(0, int64(ns))
	}
	return time.Time{}
}

func (kv *KV) expired(t time.Time) bool {
	return !t.IsZero() && !kv.db.opts.Now().Before(t)
}

// CheckKey validates a key against the space's limits.
func (kv *KV) CheckKey(key string) error { return checkKey(key, kv.limits.MaxKeyBytes) }

func checkKey(key string, max int) error {
	if key == "" || !utf8.ValidString(key) {
		return ErrInvalidKey
	}
	if len(key) > max {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrKeyTooLarge, len(key), max)
	}
	return nil
}

func (kv *KV) checkEntry(key string, e Entry) error {
	if err := kv.CheckKey(key); err != nil {
		return err
	}
	if len(e.Owner) > 255 {
		return fmt.Errorf("owner %q: longer than 255 bytes", e.Owner)
	}
	if err := checkExpiry(e.Expires); err != nil {
		return err
	}
	if len(e.Value) > kv.limits.MaxValueBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrValueTooLarge, len(e.Value), kv.limits.MaxValueBytes)
	}
	if e.Metadata != nil {
		if len(e.Metadata) > kv.limits.MaxMetadataBytes {
			return fmt.Errorf("%w: %d bytes, limit %d", ErrMetadataTooLarge, len(e.Metadata), kv.limits.MaxMetadataBytes)
		}
		if !json.Valid(e.Metadata) {
			return ErrInvalidMetadata
		}
	}
	return nil
}

// nested returns the bucket at path below top, or nil.
func nested(tx *bolt.Tx, top []byte, path [][]byte) *bolt.Bucket {
	b := tx.Bucket(top)
	for _, p := range path {
		if b == nil {
			return nil
		}
		b = b.Bucket(p)
	}
	return b
}

// nestedRW returns the bucket at path below top, creating what is missing.
func nestedRW(tx *bolt.Tx, top []byte, path [][]byte) (*bolt.Bucket, error) {
	b := tx.Bucket(top)
	for _, p := range path {
		var err error
		if b, err = b.CreateBucketIfNotExists(p); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func (kv *KV) bucket(tx *bolt.Tx) *bolt.Bucket { return nested(tx, []byte(kv.kind), kv.path) }

func (kv *KV) bucketRW(tx *bolt.Tx) (*bolt.Bucket, error) {
	return nestedRW(tx, []byte(kv.kind), kv.path)
}

// Get returns the entry stored under key, or ErrNotFound. The entry's
// slices may be shared with later callers: read them, do not change them.
func (kv *KV) Get(key string) (e Entry, err error) {
	defer func(t time.Time) {
		kv.db.observe(kv.kind, "get", t, err)
		kv.db.countBytes(kv.kind, "read", len(e.Value))
	}(time.Now())
	if err := kv.CheckKey(key); err != nil {
		return Entry{}, err
	}
	// Built on the stack, and looked up without a string: a hit
	// allocates nothing for it.
	var kb [128]byte
	ck := kv.appendCacheKey(kb[:0], key)
	if c, ok := kv.db.cache.get(ck); ok && !kv.expired(c.Expires) {
		return c, nil
	}
	gen := kv.db.cache.generation()
	err = kv.db.bolt.View(func(tx *bolt.Tx) error {
		var gerr error
		e, gerr = kv.get(tx, key)
		return gerr
	})
	if err == nil {
		kv.db.cache.fill(string(ck), e, gen)
	}
	return e, mapBoltErr(err)
}

// appendCacheKey appends the name of key in this space for the read cache.
func (kv *KV) appendCacheKey(b []byte, key string) []byte {
	b = append(b, kv.kind...)
	for _, p := range kv.path {
		b = append(b, 0)
		b = append(b, p...)
	}
	b = append(b, 0)
	return append(b, key...)
}

func (kv *KV) get(tx *bolt.Tx, key string) (Entry, error) {
	b := kv.bucket(tx)
	if b == nil {
		return Entry{}, ErrNotFound
	}
	raw := b.Get([]byte(key))
	if raw == nil || kv.expired(recordExpiry(raw)) {
		return Entry{}, ErrNotFound
	}
	e, err := decodeRecord(raw, true)
	if err != nil {
		return Entry{}, fmt.Errorf("key %q: %w", key, err)
	}
	return e, nil
}

// expiryKey is the index key of a record with an expiry.
func (kv *KV) expiryKey(t time.Time, key string) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.BigEndian, uint64(t.UnixNano()))
	b.WriteString(kv.kind)
	for _, p := range kv.path {
		b.WriteByte(0)
		b.Write(p)
	}
	b.WriteByte(0)
	b.WriteString(key)
	return b.Bytes()
}

// put writes e under key inside tx, keeping the expiry index in step.
// Accounting is the caller's (see plan).
func (kv *KV) put(tx *bolt.Tx, key string, e Entry) error {
	b, err := kv.bucketRW(tx)
	if err != nil {
		return err
	}
	idx := tx.Bucket(bucketExpiry)
	if old := b.Get([]byte(key)); old != nil {
		if t := recordExpiry(old); !t.IsZero() {
			idx.Delete(kv.expiryKey(t, key))
		}
	}
	if !e.Expires.IsZero() {
		if err := idx.Put(kv.expiryKey(e.Expires, key), nil); err != nil {
			return err
		}
	}
	return b.Put([]byte(key), encodeRecord(e))
}

func (kv *KV) delete(tx *bolt.Tx, key string) error {
	b := kv.bucket(tx)
	if b == nil {
		return nil
	}
	if old := b.Get([]byte(key)); old != nil {
		if t := recordExpiry(old); !t.IsZero() {
			tx.Bucket(bucketExpiry).Delete(kv.expiryKey(t, key))
		}
	}
	return b.Delete([]byte(key))
}

// plan returns the change of usage that deleting then writing these keys
// (in that order, as Apply runs them) makes: the old records' owners get
// their space back, the writers are charged for the new ones.
func (kv *KV) plan(tx *bolt.Tx, deletes []string, writes []Write) usageDelta {
	d := usageDelta{}
	b := kv.bucket(tx)
	type held struct {
		owner string
		bytes int64
		ok    bool
	}
	var seen map[string]held // keys this plan already changed
	if len(deletes)+len(writes) > 1 {
		seen = map[string]held{}
	}
	old := func(k string) held {
		if h, ok := seen[k]; ok {
			return h
		}
		if b == nil {
			return held{}
		}
		raw := b.Get([]byte(k))
		if raw == nil {
			return held{}
		}
		return held{recordOwner(raw), recordCharge([]byte(k), raw), true}
	}
	for _, k := range deletes {
		if h := old(k); h.ok {
			d.add(h.owner, kv.kind, -h.bytes, -1)
		}
		if seen != nil {
			seen[k] = held{}
		}
	}
	for _, w := range writes {
		if h := old(w.Key); h.ok {
			d.add(h.owner, kv.kind, -h.bytes, -1)
		}
		n := entryCharge(w.Key, w.Entry)
		d.add(w.Entry.Owner, kv.kind, n, 1)
		if seen != nil {
			seen[w.Key] = held{w.Entry.Owner, n, true}
		}
	}
	return d
}

// Put stores e under key, replacing any previous entry and its attributes
// (a write without metadata or expiry clears them). It returns once the write
// is durable. A write that would take e.Owner over a quota is refused with a
// *QuotaError and stores nothing.
func (kv *KV) Put(key string, e Entry) (err error) {
	defer func(t time.Time) { kv.db.observe(kv.kind, "put", t, err) }(time.Now())
	if err := kv.checkEntry(key, e); err != nil {
		return err
	}
	if err := kv.db.checkSpace(entryCharge(key, e)); err != nil {
		return err
	}
	var qerr *QuotaError
	err = kv.db.update(func(tx *bolt.Tx) error {
		var err error
		if qerr, err = kv.db.charge(tx, kv.plan(tx, nil, []Write{{key, e}})); err != nil || qerr != nil {
			return err
		}
		return kv.put(tx, key, e)
	})
	if err == nil && qerr != nil {
		err = qerr
	}
	if err == nil {
		kv.db.countBytes(kv.kind, "written", len(e.Value))
	}
	return err
}

// Delete removes key. Deleting an absent key is not an error.
func (kv *KV) Delete(key string) (err error) {
	defer func(t time.Time) { kv.db.observe(kv.kind, "delete", t, err) }(time.Now())
	if err := kv.CheckKey(key); err != nil {
		return err
	}
	return kv.db.update(func(tx *bolt.Tx) error {
		if err := kv.db.release(tx, kv.plan(tx, []string{key}, nil), nil, nil); err != nil {
			return err
		}
		return kv.delete(tx, key)
	})
}

// ListOptions select a page of keys.
type ListOptions struct {
	// Prefix keeps only keys that start with it.
	Prefix string
	// Cursor continues a previous listing; "" starts at the beginning.
	Cursor string
	// Limit is the page size: 1 to MaxListLimit; 0 means MaxListLimit.
	Limit int
}

// MaxListLimit is the default and largest page size.
const MaxListLimit = 1000

// ListEntry is one key of a listing.
type ListEntry struct {
	Name       string          `json:"name"`
	Expiration int64           `json:"expiration,omitempty"` // unix seconds
	Metadata   json.RawMessage `json:"metadata,omitempty"`
}

// ListResult is one page of a listing, in byte order of the keys.
type ListResult struct {
	Keys         []ListEntry `json:"keys"`
	ListComplete bool        `json:"list_complete"`
	Cursor       string      `json:"cursor,omitempty"`
}

// encodeCursor makes an opaque cursor from the last key of a page.
func encodeCursor(last string) string {
	return base64.RawURLEncoding.EncodeToString([]byte("k1:" + last))
}

func decodeCursor(c string) (string, error) {
	if c == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || !bytes.HasPrefix(b, []byte("k1:")) {
		return "", ErrInvalidCursor
	}
	return string(b[3:]), nil
}

// startAfter positions c at the first key after `after` that has prefix.
func startAfter(c *bolt.Cursor, prefix, after string) ([]byte, []byte) {
	if after == "" || after < prefix {
		return c.Seek([]byte(prefix))
	}
	k, v := c.Seek([]byte(after))
	if k != nil && string(k) == after {
		k, v = c.Next()
	}
	return k, v
}

// List returns a page of live keys in byte order.
func (kv *KV) List(o ListOptions) (res ListResult, err error) {
	defer func(t time.Time) { kv.db.observe(kv.kind, "list", t, err) }(time.Now())
	if o.Limit <= 0 || o.Limit > MaxListLimit {
		o.Limit = MaxListLimit
	}
	after, err := decodeCursor(o.Cursor)
	if err != nil {
		return res, err
	}
	res.Keys = []ListEntry{}
	err = kv.db.bolt.View(func(tx *bolt.Tx) error {
		b := kv.bucket(tx)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := startAfter(c, o.Prefix, after); k != nil && bytes.HasPrefix(k, []byte(o.Prefix)); k, v = c.Next() {
			if len(res.Keys) == o.Limit {
				// There is at least one more key: hand out a cursor.
				res.Cursor = encodeCursor(res.Keys[len(res.Keys)-1].Name)
				return nil
			}
			e, err := decodeRecord(v, false)
			if err != nil || kv.expired(e.Expires) {
				continue
			}
			le := ListEntry{Name: string(k), Metadata: e.Metadata}
			if !e.Expires.IsZero() {
				le.Expiration = e.Expires.Unix()
			}
			res.Keys = append(res.Keys, le)
		}
		return nil
	})
	res.ListComplete = res.Cursor == ""
	return res, mapBoltErr(err)
}

// reaper deletes expired keys in the background. They are already invisible:
// this only reclaims their space.
func (db *DB) reaper() {
	defer db.stopped.Done()
	t := time.NewTicker(db.opts.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-db.stop:
			return
		case <-t.C:
			db.Reap()
		}
	}
}

// Reap deletes the keys whose expiry has passed and returns how many. It
// runs on its own every Options.ReapInterval.
func (db *DB) Reap() (n int, err error) {
	now := db.opts.Now()
	var bound [8]byte
	binary.BigEndian.PutUint64(bound[:], uint64(now.UnixNano()))
	err = db.update(func(tx *bolt.Tx) error {
		n = 0
		freed := usageDelta{}
		idx := tx.Bucket(bucketExpiry)
		c := idx.Cursor()
		var done [][]byte
		for k, _ := c.First(); k != nil && bytes.Compare(k[:8], bound[:]) <= 0 && len(done) < 10000; k, _ = c.Next() {
			done = append(done, bytes.Clone(k))
			parts := bytes.SplitN(k[8:], []byte{0}, 4)
			if len(parts) != 4 {
				continue
			}
			b := tx.Bucket(parts[0])
			for _, p := range parts[1:3] {
				if b != nil {
					b = b.Bucket(p)
				}
			}
			if b == nil {
				continue
			}
			// Only if the record still carries this expiry: a rewrite
			// moved or removed its index entry already.
			if raw := b.Get(parts[3]); raw != nil && recordExpiry(raw).UnixNano() == int64(binary.BigEndian.Uint64(k[:8])) {
				freed.add(recordOwner(raw), string(parts[0]), -recordCharge(parts[3], raw), -1)
				b.Delete(parts[3])
				n++
			}
		}
		for _, k := range done {
			idx.Delete(k)
		}
		return db.release(tx, freed, nil, nil)
	})
	return n, err
}
