// Package backend is the storage contract of interceptd: one interface per
// kind of data (KV and state spaces, blob buckets, Durable Objects, and the
// operator's view of quotas and purges), which the handlers, the workers'
// bindings and the admin API use, and which a storage engine implements.
//
// The doc comments here are the contract. They say what an implementation
// must keep — ordering, atomicity, which sentinel error of package store it
// returns and when — so that a handler answers the same way whatever engine
// is behind it. Package store/storetest checks an implementation against
// them; the bbolt store (package store, through Bolt) is the reference.
//
// Values, options and errors are package store's (store.Entry,
// store.ErrNotFound, …): an implementation returns those, wrapped or not,
// so that errors.Is and errors.As work as the callers expect.
//
// Every method is safe for concurrent use. Keys are non-empty UTF-8 strings
// ordered by their bytes.
package backend

import (
	"io"

	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/dosql"
)

// Stores opens the spaces of each kind. A handle is cheap to make and holds
// nothing open; it may be kept (the kv handler keeps one per connection) or
// made per request.
type Stores interface {
	KVSpaces
	BlobBuckets
	ObjectClasses
}

// KVSpaces opens KV and state spaces.
type KVSpaces interface {
	// Keys returns the space of kind (store.KindKV or store.KindState)
	// called namespace, in scope (store.ScopeShared or
	// store.SandboxScope(name)). Zero limits take the store's defaults;
	// KV.Limits reports the result. Spaces of different kind, namespace
	// or scope never see each other's keys.
	Keys(kind, namespace, scope string, l store.Limits) KV
}

// BlobBuckets opens blob buckets.
type BlobBuckets interface {
	// Blobs returns the bucket called bucket in scope (store.ScopeShared
	// or store.SandboxScope(name)). Zero MaxKeyBytes and MaxObjectBytes
	// take the store's defaults. Buckets of different name or scope never
	// see each other's objects.
	Blobs(bucket, scope string, l store.Limits) Blobs
}

// ObjectClasses opens the Durable Objects of a class.
type ObjectClasses interface {
	// Objects returns the objects of class (store.CheckObjectClass).
	Objects(class string) Objects
}

// KV is one KV or state space. Per-sandbox state is a space of kind
// store.KindState in the sandbox's scope, with the same methods: the state
// handler is the one that offers Apply to clients, but an engine implements
// every method on every space, so that one implementation serves both kinds.
type KV interface {
	// Get returns the entry under key: its value, metadata (nil when none
	// was written) and expiry (zero when none). A key never written,
	// deleted, or whose expiry is not after now, is store.ErrNotFound — an
	// expired key is invisible at the instant it expires, however late its
	// space is reclaimed. A bad key is store.ErrInvalidKey or
	// store.ErrKeyTooLarge. The caller reads the entry's slices and does
	// not change them.
	Get(key string) (store.Entry, error)
	// Put stores e under key, replacing the previous entry whole: a write
	// without metadata or expiry clears them. It returns once the write is
	// durable. Refusals, each leaving the space as it was:
	// store.ErrInvalidKey, store.ErrKeyTooLarge, store.ErrValueTooLarge,
	// store.ErrMetadataTooLarge (limits from Limits), store.ErrInvalidMetadata
	// (metadata that is not one JSON document), store.ErrInvalidExpiry (an
	// expiry past store.MaxExpiry), a *store.QuotaError
	// (store.ErrQuotaExceeded) when the write would take e.Owner over a
	// quota of its kind, store.ErrDiskFull when the engine is out of room.
	Put(key string, e store.Entry) error
	// Delete removes key; an absent key is not an error. It gives the
	// key's owner its quota back.
	Delete(key string) error
	// List returns a page of the live keys that start with o.Prefix, in
	// byte order, with their metadata and expiry but not their values.
	// o.Limit is 1 to store.MaxListLimit (0: the maximum). When more keys
	// follow, ListComplete is false and Cursor continues after the page's
	// last key: a cursor names a position, not a snapshot, so keys written
	// after it in byte order appear on the next pages and keys written
	// before it do not. A cursor this store did not make is
	// store.ErrInvalidCursor. Expired keys never appear.
	List(o store.ListOptions) (store.ListResult, error)
	// Apply runs t atomically against one consistent view of the space:
	// either every condition holds, the reads are taken (as they were
	// before t's writes; nil for an absent key) and every write and delete
	// is applied, or nothing is. A condition that does not hold is a
	// *store.ConditionError (store.ErrConditionFailed) naming the first
	// one in t.Conditions order; over store.MaxTxnOps keys is an error;
	// quotas and limits refuse as Put does. Two transactions on the same
	// keys are serialisable: one sees the other's writes or neither's.
	Apply(t store.Txn) (map[string]*store.Entry, error)
	// Limits returns the space's limits, defaults applied.
	Limits() store.Limits
	// CheckKey reports whether key is one Get, Put and Delete take
	// (store.ErrInvalidKey, store.ErrKeyTooLarge).
	CheckKey(key string) error
}

// Blobs is one blob bucket: objects of up to Limits.MaxObjectBytes,
// streamed in and out.
type Blobs interface {
	// Put streams r in as the object key and returns its info. The object
	// becomes visible whole, in one step that also retires the one it
	// replaces: no reader ever sees part of it or a mix. It is never held
	// whole in memory. o.Size is the announced length (-1: unknown);
	// fewer bytes is store.ErrIncomplete, more (or more than
	// MaxObjectBytes) store.ErrValueTooLarge, a content that does not
	// match o.ContentMD5 store.ErrBadDigest. ETag is the hex MD5 of the
	// content. o.Precondition is called with the current object (nil for
	// none) before the body is read and again at the step that makes the
	// upload visible; its error is returned as it is and nothing changes.
	// Quotas (o.Owner) and disk space refuse as KV.Put's do, as soon as
	// the upload would pass them.
	Put(key string, r io.Reader, o store.PutOptions) (store.ObjectInfo, error)
	// Head returns the info of key, or store.ErrNotFound.
	Head(key string) (store.ObjectInfo, error)
	// Open opens key for reading, or returns store.ErrNotFound. The
	// content read is the version that was current at Open, until Close,
	// even if the object is replaced or deleted meanwhile.
	Open(key string) (Object, error)
	// Delete removes key; an absent key is not an error.
	Delete(key string) error
	// DeleteIf removes key if precondition, called with the current object
	// (nil for none) at the step that deletes it, returns nil; otherwise
	// its error is returned as it is and nothing is deleted. A nil
	// precondition always holds; an absent key is not an error.
	DeleteIf(key string, precondition func(cur *store.ObjectInfo) error) error
	// List returns a page of objects whose keys start with o.Prefix, in
	// byte order. With o.Delimiter, keys that hold it after the prefix are
	// rolled up into DelimitedPrefixes (prefix up to and including the
	// first delimiter), each once across all pages; o.Limit (1 to
	// store.MaxListLimit, 0: the maximum) bounds objects plus prefixes.
	// Truncated and Cursor work as KV.List's ListComplete and Cursor.
	List(o store.BlobListOptions) (store.BlobList, error)
}

// Object is an open object: its info and a reader over its content.
// Seek then Read serve ranges; a Read past the end is io.EOF. Close it.
type Object interface {
	io.ReadSeekCloser
	// Info is the object's info as Open found it; read it, do not change
	// it.
	Info() *store.ObjectInfo
}

// Objects is one Durable Object class.
type Objects interface {
	// Create makes the record of object id (store.CheckObjectID) owned by
	// owner ("" for none) unless it has one; it returns the record as
	// stored, so a second Create keeps the first owner.
	Create(id, owner string) (store.ObjectRecord, error)
	// Lookup returns an object's record, or store.ErrNotFound for one never
	// created nor written.
	Lookup(id string) (store.ObjectRecord, error)
	// Storage returns the key-value storage of object id.
	Storage(id string) ObjectStorage
}

// ObjectStorage is one Durable Object's storage. The object's calls come
// one at a time (the workers' input gate), so no method here needs to
// detect a concurrent writer; each one is atomic on its own.
type ObjectStorage interface {
	// Get returns the values of the keys that exist (at most
	// store.MaxObjectBatch keys); a missing key is missing from the map.
	Get(keys ...string) (map[string][]byte, error)
	// Put writes every entry, all or none.
	Put(entries map[string][]byte) error
	// Delete removes the keys, all or none, and returns how many existed.
	Delete(keys ...string) (int, error)
	// List returns the entries o selects in byte order (or reversed).
	List(o store.ObjectListOptions) ([]store.ObjectEntry, error)
	// DeleteAll removes every key and the SQL database; the record (and
	// its owner) stays.
	DeleteAll() error
	// Begin starts a transaction that buffers its writes until Commit.
	Begin() ObjectTxn
	// Exec runs one SQL query as one transaction. An engine without SQL
	// returns an error wrapping errors.ErrUnsupported.
	Exec(query string, args ...any) (*dosql.Cursor, error)
}

// ObjectTxn is a transaction on one object's storage: its reads see its
// own writes laid over what is stored, and Commit applies the writes all
// or none. Rollback discards the writes, and a later Commit writes nothing
// and returns nil (Cloudflare's txn.rollback()). After Commit every call,
// Commit too, is store.ErrTxnDone.
type ObjectTxn interface {
	Get(keys ...string) (map[string][]byte, error)
	Put(entries map[string][]byte) error
	Delete(keys ...string) (int, error)
	List(o store.ObjectListOptions) ([]store.ObjectEntry, error)
	Rollback()
	Commit() error
}

// Operator is the part of the stores an operator reaches through the admin
// API: per-sandbox usage and quotas, purges and checks.
type Operator interface {
	// Purge deletes everything kept under a sandbox's name (state, its
	// scope of per-sandbox spaces and buckets, the objects it owns), or
	// returns store.ErrNothingToPurge when there is nothing.
	Purge(sandbox string) error
	// Check verifies the engine's consistency and its usage accounting.
	Check() error
	// Stats counts what the engine holds.
	Stats() (store.Stats, error)
	// Usage is what the writes charged to a sandbox occupy now.
	Usage(sandbox string) (store.Amounts, error)
	// Quota is a sandbox's quotas, defaults with its overrides.
	Quota(sandbox string) (store.Amounts, error)
	// SetQuota replaces a sandbox's overrides (store.QuotaFields); nil
	// removes them.
	SetQuota(sandbox string, overrides map[string]int64) error
}
