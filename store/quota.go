package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"syscall"

	bolt "go.etcd.io/bbolt"
)

// Accounting (docs/handlers.md, "Quotas", says it for users):
//
// Every KV/state record and blob object names its owner: the sandbox whose
// write stored the current version ("" for an operator's write through the
// admin API, and for data written before this build, which nobody is
// charged for). The usage bucket keeps, per owner, the bytes and keys of
// each kind its records occupy; every write, delete, expiry and purge
// changes it in the same bbolt transaction as the records, so the two
// cannot drift, and a write that would take its owner over a quota is
// refused before anything of it is stored. Writes are serialised by the
// committer, so concurrent writers cannot overshoot either.
//
// A record occupies its key, value and metadata bytes; an object its key,
// content and stored headers; an upload in progress the content it has so
// far (kept with its blob_gc entry), so a streamed upload is refused the
// moment it would cross the quota. A Durable Object's entry occupies its key
// and value bytes, charged to the object's owner (objects.go); its SQL
// database is bounded per object instead (dosql), since its file lives
// outside bbolt's transactions and grows by pages, not records.

var (
	// ErrQuotaExceeded is returned when a write would take the sandbox it
	// is charged to over one of its quotas; the error is a *QuotaError
	// naming it. Nothing of the write is stored.
	ErrQuotaExceeded = errors.New("quota_exceeded")
	// ErrDiskFull is returned for a write while the data directory's
	// filesystem has less free space than Options.MinFreeBytes. Reads and
	// deletes still work.
	ErrDiskFull = errors.New("disk_full")
)

// Amount is what one store kind holds: bytes, and keys (objects, for blobs).
type Amount struct {
	Bytes int64 `json:"bytes"`
	Keys  int64 `json:"keys"`
}

// Amounts holds an Amount per store kind: a sandbox's usage, or its quotas,
// where a zero field means no limit.
type Amounts struct {
	KV    Amount `json:"kv"`
	State Amount `json:"state"`
	Blob  Amount `json:"blob"`
	// DO is Durable-Object storage: the key-value entries of the objects
	// the sandbox owns (see Objects.Create). Their SQL databases are bounded
	// per object instead (dosql.Options.MaxBytes).
	DO Amount `json:"do"`
}

// usageKinds are the kinds usage and quotas are kept for.
var usageKinds = []string{KindKV, KindState, KindBlob, KindDO}

// Of returns the Amount of a kind (KindKV, KindState, KindBlob or KindDO),
// or nil.
func (a *Amounts) Of(kind string) *Amount {
	switch kind {
	case KindKV:
		return &a.KV
	case KindState:
		return &a.State
	case KindBlob:
		return &a.Blob
	case KindDO:
		return &a.DO
	}
	return nil
}

// Add adds b to a.
func (a *Amounts) Add(b Amounts) {
	for _, k := range usageKinds {
		x, y := a.Of(k), b.Of(k)
		x.Bytes += y.Bytes
		x.Keys += y.Keys
	}
}

func (a Amounts) zero() bool { return a == Amounts{} }

// QuotaFields are the settings a per-sandbox quota override may name.
var QuotaFields = []string{"kv.bytes", "kv.keys", "state.bytes", "state.keys", "blob.bytes", "blob.keys", "do.bytes", "do.keys"}

// WithOverrides returns q with the fields the overrides name replaced (0:
// no limit). An unknown field or a negative value is an error.
func (q Amounts) WithOverrides(o map[string]int64) (Amounts, error) {
	for f, n := range o {
		kind, what, _ := strings.Cut(f, ".")
		a := q.Of(kind)
		if a == nil || (what != "bytes" && what != "keys") {
			return q, fmt.Errorf("quota %q: want one of %s", f, strings.Join(QuotaFields, ", "))
		}
		if n < 0 {
			return q, fmt.Errorf("quota %s: %d is negative", f, n)
		}
		if what == "bytes" {
			a.Bytes = n
		} else {
			a.Keys = n
		}
	}
	return q, nil
}

// QuotaError says which quota a write would have passed.
type QuotaError struct {
	Sandbox string
	Kind    string // kv, state, blob or do
	Limit   string // bytes or keys
	Quota   int64
	Usage   int64 // before the write
	Write   int64 // what the write adds
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("quota_exceeded: the %s %s quota of sandbox %s is %d; %d in use, the write adds %d",
		e.Kind, e.Limit, e.Sandbox, e.Quota, e.Usage, e.Write)
}

func (e *QuotaError) Is(target error) bool { return target == ErrQuotaExceeded }

// SpaceError says that the data directory is under its free-space floor.
type SpaceError struct {
	Free, Floor int64
}

func (e *SpaceError) Error() string {
	return fmt.Sprintf("disk_full: %d bytes free under the data directory, under the floor of %d", e.Free, e.Floor)
}

func (e *SpaceError) Is(target error) bool { return target == ErrDiskFull }

// Buckets of the accounting.
var (
	bucketUsage  = []byte("usage")  // <sandbox> → encodeUsage
	bucketQuotas = []byte("quotas") // <sandbox> → JSON overrides
)

// usage layout: kv bytes, kv keys, state bytes, state keys, blob bytes, blob
// keys, do bytes, do keys; int64 big endian each. Schema version 2 wrote
// the first six only (48 bytes), which decode with no DO usage.
func encodeUsage(a Amounts) []byte {
	b := make([]byte, 64)
	for i, v := range []int64{a.KV.Bytes, a.KV.Keys, a.State.Bytes, a.State.Keys, a.Blob.Bytes, a.Blob.Keys, a.DO.Bytes, a.DO.Keys} {
		binary.BigEndian.PutUint64(b[8*i:], uint64(v))
	}
	return b
}

func decodeUsage(b []byte) Amounts {
	if len(b) != 48 && len(b) != 64 {
		return Amounts{}
	}
	v := func(i int) int64 { return int64(binary.BigEndian.Uint64(b[8*i:])) }
	a := Amounts{KV: Amount{v(0), v(1)}, State: Amount{v(2), v(3)}, Blob: Amount{v(4), v(5)}}
	if len(b) == 64 {
		a.DO = Amount{v(6), v(7)}
	}
	return a
}

// usageDelta is the change of usage a write makes, by owner.
type usageDelta map[string]*Amounts

func (d usageDelta) add(owner, kind string, bytes, keys int64) {
	if owner == "" || (bytes == 0 && keys == 0) {
		return
	}
	a := d[owner]
	if a == nil {
		a = &Amounts{}
		d[owner] = a
	}
	x := a.Of(kind)
	x.Bytes += bytes
	x.Keys += keys
}

func (d usageDelta) owners() []string {
	out := make([]string, 0, len(d))
	for o := range d {
		out = append(out, o)
	}
	sort.Strings(out)
	return out
}

// quotaIn returns a sandbox's quotas: the defaults with its overrides.
func (db *DB) quotaIn(tx *bolt.Tx, sandbox string) Amounts {
	q := db.quotaDefaults()
	if raw := tx.Bucket(bucketQuotas).Get([]byte(sandbox)); raw != nil {
		var o map[string]int64
		if json.Unmarshal(raw, &o) == nil {
			if r, err := q.WithOverrides(o); err == nil {
				q = r
			}
		}
	}
	return q
}

// charge checks d against the quotas of the owners it adds to and, when
// every one holds, records it. A change that does not add bytes or keys of
// a kind is never refused on that kind (a delete, a smaller overwrite), even
// over a quota lowered since.
func (db *DB) charge(tx *bolt.Tx, d usageDelta) (*QuotaError, error) {
	if len(d) == 0 {
		return nil, nil
	}
	owners := d.owners()
	now := make([]Amounts, len(owners))
	ub := tx.Bucket(bucketUsage)
	for i, o := range owners {
		now[i] = decodeUsage(ub.Get([]byte(o)))
		delta := d[o]
		var q *Amounts
		for _, kind := range usageKinds {
			dx, cur := delta.Of(kind), now[i].Of(kind)
			if dx.Bytes <= 0 && dx.Keys <= 0 {
				continue
			}
			if q == nil {
				qq := db.quotaIn(tx, o)
				q = &qq
			}
			lim := q.Of(kind)
			if dx.Bytes > 0 && lim.Bytes > 0 && cur.Bytes+dx.Bytes > lim.Bytes {
				return &QuotaError{Sandbox: o, Kind: kind, Limit: "bytes", Quota: lim.Bytes, Usage: cur.Bytes, Write: dx.Bytes}, nil
			}
			if dx.Keys > 0 && lim.Keys > 0 && cur.Keys+dx.Keys > lim.Keys {
				return &QuotaError{Sandbox: o, Kind: kind, Limit: "keys", Quota: lim.Keys, Usage: cur.Keys, Write: dx.Keys}, nil
			}
		}
	}
	return nil, db.release(tx, d, owners, now)
}

// wouldCharge says whether charging bytes and keys more of kind to owner
// would pass its quota now, without recording anything: a fast refusal of
// an upload that cannot fit, before any of it is read.
func (db *DB) wouldCharge(tx *bolt.Tx, owner, kind string, bytes, keys int64) *QuotaError {
	usage, quota := decodeUsage(tx.Bucket(bucketUsage).Get([]byte(owner))), db.quotaIn(tx, owner)
	cur, lim := usage.Of(kind), quota.Of(kind)
	switch {
	case bytes > 0 && lim.Bytes > 0 && cur.Bytes+bytes > lim.Bytes:
		return &QuotaError{Sandbox: owner, Kind: kind, Limit: "bytes", Quota: lim.Bytes, Usage: cur.Bytes, Write: bytes}
	case keys > 0 && lim.Keys > 0 && cur.Keys+keys > lim.Keys:
		return &QuotaError{Sandbox: owner, Kind: kind, Limit: "keys", Quota: lim.Keys, Usage: cur.Keys, Write: keys}
	}
	return nil
}

// release records d without checking quotas: for changes that only give
// space back (deletes, expiry, purge, abandoned uploads).
func (db *DB) release(tx *bolt.Tx, d usageDelta, owners []string, now []Amounts) error {
	if owners == nil {
		owners = d.owners()
	}
	ub := tx.Bucket(bucketUsage)
	for i, o := range owners {
		var a Amounts
		if now != nil {
			a = now[i]
		} else {
			a = decodeUsage(ub.Get([]byte(o)))
		}
		a.Add(*d[o])
		var err error
		if a.zero() {
			err = ub.Delete([]byte(o))
		} else {
			err = ub.Put([]byte(o), encodeUsage(a))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Usage returns what the writes charged to a sandbox occupy now.
func (db *DB) Usage(sandbox string) (a Amounts, err error) {
	err = db.bolt.View(func(tx *bolt.Tx) error {
		a = decodeUsage(tx.Bucket(bucketUsage).Get([]byte(sandbox)))
		return nil
	})
	return a, mapBoltErr(err)
}

// AllUsage returns the usage of every sandbox charged with anything.
func (db *DB) AllUsage() (map[string]Amounts, error) {
	out := map[string]Amounts{}
	err := db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsage).ForEach(func(k, v []byte) error {
			out[string(k)] = decodeUsage(v)
			return nil
		})
	})
	return out, mapBoltErr(err)
}

// Quota returns a sandbox's quotas: Options.Quotas with its overrides.
func (db *DB) Quota(sandbox string) (q Amounts, err error) {
	err = db.bolt.View(func(tx *bolt.Tx) error {
		q = db.quotaIn(tx, sandbox)
		return nil
	})
	return q, mapBoltErr(err)
}

// SetQuota replaces a sandbox's quota overrides (see QuotaFields); nil or
// empty removes them, so the sandbox gets Options.Quotas.
func (db *DB) SetQuota(sandbox string, overrides map[string]int64) error {
	if _, err := db.quotaDefaults().WithOverrides(overrides); err != nil {
		return err
	}
	if len(overrides) == 0 {
		// The common case of every sandbox create and delete: nothing to
		// remove, and no commit (an fsync) to pay for it.
		var set bool
		if err := db.bolt.View(func(tx *bolt.Tx) error {
			set = tx.Bucket(bucketQuotas).Get([]byte(sandbox)) != nil
			return nil
		}); err != nil || !set {
			return mapBoltErr(err)
		}
	}
	raw, _ := json.Marshal(overrides)
	return db.update(func(tx *bolt.Tx) error {
		if len(overrides) == 0 {
			return tx.Bucket(bucketQuotas).Delete([]byte(sandbox))
		}
		return tx.Bucket(bucketQuotas).Put([]byte(sandbox), raw)
	})
}

// checkSpace refuses a write of need bytes when it would leave the data
// directory's filesystem with less than Options.MinFreeBytes free.
func (db *DB) checkSpace(need int64) error {
	db.defMu.RLock()
	floor := db.opts.MinFreeBytes
	db.defMu.RUnlock()
	if floor <= 0 {
		return nil
	}
	free, err := db.FreeBytes()
	if err != nil {
		return nil // cannot tell: let bbolt find out
	}
	if free-need < floor {
		return &SpaceError{Free: free, Floor: floor}
	}
	return nil
}

// quotaDefaults are the configured quotas (Options.Quotas).
// QuotaDefaults returns the configured quotas (Options.Quotas, or the last
// SetDefaults): another engine that keeps KV for this host (etcd) holds
// its writes to the same ones.
func (db *DB) QuotaDefaults() Amounts { return db.quotaDefaults() }

func (db *DB) quotaDefaults() Amounts {
	db.defMu.RLock()
	defer db.defMu.RUnlock()
	return db.opts.Quotas
}

// SetDefaults replaces the configured quotas and free-space floor (a config
// reload): the next write is held to them. A sandbox's own overrides stay;
// nothing stored is removed.
func (db *DB) SetDefaults(quotas Amounts, minFreeBytes int64) {
	db.defMu.Lock()
	db.opts.Quotas, db.opts.MinFreeBytes = quotas, minFreeBytes
	db.defMu.Unlock()
}

// FreeBytes returns the space available to the daemon on the data
// directory's filesystem.
func (db *DB) FreeBytes() (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(db.dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", db.dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// recount computes every owner's usage from the records themselves.
func recount(tx *bolt.Tx) (map[string]Amounts, []error) {
	d := usageDelta{}
	var errs []error
	for _, kind := range []string{KindKV, KindState} {
		tx.Bucket([]byte(kind)).ForEachBucket(func(ns []byte) error {
			nb := tx.Bucket([]byte(kind)).Bucket(ns)
			return nb.ForEachBucket(func(scope []byte) error {
				return nb.Bucket(scope).ForEach(func(k, v []byte) error {
					d.add(recordOwner(v), kind, recordCharge(k, v), 1)
					return nil
				})
			})
		})
	}
	top := tx.Bucket(bucketBlob)
	top.ForEachBucket(func(name []byte) error {
		bb := top.Bucket(name)
		return bb.ForEachBucket(func(scope []byte) error {
			return bb.Bucket(scope).ForEach(func(k, v []byte) error {
				var oi ObjectInfo
				if err := json.Unmarshal(v, &oi); err != nil {
					errs = append(errs, fmt.Errorf("object %q: %w", k, errCorrupt))
					return nil
				}
				d.add(oi.Owner, KindBlob, oi.charge(), 1)
				return nil
			})
		})
	})
	errs = append(errs, recountObjects(tx, d)...)
	chunks := tx.Bucket(bucketBlobChunks)
	tx.Bucket(bucketBlobGC).ForEach(func(id, v []byte) error {
		if !isPending(v) {
			return nil
		}
		charged, owner := pendingCharge(v)
		d.add(owner, KindBlob, charged, 0)
		var stored int64
		if cb := chunks.Bucket(id); cb != nil {
			cb.ForEach(func(_, c []byte) error { stored += int64(len(c)); return nil })
		}
		if owner != "" && stored != charged {
			errs = append(errs, fmt.Errorf("upload %s of sandbox %s: %d bytes charged, %d stored", id, owner, charged, stored))
		}
		return nil
	})
	out := map[string]Amounts{}
	for o, a := range d {
		if !a.zero() {
			out[o] = *a
		}
	}
	return out, errs
}

// checkUsage compares the usage bucket with a recount.
func checkUsage(tx *bolt.Tx) error {
	want, errs := recount(tx)
	got := map[string]Amounts{}
	tx.Bucket(bucketUsage).ForEach(func(k, v []byte) error {
		got[string(k)] = decodeUsage(v)
		return nil
	})
	for o, a := range want {
		if got[o] != a {
			errs = append(errs, fmt.Errorf("usage of sandbox %s: recorded %+v, its records hold %+v", o, got[o], a))
		}
	}
	for o, a := range got {
		if _, ok := want[o]; !ok {
			errs = append(errs, fmt.Errorf("usage of sandbox %s: recorded %+v, it has no records", o, a))
		}
	}
	return errors.Join(errs...)
}
