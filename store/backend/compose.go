package backend

// Compose makes one Stores of engines chosen per kind: KV and state spaces
// from kv (bbolt or etcd), blob buckets from blobs (bbolt or S3), Durable
// Objects from objects (bbolt, local to the host). Handlers and bindings
// see one Stores whatever the mix.
func Compose(kv KVSpaces, blobs BlobBuckets, objects ObjectClasses) Stores {
	return composed{kv, blobs, objects}
}

type composed struct {
	KVSpaces
	BlobBuckets
	ObjectClasses
}
