package store

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/interceptd/interceptd/store/dosql"
	bolt "go.etcd.io/bbolt"
)

// Durable-Object storage: per class (the name the worker's binding names)
// and per object id, a key space of opaque values (the worker structured-
// clones them to bytes), ordered by the keys' UTF-8 bytes, plus a SQLite
// database (package dosql). The semantics are those of Cloudflare's
// Durable Object storage API (state.storage.get/put/delete/list/deleteAll/
// transaction); its documented limits apply:
// https://developers.cloudflare.com/durable-objects/platform/limits/
// ("Key-value backed Durable Objects": key size 2 KiB, value size 128 KiB)
// and https://developers.cloudflare.com/durable-objects/api/legacy-kv-storage-api/
// (get, put and delete take at most 128 keys at once).
//
// An object has a record (do_objects) that names its owner: the sandbox
// whose name its id was made from (Objects.Create), or none. The owner is
// charged for the object's key-value storage (Amounts.DO) and `sandbox
// delete --purge` removes the objects it owns, key spaces and databases.
// An object without an owner is charged to nobody, like an operator's
// writes, and stays until its class's script deletes its data.

// KindDO is the store kind of Durable-Object storage (metrics and quotas).
const KindDO = "do"

const (
	// MaxObjectKeyBytes is Cloudflare's Durable Object key size limit,
	// 2 KiB, in UTF-8 bytes.
	MaxObjectKeyBytes = 2048
	// MaxObjectValueBytes is Cloudflare's value size limit, 128 KiB. It
	// bounds the value's encoded bytes; objectValueSlack bytes more are
	// allowed for the encoding's own tags, as Workers allows (so that a
	// 128 KiB ArrayBuffer still fits).
	MaxObjectValueBytes = 128 << 10
	objectValueSlack    = 32
	// MaxObjectBatch is the most keys one get, put or delete takes:
	// Cloudflare's 128.
	MaxObjectBatch = 128
)

var (
	// ErrTooManyKeys is returned when a get, put or delete names more than
	// MaxObjectBatch keys.
	ErrTooManyKeys = errors.New("too many keys")
	// ErrInvalidClass is returned for a Durable Object class name that is
	// not an identifier (dosql.CheckClass).
	ErrInvalidClass = dosql.ErrInvalidClass
	// ErrInvalidObjectID is returned for an object id that is not
	// lowercase hex (dosql.CheckID).
	ErrInvalidObjectID = dosql.ErrInvalidID
	// ErrDatabaseFull is returned when an SQL write would take an object's
	// database past its size cap (Options.ObjectSQL.MaxBytes).
	ErrDatabaseFull = dosql.ErrDatabaseFull
	// ErrInvalidListOptions is returned for list options that contradict
	// each other (start and startAfter both) or a negative limit.
	ErrInvalidListOptions = errors.New("invalid list options")
)

// Objects are the Durable Objects of one class. Obtain it with DB.Objects;
// it is cheap and stateless. An invalid class name makes every call fail
// with ErrInvalidClass (CheckObjectClass tells at config time).
type Objects struct {
	db    *DB
	class string
}

// Objects returns the objects of a class.
func (db *DB) Objects(class string) *Objects { return &Objects{db: db, class: class} }

// CheckObjectClass validates a class name: letters, digits and
// underscores, not starting with a digit, at most 128 bytes.
func CheckObjectClass(class string) error { return dosql.CheckClass(class) }

// CheckObjectID validates an object id: 1 to 128 lowercase hex digits.
func CheckObjectID(id string) error { return dosql.CheckID(id) }

// ObjectIDFromName is the id of the object a class's idFromName(name)
// names: the same name gives the same id, different classes different ids.
func ObjectIDFromName(class, name string) string {
	return objectHash("name", class, name)
}

// SandboxObjectID is the id of a sandbox's own object of a class (what
// idFromString(ctx.containerId) reaches). It can never equal an
// ObjectIDFromName id, so no script can name its way into a sandbox's object.
func SandboxObjectID(class, sandbox string) string {
	return objectHash("sandbox", class, sandbox)
}

func objectHash(domain, class, name string) string {
	h := sha256.New()
	h.Write([]byte(domain))
	h.Write([]byte{0})
	h.Write([]byte(class))
	h.Write([]byte{0})
	h.Write([]byte(name))
	return hex.EncodeToString(h.Sum(nil))
}

// NewObjectID returns a random id (newUniqueId), 64 hex digits as
// Cloudflare's ids are.
func NewObjectID() string {
	var b [32]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ObjectRecord is what the store knows of an object besides its data.
type ObjectRecord struct {
	Class string `json:"class"`
	ID    string `json:"id"`
	// Owner is the sandbox the object belongs to, or "".
	Owner string `json:"owner,omitempty"`
}

// object record layout: [1] version (1), then the owner's name.
const objectRecordV1 = 1

func encodeObjectRecord(owner string) []byte { return append([]byte{objectRecordV1}, owner...) }

func decodeObjectOwner(b []byte) string {
	if len(b) < 1 || b[0] != objectRecordV1 {
		return ""
	}
	return string(b[1:])
}

func (o *Objects) check(id string) error {
	if err := dosql.CheckClass(o.class); err != nil {
		return err
	}
	return dosql.CheckID(id)
}

// Create records object id with owner ("" for none) unless it exists, and
// returns its record: an existing object keeps the owner it has. A worker
// calls it when it makes a stub whose id it made from a sandbox's name
// (SandboxObjectID), so that the sandbox's purge finds the object; an
// object first written without Create has no owner.
func (o *Objects) Create(id, owner string) (rec ObjectRecord, err error) {
	if err := o.check(id); err != nil {
		return rec, err
	}
	if len(owner) > 255 {
		return rec, fmt.Errorf("owner %q: longer than 255 bytes", owner)
	}
	rec, err = o.Lookup(id)
	if !errors.Is(err, ErrNotFound) {
		return rec, err
	}
	err = o.db.update(func(tx *bolt.Tx) error {
		var err error
		rec.Owner, err = ensureObject(tx, o.class, id, owner)
		return err
	})
	return ObjectRecord{Class: o.class, ID: id, Owner: rec.Owner}, err
}

// Lookup returns an object's record, or ErrNotFound for an object never
// created nor written.
func (o *Objects) Lookup(id string) (ObjectRecord, error) {
	if err := o.check(id); err != nil {
		return ObjectRecord{}, err
	}
	rec := ObjectRecord{Class: o.class, ID: id}
	found := false
	err := o.db.bolt.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketDOObjects).Bucket([]byte(o.class)); b != nil {
			if v := b.Get([]byte(id)); v != nil {
				rec.Owner, found = decodeObjectOwner(v), true
			}
		}
		return nil
	})
	if err == nil && !found {
		err = ErrNotFound
	}
	return rec, mapBoltErr(err)
}

// ensureObject returns the owner of the object's record, writing the
// record with owner first if there is none.
func ensureObject(tx *bolt.Tx, class, id, owner string) (string, error) {
	b, err := tx.Bucket(bucketDOObjects).CreateBucketIfNotExists([]byte(class))
	if err != nil {
		return "", err
	}
	if v := b.Get([]byte(id)); v != nil {
		return decodeObjectOwner(v), nil
	}
	return owner, b.Put([]byte(id), encodeObjectRecord(owner))
}

// Storage returns object id's storage. Like Objects it is cheap: make one
// per call if that is simpler.
func (o *Objects) Storage(id string) *ObjectStorage {
	return &ObjectStorage{db: o.db, class: o.class, id: id}
}

// ObjectStorage is one object's storage. The calls of one object should
// come one at a time, as a Durable Object's do (the worker's input gate);
// each call is atomic on its own, so concurrent calls do not corrupt
// anything, but a Transaction does not detect a concurrent writer.
type ObjectStorage struct {
	db    *DB
	class string
	id    string
}

// ObjectEntry is one key and value of a listing.
type ObjectEntry struct {
	Key   string
	Value []byte
}

// ObjectListOptions select the keys of a List, as Cloudflare's list()
// options do. Keys are ordered by their UTF-8 bytes.
type ObjectListOptions struct {
	// Start is the first key to return (inclusive).
	Start string
	// StartAfter is the key after which to start (exclusive); it cannot be
	// given with Start.
	StartAfter string
	// End is the key to stop before (exclusive).
	End string
	// Prefix keeps only keys that start with it.
	Prefix string
	// Reverse returns the keys in descending order; Start, StartAfter and
	// End keep their meaning (the range is the same), and Limit takes the
	// last keys of it.
	Reverse bool
	// Limit bounds the entries returned; 0 means all.
	Limit int
}

func (s *ObjectStorage) path() [][]byte { return [][]byte{[]byte(s.class), []byte(s.id)} }

func (s *ObjectStorage) bucket(tx *bolt.Tx) *bolt.Bucket { return nested(tx, bucketDO, s.path()) }

func (s *ObjectStorage) check() error {
	if err := dosql.CheckClass(s.class); err != nil {
		return err
	}
	return dosql.CheckID(s.id)
}

func checkObjectKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: the empty key", ErrInvalidKey)
	}
	return checkKey(key, MaxObjectKeyBytes)
}

func checkObjectValue(key string, v []byte) error {
	if err := checkObjectKey(key); err != nil {
		return err
	}
	if len(v) > MaxObjectValueBytes+objectValueSlack {
		return fmt.Errorf("%w: %d bytes under key %q, limit %d (128 KiB)", ErrValueTooLarge, len(v), clip(key), MaxObjectValueBytes)
	}
	return nil
}

func checkBatch(n int) error {
	if n > MaxObjectBatch {
		return fmt.Errorf("%w: %d keys, limit %d", ErrTooManyKeys, n, MaxObjectBatch)
	}
	return nil
}

func checkKeys(keys []string) error {
	if err := checkBatch(len(keys)); err != nil {
		return err
	}
	for _, k := range keys {
		if err := checkObjectKey(k); err != nil {
			return err
		}
	}
	return nil
}

// Get returns the values of the keys that exist (at most MaxObjectBatch
// keys); a missing key is missing from the map.
func (s *ObjectStorage) Get(keys ...string) (out map[string][]byte, err error) {
	defer func(t time.Time) { s.db.observe(KindDO, "get", t, err) }(time.Now())
	if err := s.check(); err != nil {
		return nil, err
	}
	if err := checkKeys(keys); err != nil {
		return nil, err
	}
	out = make(map[string][]byte, len(keys))
	n := 0
	err = s.db.bolt.View(func(tx *bolt.Tx) error {
		b := s.bucket(tx)
		if b == nil {
			return nil
		}
		for _, k := range keys {
			if v := b.Get([]byte(k)); v != nil {
				out[k] = bytes.Clone(v)
				n += len(v)
			}
		}
		return nil
	})
	s.db.countBytes(KindDO, "read", n)
	return out, mapBoltErr(err)
}

// objectWrite is one put (value non-nil) or delete (value nil) of a write.
type objectWrite struct {
	key   string
	value []byte
}

// write applies writes in order in one commit, charging the object's owner
// for what they add and giving back what they remove; with a quota
// exceeded nothing is written and the *QuotaError returned. deleted counts
// the deletes of keys that existed.
func (s *ObjectStorage) write(writes []objectWrite) (deleted int, err error) {
	var need int64
	for _, w := range writes {
		if w.value != nil {
			need += int64(len(w.key) + len(w.value))
		}
	}
	if need > 0 {
		if err := s.db.checkSpace(need); err != nil {
			return 0, err
		}
	}
	var qerr *QuotaError
	err = s.db.update(func(tx *bolt.Tx) error {
		// This may run twice (see update): start from a clean slate.
		deleted, qerr = 0, nil
		owner, err := ensureObject(tx, s.class, s.id, "")
		if err != nil {
			return err
		}
		b, err := nestedRW(tx, bucketDO, s.path())
		if err != nil {
			return err
		}
		// What each key holds as the writes go, for the accounting.
		held := map[string]int{} // key → value length, -1 for absent
		old := func(k string) int {
			if n, ok := held[k]; ok {
				return n
			}
			if v := b.Get([]byte(k)); v != nil {
				return len(v)
			}
			return -1
		}
		d := usageDelta{}
		for _, w := range writes {
			if n := old(w.key); n >= 0 {
				d.add(owner, KindDO, -int64(len(w.key)+n), -1)
				if w.value == nil {
					deleted++
				}
			}
			if w.value != nil {
				d.add(owner, KindDO, int64(len(w.key)+len(w.value)), 1)
				held[w.key] = len(w.value)
			} else {
				held[w.key] = -1
			}
		}
		if qerr, err = s.db.charge(tx, d); err != nil || qerr != nil {
			return err
		}
		for _, w := range writes {
			if w.value == nil {
				err = b.Delete([]byte(w.key))
			} else {
				err = b.Put([]byte(w.key), w.value)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil && qerr != nil {
		return 0, qerr
	}
	return deleted, err
}

// Put stores the entries (at most MaxObjectBatch) in one commit: all or
// none. A nil value stores an empty one.
func (s *ObjectStorage) Put(entries map[string][]byte) (err error) {
	defer func(t time.Time) { s.db.observe(KindDO, "put", t, err) }(time.Now())
	if err := s.check(); err != nil {
		return err
	}
	if err := checkBatch(len(entries)); err != nil {
		return err
	}
	if len(entries) == 0 {
		return nil
	}
	writes := make([]objectWrite, 0, len(entries))
	n := 0
	for k, v := range entries {
		if err := checkObjectValue(k, v); err != nil {
			return err
		}
		if v == nil {
			v = []byte{}
		}
		writes = append(writes, objectWrite{k, v})
		n += len(v)
	}
	if _, err = s.write(writes); err == nil {
		s.db.countBytes(KindDO, "written", n)
	}
	return err
}

// Delete removes the keys (at most MaxObjectBatch) and returns how many
// existed.
func (s *ObjectStorage) Delete(keys ...string) (n int, err error) {
	defer func(t time.Time) { s.db.observe(KindDO, "delete", t, err) }(time.Now())
	if err := s.check(); err != nil {
		return 0, err
	}
	if err := checkKeys(keys); err != nil {
		return 0, err
	}
	if len(keys) == 0 {
		return 0, nil
	}
	writes := make([]objectWrite, len(keys))
	for i, k := range keys {
		writes[i] = objectWrite{key: k}
	}
	return s.write(writes)
}

// List returns the entries the options select, in key order (or reversed).
func (s *ObjectStorage) List(o ObjectListOptions) (out []ObjectEntry, err error) {
	defer func(t time.Time) { s.db.observe(KindDO, "list", t, err) }(time.Now())
	if err := s.check(); err != nil {
		return nil, err
	}
	if err := o.check(); err != nil {
		return nil, err
	}
	err = s.db.bolt.View(func(tx *bolt.Tx) error {
		out = listObject(s.bucket(tx), o, nil)
		return nil
	})
	return out, mapBoltErr(err)
}

func (o ObjectListOptions) check() error {
	if o.Start != "" && o.StartAfter != "" {
		return fmt.Errorf("%w: start and startAfter cannot both be given", ErrInvalidListOptions)
	}
	if o.Limit < 0 {
		return fmt.Errorf("%w: limit %d is negative", ErrInvalidListOptions, o.Limit)
	}
	return nil
}

// in says whether key is in the range the options select.
func (o ObjectListOptions) in(k []byte) bool {
	return (o.Start == "" || string(k) >= o.Start) &&
		(o.StartAfter == "" || string(k) > o.StartAfter) &&
		(o.End == "" || string(k) < o.End) &&
		bytes.HasPrefix(k, []byte(o.Prefix))
}

// lower is the smallest key the range can hold.
func (o ObjectListOptions) lower() []byte {
	// StartAfter itself is out of the range; in skips it.
	return []byte(max(o.Prefix, o.Start, o.StartAfter))
}

// upper is the key the range ends before, or nil for the end of the space.
func (o ObjectListOptions) upper() []byte {
	var u []byte
	if o.End != "" {
		u = []byte(o.End)
	}
	if p := prefixEnd([]byte(o.Prefix)); p != nil && (u == nil || bytes.Compare(p, u) < 0) {
		u = p
	}
	return u
}

// prefixEnd is the first key after every key with prefix p, or nil.
func prefixEnd(p []byte) []byte {
	e := bytes.Clone(p)
	for i := len(e) - 1; i >= 0; i-- {
		if e[i] < 0xff {
			e[i]++
			return e[:i+1]
		}
	}
	return nil
}

// listObject lists the keys of b in the range, with overlay (a
// transaction's writes: nil value for a delete) laid over them.
func listObject(b *bolt.Bucket, o ObjectListOptions, overlay map[string][]byte) []ObjectEntry {
	out := []ObjectEntry{}
	// The overlay's keys in the range, in the listing's order.
	var ov []string
	for k := range overlay {
		if o.in([]byte(k)) {
			ov = append(ov, k)
		}
	}
	sort.Strings(ov)
	if o.Reverse {
		for i, j := 0, len(ov)-1; i < j; i, j = i+1, j-1 {
			ov[i], ov[j] = ov[j], ov[i]
		}
	}
	// before says whether a comes before b in the listing's order.
	before := func(a, b []byte) bool {
		if o.Reverse {
			return bytes.Compare(a, b) > 0
		}
		return bytes.Compare(a, b) < 0
	}
	var c *bolt.Cursor
	var k, v []byte
	if b != nil {
		c = b.Cursor()
		if !o.Reverse {
			k, v = c.Seek(o.lower())
		} else if u := o.upper(); u == nil {
			k, v = c.Last()
		} else if k, v = c.Seek(u); k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
	}
	next := func() {
		if o.Reverse {
			k, v = c.Prev()
		} else {
			k, v = c.Next()
		}
	}
	// stored returns the next stored key in the range, or nil.
	lower, upper := o.lower(), o.upper()
	stored := func() []byte {
		for k != nil {
			if o.in(k) {
				return k
			}
			if (o.Reverse && bytes.Compare(k, lower) < 0) || (!o.Reverse && upper != nil && bytes.Compare(k, upper) >= 0) {
				k = nil // past the range
				break
			}
			next()
		}
		return nil
	}
	for o.Limit == 0 || len(out) < o.Limit {
		sk := stored()
		switch {
		case sk == nil && len(ov) == 0:
			return out
		case len(ov) > 0 && (sk == nil || !before(sk, []byte(ov[0]))):
			// The overlay's key comes first (or replaces the stored one).
			if sk != nil && string(sk) == ov[0] {
				next()
			}
			if val := overlay[ov[0]]; val != nil {
				out = append(out, ObjectEntry{ov[0], bytes.Clone(val)})
			}
			ov = ov[1:]
		default:
			if _, ok := overlay[string(sk)]; !ok {
				out = append(out, ObjectEntry{string(sk), bytes.Clone(v)})
			}
			next()
		}
	}
	return out
}

// DeleteAll removes every key of the object and its SQL database. The
// object's record stays, so that it keeps its owner.
func (s *ObjectStorage) DeleteAll() (err error) {
	defer func(t time.Time) { s.db.observe(KindDO, "delete_all", t, err) }(time.Now())
	if err := s.check(); err != nil {
		return err
	}
	s.db.objMu.RLock()
	defer s.db.objMu.RUnlock()
	err = s.db.update(func(tx *bolt.Tx) error {
		return deleteObjectKeys(s.db, tx, s.class, s.id, "", false)
	})
	if err != nil {
		return err
	}
	return s.db.sql.Remove(s.class, s.id)
}

// deleteObjectKeys deletes an object's key space (and, with record, its
// record), giving its owner the space back. owner is the record's, or ""
// to read it.
func deleteObjectKeys(db *DB, tx *bolt.Tx, class, id, owner string, record bool) error {
	objs := tx.Bucket(bucketDOObjects).Bucket([]byte(class))
	if owner == "" && objs != nil {
		owner = decodeObjectOwner(objs.Get([]byte(id)))
	}
	if cb := tx.Bucket(bucketDO).Bucket([]byte(class)); cb != nil {
		if b := cb.Bucket([]byte(id)); b != nil {
			d := usageDelta{}
			b.ForEach(func(k, v []byte) error {
				d.add(owner, KindDO, -int64(len(k)+len(v)), -1)
				return nil
			})
			if err := db.release(tx, d, nil, nil); err != nil {
				return err
			}
			if err := cb.DeleteBucket([]byte(id)); err != nil {
				return err
			}
		}
	}
	if record && objs != nil {
		return objs.Delete([]byte(id))
	}
	return nil
}

// purgeObjects deletes, inside Purge's transaction, the objects sandbox
// owns, and returns them for their databases to be removed after.
func purgeObjects(db *DB, tx *bolt.Tx, sandbox string) ([]ObjectRecord, error) {
	var owned []ObjectRecord
	top := tx.Bucket(bucketDOObjects)
	err := top.ForEachBucket(func(class []byte) error {
		return top.Bucket(class).ForEach(func(id, v []byte) error {
			if decodeObjectOwner(v) == sandbox {
				owned = append(owned, ObjectRecord{Class: string(class), ID: string(id), Owner: sandbox})
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	for _, r := range owned {
		if err := deleteObjectKeys(db, tx, r.Class, r.ID, sandbox, true); err != nil {
			return nil, err
		}
	}
	return owned, nil
}

// recountObjects adds the objects' key spaces to a recount (see recount),
// and says which key spaces have no object record: every write makes the
// record first and a purge removes both, so one alone is an inconsistency.
func recountObjects(tx *bolt.Tx, d usageDelta) []error {
	var errs []error
	top := tx.Bucket(bucketDO)
	objs := tx.Bucket(bucketDOObjects)
	top.ForEachBucket(func(class []byte) error {
		cb := top.Bucket(class)
		rb := objs.Bucket(class)
		return cb.ForEachBucket(func(id []byte) error {
			var rec []byte
			if rb != nil {
				rec = rb.Get(id)
			}
			if rec == nil {
				errs = append(errs, fmt.Errorf("%s object %s: keys without an object record", class, id))
			}
			owner := decodeObjectOwner(rec)
			return cb.Bucket(id).ForEach(func(k, v []byte) error {
				d.add(owner, KindDO, int64(len(k)+len(v)), 1)
				return nil
			})
		})
	})
	return errs
}

// ObjectTxn is a transaction on one object's storage (Begin, Transaction).
// Its writes are kept until Commit, which applies them in one commit; its
// reads see them laid over what is stored. It holds no bbolt transaction
// open, so a script awaiting inside it stalls nobody else: the input gate
// (the object's calls one at a time) is what keeps the stored data from
// changing under it.
type ObjectTxn struct {
	s        *ObjectStorage
	writes   map[string][]byte // nil value: deleted
	order    []string          // keys in the order first written
	rollback bool
	done     bool
}

// ErrTxnDone is returned by a transaction's calls after Commit or Rollback
// ended it.
var ErrTxnDone = errors.New("transaction already ended")

// Begin starts a transaction.
func (s *ObjectStorage) Begin() *ObjectTxn {
	return &ObjectTxn{s: s, writes: map[string][]byte{}}
}

// Transaction runs fn in a transaction and commits it if fn returns nil
// and did not call Rollback; an error from fn (returned) or from the
// commit leaves the storage as it was.
func (s *ObjectStorage) Transaction(fn func(tx *ObjectTxn) error) error {
	tx := s.Begin()
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// Get reads keys as Get does, seeing the transaction's own writes.
func (t *ObjectTxn) Get(keys ...string) (map[string][]byte, error) {
	if t.done {
		return nil, ErrTxnDone
	}
	if err := checkKeys(keys); err != nil {
		return nil, err
	}
	var rest []string
	out := map[string][]byte{}
	for _, k := range keys {
		if v, ok := t.writes[k]; ok {
			if v != nil {
				out[k] = bytes.Clone(v)
			}
		} else {
			rest = append(rest, k)
		}
	}
	if len(rest) == 0 {
		return out, nil
	}
	got, err := t.s.Get(rest...)
	for k, v := range got {
		out[k] = v
	}
	return out, err
}

// Put stores entries as Put does, at Commit.
func (t *ObjectTxn) Put(entries map[string][]byte) error {
	if t.done {
		return ErrTxnDone
	}
	if err := checkBatch(len(entries)); err != nil {
		return err
	}
	for k, v := range entries {
		if err := checkObjectValue(k, v); err != nil {
			return err
		}
	}
	for k, v := range entries {
		if v == nil {
			v = []byte{}
		}
		t.set(k, bytes.Clone(v))
	}
	return nil
}

func (t *ObjectTxn) set(k string, v []byte) {
	if _, ok := t.writes[k]; !ok {
		t.order = append(t.order, k)
	}
	t.writes[k] = v
}

// Delete deletes keys as Delete does, at Commit, and returns how many
// existed (as this transaction sees them).
func (t *ObjectTxn) Delete(keys ...string) (int, error) {
	if t.done {
		return 0, ErrTxnDone
	}
	if err := checkKeys(keys); err != nil {
		return 0, err
	}
	got, err := t.Get(keys...)
	if err != nil {
		return 0, err
	}
	for _, k := range keys {
		t.set(k, nil)
	}
	return len(got), nil
}

// List lists as List does, seeing the transaction's own writes.
func (t *ObjectTxn) List(o ObjectListOptions) (out []ObjectEntry, err error) {
	if t.done {
		return nil, ErrTxnDone
	}
	if err := t.s.check(); err != nil {
		return nil, err
	}
	if err := o.check(); err != nil {
		return nil, err
	}
	err = t.s.db.bolt.View(func(tx *bolt.Tx) error {
		out = listObject(t.s.bucket(tx), o, t.writes)
		return nil
	})
	return out, mapBoltErr(err)
}

// Rollback discards the transaction's writes; a later Commit writes
// nothing (Cloudflare's txn.rollback()).
func (t *ObjectTxn) Rollback() { t.rollback = true }

// Commit applies the transaction's writes in one commit, or none of them
// (a quota exceeded, a write error).
func (t *ObjectTxn) Commit() (err error) {
	if t.done {
		return ErrTxnDone
	}
	t.done = true
	if t.rollback || len(t.writes) == 0 {
		return nil
	}
	defer func(s time.Time) { t.s.db.observe(KindDO, "txn", s, err) }(time.Now())
	if err := t.s.check(); err != nil {
		return err
	}
	writes := make([]objectWrite, len(t.order))
	for i, k := range t.order {
		writes[i] = objectWrite{k, t.writes[k]}
	}
	_, err = t.s.write(writes)
	return err
}

// Exec runs an SQL query on the object's database (dosql.DB.Exec: one
// transaction per call, the size cap Options.ObjectSQL.MaxBytes). The
// object's record is made first if it has none, so that a purge of its
// owner finds the database.
func (s *ObjectStorage) Exec(query string, args ...any) (c *dosql.Cursor, err error) {
	defer func(t time.Time) { s.db.observe(KindDO, "sql", t, err) }(time.Now())
	if err := s.check(); err != nil {
		return nil, err
	}
	s.db.objMu.RLock()
	defer s.db.objMu.RUnlock()
	if _, err := s.db.Objects(s.class).Create(s.id, ""); err != nil {
		return nil, err
	}
	return s.db.sql.Exec(s.class, s.id, query, args...)
}
