package store

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unsafe"

	bolt "go.etcd.io/bbolt"
)

// KindBlob is the metric kind of blob operations.
const KindBlob = "blob"

// Blob chunk-set states in the blob_gc bucket.
const (
	gcPending = "p" // an upload in progress: its chunks are not an object yet
	gcGarbage = "g" // replaced, deleted or abandoned: reclaim when unread
)

// A pending entry is "p", the bytes charged so far (8, big endian) and the
// owner; a bare "p" (an upload of an earlier build) is charged to no one.
func pendingValue(charged int64, owner string) []byte {
	b := make([]byte, 9+len(owner))
	b[0] = gcPending[0]
	binary.BigEndian.PutUint64(b[1:9], uint64(charged))
	copy(b[9:], owner)
	return b
}

func isPending(v []byte) bool { return len(v) > 0 && v[0] == gcPending[0] }

func pendingCharge(v []byte) (charged int64, owner string) {
	if len(v) < 9 {
		return 0, ""
	}
	return int64(binary.BigEndian.Uint64(v[1:9])), string(v[9:])
}

// abandon turns an upload in progress into garbage and gives its owner the
// bytes it was charged back.
func (db *DB) abandon(tx *bolt.Tx, id []byte) error {
	gc := tx.Bucket(bucketBlobGC)
	if v := gc.Get(id); isPending(v) {
		charged, owner := pendingCharge(v)
		d := usageDelta{}
		d.add(owner, KindBlob, -charged, 0)
		if err := db.release(tx, d, nil, nil); err != nil {
			return err
		}
	}
	return gc.Put(id, []byte(gcGarbage))
}

// Blobs is one blob bucket in one scope. Objects are streamed in and out in
// chunks and never held whole in memory. An upload becomes visible in one
// commit that also retires the object it replaces, so readers see the old
// object or the new one, never a mix; a replaced object's chunks are
// reclaimed once no reader has it open.
type Blobs struct {
	db     *DB
	path   [][]byte
	limits Limits
}

// Blobs returns a blob bucket in a scope (ScopeShared or SandboxScope).
func (db *DB) Blobs(bucket, scope string, l Limits) *Blobs {
	if l.MaxKeyBytes == 0 {
		l.MaxKeyBytes = db.opts.Limits.MaxKeyBytes
	}
	if l.MaxObjectBytes == 0 {
		l.MaxObjectBytes = db.opts.Limits.MaxObjectBytes
	}
	return &Blobs{db: db, path: [][]byte{[]byte(bucket), []byte(scope)}, limits: l}
}

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Key  string `json:"key"`
	Size int64  `json:"size"`
	// ETag is the hex MD5 of the content, without quotes.
	ETag     string    `json:"etag"`
	Uploaded time.Time `json:"uploaded"`
	// HTTP holds the stored representation headers (Content-Type, …).
	HTTP map[string]string `json:"http,omitempty"`
	// Custom holds user metadata.
	Custom    map[string]string `json:"custom,omitempty"`
	Upload    string            `json:"upload"`
	ChunkSize int               `json:"chunk_size"`
	// Owner is the sandbox charged for the object ("" for an operator's).
	Owner string `json:"owner,omitempty"`
}

// charge is what an object occupies for its owner's quota: key, content
// and stored headers.
func (oi *ObjectInfo) charge() int64 {
	n := int64(len(oi.Key)) + oi.Size
	for _, m := range []map[string]string{oi.HTTP, oi.Custom} {
		for k, v := range m {
			n += int64(len(k) + len(v))
		}
	}
	return n
}

// PutOptions shape an upload.
type PutOptions struct {
	HTTP   map[string]string
	Custom map[string]string
	// ContentMD5, when set, must equal the MD5 of the content.
	ContentMD5 []byte
	// Size is the announced length, or -1 when unknown (chunked upload).
	Size int64
	// Precondition, when set, is called with the current object (nil when
	// there is none): once before the upload is read, to fail fast, and
	// again inside the commit that makes the upload visible, so that a
	// writer that replaced the object meanwhile is seen. An error refuses
	// the write and is returned as it is; wrap ErrPreconditionFailed. It
	// must only compare: it runs inside a write transaction, and may run
	// more than once.
	Precondition func(cur *ObjectInfo) error
	// Owner is the sandbox charged for the upload and the object ("" for
	// none): the upload is refused as soon as it would pass its quota.
	Owner string
}

func (b *Blobs) bucket(tx *bolt.Tx) *bolt.Bucket { return nested(tx, bucketBlob, b.path) }

func (b *Blobs) bucketRW(tx *bolt.Tx) (*bolt.Bucket, error) { return nestedRW(tx, bucketBlob, b.path) }

func (b *Blobs) info(tx *bolt.Tx, key string) (*ObjectInfo, error) {
	bk := b.bucket(tx)
	if bk == nil {
		return nil, nil
	}
	raw := bk.Get([]byte(key))
	if raw == nil {
		return nil, nil
	}
	var oi ObjectInfo
	if err := json.Unmarshal(raw, &oi); err != nil {
		return nil, fmt.Errorf("object %q: %w", key, errCorrupt)
	}
	return &oi, nil
}

func (o PutOptions) check(cur *ObjectInfo) error {
	if o.Precondition == nil {
		return nil
	}
	return o.Precondition(cur)
}

func newUploadID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func chunkKey(i int) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], uint64(i))
	return k[:]
}

var chunkPool sync.Map // chunk size → *sync.Pool

func getChunk(size int) []byte {
	p, _ := chunkPool.LoadOrStore(size, &sync.Pool{New: func() any { b := make([]byte, size); return &b }})
	return *p.(*sync.Pool).Get().(*[]byte)
}

func putChunk(b []byte) {
	if p, ok := chunkPool.Load(cap(b)); ok {
		b = b[:cap(b)]
		p.(*sync.Pool).Put(&b)
	}
}

// Put streams r into the object key. It returns once the object is durable
// and visible. If r fails or ends early, or a check fails, nothing is left.
func (b *Blobs) Put(key string, r io.Reader, o PutOptions) (info ObjectInfo, err error) {
	defer func(t time.Time) { b.db.observe(KindBlob, "put", t, err) }(time.Now())
	if err := checkKey(key, b.limits.MaxKeyBytes); err != nil {
		return info, err
	}
	if o.Size > b.limits.MaxObjectBytes {
		return info, fmt.Errorf("%w: %d bytes, limit %d", ErrValueTooLarge, o.Size, b.limits.MaxObjectBytes)
	}
	// Fail fast on a condition that already fails, before any upload.
	if o.Precondition != nil {
		var cur *ObjectInfo
		if err := b.db.bolt.View(func(tx *bolt.Tx) (err error) { cur, err = b.info(tx, key); return }); err != nil {
			return info, mapBoltErr(err)
		}
		if err := o.check(cur); err != nil {
			return info, err
		}
	}

	if err := b.db.checkSpace(max(o.Size, 0)); err != nil {
		return info, err
	}
	if o.Owner != "" {
		// Refuse an upload that cannot fit (its announced length, or a new
		// object over the objects quota) before reading any of it.
		var qerr *QuotaError
		err := b.db.bolt.View(func(tx *bolt.Tx) error {
			cur, err := b.info(tx, key)
			if err != nil {
				return err
			}
			var keys int64
			if cur == nil || cur.Owner != o.Owner {
				keys = 1
			}
			qerr = b.db.wouldCharge(tx, o.Owner, KindBlob, max(o.Size, 0), keys)
			return nil
		})
		if err != nil {
			return info, mapBoltErr(err)
		}
		if qerr != nil {
			return info, qerr
		}
	}

	id := newUploadID()
	cs := b.db.opts.ChunkSize
	if err := b.db.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBlobGC).Put([]byte(id), pendingValue(0, o.Owner))
	}); err != nil {
		return info, err
	}
	committed := false
	defer func() {
		if !committed {
			b.db.update(func(tx *bolt.Tx) error { return b.db.abandon(tx, []byte(id)) })
			b.db.kickGC()
		}
	}()

	sum := md5.New()
	buf := getChunk(cs)
	defer putChunk(buf)
	var size int64
	for i := 0; ; i++ {
		n, rerr := fill(r, buf)
		if n > 0 {
			size += int64(n)
			if size > b.limits.MaxObjectBytes {
				return info, fmt.Errorf("%w: over %d bytes", ErrValueTooLarge, b.limits.MaxObjectBytes)
			}
			if err := b.db.checkSpace(int64(n)); err != nil {
				return info, err
			}
			sum.Write(buf[:n])
			chunk := buf[:n]
			var qerr *QuotaError
			if err := b.db.update(func(tx *bolt.Tx) error {
				// The chunk is charged with the upload's entry, in the same
				// commit: an upload is refused as it crosses the quota.
				gc := tx.Bucket(bucketBlobGC)
				charged, owner := pendingCharge(gc.Get([]byte(id)))
				d := usageDelta{}
				d.add(owner, KindBlob, int64(len(chunk)), 0)
				var err error
				if qerr, err = b.db.charge(tx, d); err != nil || qerr != nil {
					return err
				}
				if err := gc.Put([]byte(id), pendingValue(charged+int64(len(chunk)), owner)); err != nil {
					return err
				}
				cb, err := tx.Bucket(bucketBlobChunks).CreateBucketIfNotExists([]byte(id))
				if err != nil {
					return err
				}
				return cb.Put(chunkKey(i), chunk)
			}); err != nil {
				return info, err
			}
			if qerr != nil {
				return info, qerr
			}
			b.db.countBytes(KindBlob, "written", n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return info, fmt.Errorf("reading upload: %w", rerr)
		}
	}
	if o.Size >= 0 && size != o.Size {
		return info, fmt.Errorf("%w: got %d of %d bytes", ErrIncomplete, size, o.Size)
	}
	digest := sum.Sum(nil)
	if o.ContentMD5 != nil && !bytes.Equal(o.ContentMD5, digest) {
		return info, ErrBadDigest
	}
	info = ObjectInfo{
		Key: key, Size: size, ETag: hex.EncodeToString(digest), Uploaded: b.db.opts.Now().UTC().Truncate(time.Second),
		HTTP: o.HTTP, Custom: o.Custom, Upload: id, ChunkSize: cs, Owner: o.Owner,
	}
	raw, _ := json.Marshal(info)
	var condErr error
	var qerr *QuotaError
	err = b.db.update(func(tx *bolt.Tx) error {
		condErr, qerr = nil, nil
		cur, err := b.info(tx, key)
		if err != nil {
			return err
		}
		if condErr = o.check(cur); condErr != nil {
			return nil
		}
		bk, err := b.bucketRW(tx)
		if err != nil {
			return err
		}
		gc := tx.Bucket(bucketBlobGC)
		// The upload's charge becomes the object's (its key and headers
		// added); the object it replaces is its owner's no more.
		charged, _ := pendingCharge(gc.Get([]byte(id)))
		d := usageDelta{}
		d.add(o.Owner, KindBlob, info.charge()-charged, 1)
		if cur != nil {
			d.add(cur.Owner, KindBlob, -cur.charge(), -1)
		}
		if qerr, err = b.db.charge(tx, d); err != nil || qerr != nil {
			return err
		}
		if cur != nil {
			if err := gc.Put([]byte(cur.Upload), []byte(gcGarbage)); err != nil {
				return err
			}
		}
		if err := gc.Delete([]byte(id)); err != nil {
			return err
		}
		return bk.Put([]byte(key), raw)
	})
	if err == nil && condErr != nil {
		err = condErr
	}
	if err == nil && qerr != nil {
		err = qerr
	}
	if err != nil {
		return ObjectInfo{}, err
	}
	committed = true
	b.db.kickGC()
	return info, nil
}

// Head returns an object's info, or ErrNotFound.
func (b *Blobs) Head(key string) (oi ObjectInfo, err error) {
	defer func(t time.Time) { b.db.observe(KindBlob, "head", t, err) }(time.Now())
	if err := checkKey(key, b.limits.MaxKeyBytes); err != nil {
		return oi, err
	}
	err = b.db.bolt.View(func(tx *bolt.Tx) error {
		p, err := b.info(tx, key)
		if err == nil && p == nil {
			err = ErrNotFound
		}
		if p != nil {
			oi = *p
		}
		return err
	})
	return oi, mapBoltErr(err)
}

// Object is an open object: an io.ReadSeeker over its content that reads one
// chunk at a time in short read transactions. Close it.
type Object struct {
	Info ObjectInfo
	b    *Blobs
	off  int64
	buf  []byte
	idx  int // chunk held in buf, or -1
	once sync.Once
}

// Open opens the object key for reading, or returns ErrNotFound. The content
// stays readable until Close even if the object is replaced meanwhile.
func (b *Blobs) Open(key string) (obj *Object, err error) {
	defer func(t time.Time) { b.db.observe(KindBlob, "get", t, err) }(time.Now())
	if err := checkKey(key, b.limits.MaxKeyBytes); err != nil {
		return nil, err
	}
	b.db.refMu.Lock()
	defer b.db.refMu.Unlock()
	var oi *ObjectInfo
	if err := b.db.bolt.View(func(tx *bolt.Tx) (err error) { oi, err = b.info(tx, key); return }); err != nil {
		return nil, mapBoltErr(err)
	}
	if oi == nil {
		return nil, ErrNotFound
	}
	b.db.refs[oi.Upload]++
	return &Object{Info: *oi, b: b, idx: -1}, nil
}

// Read implements io.Reader.
func (o *Object) Read(p []byte) (int, error) {
	if o.off >= o.Info.Size {
		return 0, io.EOF
	}
	cs := int64(o.Info.ChunkSize)
	idx := int(o.off / cs)
	if idx != o.idx {
		if o.buf == nil {
			o.buf = getChunk(o.Info.ChunkSize)
		}
		var n int
		err := o.b.db.bolt.View(func(tx *bolt.Tx) error {
			cb := tx.Bucket(bucketBlobChunks).Bucket([]byte(o.Info.Upload))
			if cb == nil {
				return fmt.Errorf("object %q: chunks missing: %w", o.Info.Key, errCorrupt)
			}
			v := cb.Get(chunkKey(idx))
			if v == nil {
				return fmt.Errorf("object %q: chunk %d missing: %w", o.Info.Key, idx, errCorrupt)
			}
			// Read the chunk from the file, not through bbolt's mapping:
			// pages touched through the mapping stay in the daemon's
			// resident memory, and streaming a large object would map all
			// of it. The bytes are the same (bbolt writes the file with
			// pwrite, and this transaction keeps the pages from reuse).
			if len(v) > cap(o.buf) {
				return fmt.Errorf("object %q: chunk %d of %d bytes, chunk size %d: %w", o.Info.Key, idx, len(v), cap(o.buf), errCorrupt)
			}
			lo := o.b.db.bolt.Info().Data
			off := int64(uintptr(unsafe.Pointer(unsafe.SliceData(v)))) - int64(lo)
			if len(v) < pageSize || off < 0 || off+int64(len(v)) > tx.Size() {
				// Small, or not in the mapping (an inline bucket's value
				// bbolt has copied): nothing to keep unmapped.
				n = copy(o.buf[:len(v)], v)
				return nil
			}
			var err error
			if n, err = o.b.db.file.ReadAt(o.buf[:len(v)], off); err != nil {
				return fmt.Errorf("object %q: reading chunk %d: %w", o.Info.Key, idx, err)
			}
			// Looking the chunk up touched the pages of its leaf's header;
			// let those go too.
			dropMapped(v, 2*len(v), lo, lo+uintptr(tx.Size()))
			return nil
		})
		if err != nil {
			return 0, mapBoltErr(err)
		}
		o.buf, o.idx = o.buf[:n], idx
	}
	n := copy(p, o.buf[o.off-int64(idx)*cs:])
	o.off += int64(n)
	o.b.db.countBytes(KindBlob, "read", n)
	return n, nil
}

// Seek implements io.Seeker.
func (o *Object) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += o.off
	case io.SeekEnd:
		offset += o.Info.Size
	default:
		return 0, errors.New("seek: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("seek: negative position")
	}
	o.off = offset
	return offset, nil
}

// Close releases the object; its chunks may then be reclaimed if replaced.
func (o *Object) Close() error {
	o.once.Do(func() {
		if o.buf != nil {
			putChunk(o.buf)
			o.buf = nil
		}
		db := o.b.db
		db.refMu.Lock()
		if db.refs[o.Info.Upload]--; db.refs[o.Info.Upload] <= 0 {
			delete(db.refs, o.Info.Upload)
		}
		db.refMu.Unlock()
		db.kickGC()
	})
	return nil
}

// Delete removes key; an absent key is not an error.
func (b *Blobs) Delete(key string) error { return b.DeleteIf(key, nil) }

// DeleteIf removes key if precondition, called with the current object (nil
// when there is none) inside the commit that deletes it, returns nil; its
// error is returned as it is and nothing is deleted. A nil precondition
// always holds; an absent key is not an error.
func (b *Blobs) DeleteIf(key string, precondition func(cur *ObjectInfo) error) (err error) {
	defer func(t time.Time) { b.db.observe(KindBlob, "delete", t, err) }(time.Now())
	if err := checkKey(key, b.limits.MaxKeyBytes); err != nil {
		return err
	}
	var condErr error
	err = b.db.update(func(tx *bolt.Tx) error {
		cur, err := b.info(tx, key)
		if err != nil {
			return err
		}
		if precondition != nil {
			// Reported after the commit: an error from this function
			// would fail the other writes sharing the commit.
			if condErr = precondition(cur); condErr != nil {
				return nil
			}
		}
		if cur == nil {
			return nil
		}
		d := usageDelta{}
		d.add(cur.Owner, KindBlob, -cur.charge(), -1)
		if err := b.db.release(tx, d, nil, nil); err != nil {
			return err
		}
		if err := tx.Bucket(bucketBlobGC).Put([]byte(cur.Upload), []byte(gcGarbage)); err != nil {
			return err
		}
		return b.bucket(tx).Delete([]byte(key))
	})
	b.db.kickGC()
	if err == nil {
		err = condErr
	}
	return err
}

// BlobListOptions select a page of objects.
type BlobListOptions struct {
	Prefix    string
	Delimiter string
	Cursor    string
	// Limit bounds objects plus delimited prefixes: 1 to MaxListLimit.
	Limit int
}

// BlobList is one page of a listing in byte order.
type BlobList struct {
	Objects           []ObjectInfo
	DelimitedPrefixes []string
	Truncated         bool
	Cursor            string
}

// successor returns the smallest key greater than every key with prefix p,
// or nil when there is none.
func successor(p []byte) []byte {
	s := bytes.Clone(p)
	for len(s) > 0 {
		if s[len(s)-1] < 0xff {
			s[len(s)-1]++
			return s
		}
		s = s[:len(s)-1]
	}
	return nil
}

// List returns a page of objects (and, with a delimiter, the common prefixes
// up to the delimiter) in byte order.
func (b *Blobs) List(o BlobListOptions) (res BlobList, err error) {
	defer func(t time.Time) { b.db.observe(KindBlob, "list", t, err) }(time.Now())
	if o.Limit <= 0 || o.Limit > MaxListLimit {
		o.Limit = MaxListLimit
	}
	var seek []byte
	afterKey := ""
	if o.Cursor != "" {
		raw, derr := base64.RawURLEncoding.DecodeString(o.Cursor)
		switch {
		case derr == nil && bytes.HasPrefix(raw, []byte("k1:")):
			afterKey = string(raw[3:])
		case derr == nil && bytes.HasPrefix(raw, []byte("p1:")):
			if seek = successor(raw[3:]); seek == nil {
				return BlobList{Objects: []ObjectInfo{}, DelimitedPrefixes: []string{}}, nil
			}
		default:
			return res, ErrInvalidCursor
		}
	}
	res.Objects, res.DelimitedPrefixes = []ObjectInfo{}, []string{}
	last := ""
	err = b.db.bolt.View(func(tx *bolt.Tx) error {
		bk := b.bucket(tx)
		if bk == nil {
			return nil
		}
		c := bk.Cursor()
		var k, v []byte
		switch {
		case seek != nil && bytes.Compare(seek, []byte(o.Prefix)) > 0:
			k, v = c.Seek(seek)
		default:
			k, v = startAfter(c, o.Prefix, afterKey)
		}
		for k != nil && bytes.HasPrefix(k, []byte(o.Prefix)) {
			n := len(res.Objects) + len(res.DelimitedPrefixes)
			if o.Delimiter != "" {
				if i := strings.Index(string(k[len(o.Prefix):]), o.Delimiter); i >= 0 {
					cp := string(k[:len(o.Prefix)+i+len(o.Delimiter)])
					if n == o.Limit {
						res.Truncated = true
						return nil
					}
					res.DelimitedPrefixes = append(res.DelimitedPrefixes, cp)
					last = "p1:" + cp
					next := successor([]byte(cp))
					if next == nil {
						return nil
					}
					k, v = c.Seek(next)
					continue
				}
			}
			if n == o.Limit {
				res.Truncated = true
				return nil
			}
			var oi ObjectInfo
			if err := json.Unmarshal(v, &oi); err != nil {
				return fmt.Errorf("object %q: %w", k, errCorrupt)
			}
			res.Objects = append(res.Objects, oi)
			last = "k1:" + string(k)
			k, v = c.Next()
		}
		return nil
	})
	if res.Truncated {
		res.Cursor = base64.RawURLEncoding.EncodeToString([]byte(last))
	}
	return res, mapBoltErr(err)
}

func (db *DB) kickGC() {
	select {
	case db.gc <- struct{}{}:
	default:
	}
}

// collector reclaims the chunks of replaced, deleted and abandoned uploads
// that no reader has open.
func (db *DB) collector() {
	defer db.stopped.Done()
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-db.stop:
			return
		case <-db.gc:
		case <-t.C:
		}
		db.collect()
	}
}

// collect reclaims what it can now and returns how many chunk sets it freed.
func (db *DB) collect() int {
	var ids [][]byte
	db.refMu.Lock()
	db.bolt.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBlobGC).ForEach(func(k, v []byte) error {
			if string(v) == gcGarbage && db.refs[string(k)] == 0 {
				ids = append(ids, bytes.Clone(k))
			}
			return nil
		})
	})
	db.refMu.Unlock()
	// A garbage upload is referenced by no object, so no new reader can
	// open it: deleting it after releasing refMu is safe.
	for _, id := range ids {
		db.update(func(tx *bolt.Tx) error {
			if err := tx.Bucket(bucketBlobChunks).DeleteBucket(id); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
				return err
			}
			return tx.Bucket(bucketBlobGC).Delete(id)
		})
	}
	return len(ids)
}

// fill reads into buf until it is full or r fails; io.EOF means a clean end.
// (io.ReadFull would turn a client's abort into the same error as a short
// final chunk.)
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
