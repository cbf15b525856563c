package backend

import (
	"github.com/interceptd/interceptd/store"
)

// Bolt returns db, the embedded bbolt store, as Stores. The KV handles are
// db's own (*store.KV); blob buckets and objects are wrapped only where
// package store returns its concrete types (Open, Storage, Begin). Each
// wrapper is one pointer, so putting it in an interface allocates nothing.
func Bolt(db *store.DB) Stores { return bolt{db} }

type bolt struct{ db *store.DB }

func (b bolt) Keys(kind, namespace, scope string, l store.Limits) KV {
	return b.db.Keys(kind, namespace, scope, l)
}

func (b bolt) Blobs(bucket, scope string, l store.Limits) Blobs {
	return boltBlobs{b.db.Blobs(bucket, scope, l)}
}

func (b bolt) Objects(class string) Objects { return boltObjects{b.db.Objects(class)} }

type boltBlobs struct{ *store.Blobs }

// Open implements Blobs.
func (b boltBlobs) Open(key string) (Object, error) {
	o, err := b.Blobs.Open(key)
	if err != nil {
		return nil, err // not a nil *store.Object in a non-nil Object
	}
	return boltObject{o}, nil
}

type boltObject struct{ *store.Object }

// Info implements Object.
func (o boltObject) Info() *store.ObjectInfo { return &o.Object.Info }

type boltObjects struct{ *store.Objects }

// Storage implements Objects.
func (o boltObjects) Storage(id string) ObjectStorage { return boltStorage{o.Objects.Storage(id)} }

type boltStorage struct{ *store.ObjectStorage }

// Begin implements ObjectStorage.
func (s boltStorage) Begin() ObjectTxn { return s.ObjectStorage.Begin() }

// The bbolt store keeps the contract (checked by store/storetest in
// package store's tests).
var (
	_ Stores        = bolt{}
	_ KV            = (*store.KV)(nil)
	_ Blobs         = boltBlobs{}
	_ Object        = boltObject{}
	_ Objects       = boltObjects{}
	_ ObjectStorage = boltStorage{}
	_ ObjectTxn     = (*store.ObjectTxn)(nil)
	_ Operator      = (*store.DB)(nil)
)
