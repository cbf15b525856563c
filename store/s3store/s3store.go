// Package s3store keeps blob buckets in an S3-compatible object store (AWS
// S3, Ceph RGW, SeaweedFS, MinIO, …), so that every host of a fleet reads
// the blobs any of them wrote. It implements backend.BlobBuckets; KV, state
// and Durable Objects stay with another engine (backend.Compose).
//
// Layout: the object key of a blob is
//
//	<prefix><escaped bucket>/<escaped scope>/<key>
//
// with bucket and scope path-escaped, so that neither can hold a "/" that
// would let one bucket's listing reach into another's (and a bucket's
// leading dot escaped: names beginning with one are the store's own). The blob's ETag (the
// hex MD5 of its content, which S3 gives only for single-part uploads),
// its owner, HTTP headers and custom metadata travel in one user-metadata
// header, x-amz-meta-interceptd, as base64url JSON, so that nothing depends
// on how a server folds the case of metadata names.
//
// Blobs are charged to their owners in a ledger kept in the engine that
// keeps the rest of the accounting (Account, usage.go); deletes carry
// If-Match where the server honours it (conddelete.go).
//
// What S3 cannot keep of the contract, and what this package does then, is
// in docs/stores.md ("S3 blobs").
package s3store

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
)

// MinPartSize is the smallest part S3 takes in a multipart upload (but the
// last one).
const MinPartSize = 5 << 20

// Options reach one bucket of an object store.
type Options struct {
	// Endpoint is host:port, or an http(s)://host:port URL.
	Endpoint string
	Bucket   string
	Region   string
	// Prefix is put before every object name.
	Prefix string
	// PathStyle addresses the bucket in the path rather than the host.
	PathStyle bool
	AccessKey string
	SecretKey string
	// CAFile verifies the endpoint against this bundle instead of the
	// system roots.
	CAFile string
	// Insecure speaks plain http.
	Insecure bool
	// RequestTimeout bounds every call, and each part or range of an
	// upload or download. Default 30s.
	RequestTimeout time.Duration
	// PartSize is the size of the parts of a multipart upload and of the
	// ranges a download asks for; an upload up to it is one PUT, held in
	// memory whole (that is what bounds the memory of one upload).
	// Default 8 MiB; at least MinPartSize.
	PartSize int
	// Metrics, when set, counts the calls (NewMetrics).
	Metrics *Metrics
}

// Store is a connection to one bucket. It is safe for concurrent use.
type Store struct {
	c       *minio.Client
	core    minio.Core
	copier  minio.Core // for the copy of a large upload (New)
	bucket  string
	prefix  string
	timeout time.Duration
	part    int
	m       *Metrics
	where   string // endpoint/bucket, for errors

	// condDelete is what the probe found of conditional DELETEs
	// (condUnknown until one ran; conddelete.go).
	condDelete atomic.Int32
	probeMu    sync.Mutex

	acct *accounting // nil: blobs are charged to no one (Account)
}

// New makes a Store; it does not reach the server (Check does).
func New(o Options) (*Store, error) {
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 30 * time.Second
	}
	if o.PartSize == 0 {
		o.PartSize = 8 << 20
	}
	if o.PartSize < MinPartSize {
		return nil, fmt.Errorf("s3 part size %d: below the %d bytes S3 takes", o.PartSize, MinPartSize)
	}
	host, secure := o.Endpoint, !o.Insecure
	if strings.Contains(o.Endpoint, "://") {
		u, err := url.Parse(o.Endpoint)
		if err != nil {
			return nil, fmt.Errorf("s3 endpoint %q: %w", o.Endpoint, err)
		}
		host, secure = u.Host, u.Scheme == "https"
	}
	tr := &http.Transport{
		Proxy:                 nil, // the object store is reached directly, never through the host's proxy
		DialContext:           (&net.Dialer{Timeout: o.RequestTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   o.RequestTimeout,
		ResponseHeaderTimeout: o.RequestTimeout,
		// minio-go asks for identity itself; a transparent gzip would
		// make Content-Length and ranges lie.
		DisableCompression: true,
	}
	// Conditional DELETEs carry If-Match, which minio-go's RemoveObject
	// cannot set: the transport adds it from the request's context.
	rt := ctxHeaders{tr}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("s3 ca file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("s3 ca file %s: no PEM certificate in it", o.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	lookup := minio.BucketLookupDNS
	if o.PathStyle {
		lookup = minio.BucketLookupPath
	}
	c, err := minio.New(host, &minio.Options{
		Creds:        credentials.NewStaticV4(o.AccessKey, o.SecretKey, ""),
		Secure:       secure,
		Region:       o.Region,
		BucketLookup: lookup,
		Transport:    rt,
		// Retries would multiply the timeout a handler waits: one try per
		// call, and the caller (a client, a worker) retries if it wants.
		MaxRetries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 client for %s: %w", host, err)
	}
	// The copy that puts a large upload in place answers only once the
	// store has copied it all (SeaweedFS, MinIO): a client of its own
	// whose transport does not cut a slow answer, bounded by the copy's
	// context (copyTimeout) instead.
	slow := tr.Clone()
	slow.ResponseHeaderTimeout = 0
	cc, err := minio.New(host, &minio.Options{
		Creds: credentials.NewStaticV4(o.AccessKey, o.SecretKey, ""), Secure: secure, Region: o.Region,
		BucketLookup: lookup, Transport: slow, MaxRetries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 client for %s: %w", host, err)
	}
	return &Store{c: c, core: minio.Core{Client: c}, copier: minio.Core{Client: cc}, bucket: o.Bucket, prefix: o.Prefix,
		timeout: o.RequestTimeout, part: o.PartSize, m: o.Metrics, where: host + "/" + o.Bucket}, nil
}

// ctx bounds one call.
func (s *Store) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.timeout)
}

// Check reaches the bucket, writes, reads and deletes a probe object
// under the prefix, and probes conditional deletes: what `interceptd
// store --check` runs.
func (s *Store) Check() error {
	ctx, cancel := s.ctx()
	defer cancel()
	ok, err := s.c.BucketExists(ctx, s.bucket)
	if err != nil {
		return s.wrap("check", err)
	}
	if !ok {
		return fmt.Errorf("s3 bucket %s does not exist (interceptd never creates it)", s.where)
	}
	key := s.prefix + ".check/" + randomID()
	probe := []byte("interceptd store --check " + time.Now().UTC().Format(time.RFC3339))
	if _, err := s.c.PutObject(ctx, s.bucket, key, bytes.NewReader(probe), int64(len(probe)), minio.PutObjectOptions{DisableMultipart: true}); err != nil {
		return fmt.Errorf("writing a probe object: %w", s.wrap("check", err))
	}
	body, _, _, err := s.core.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return fmt.Errorf("reading the probe object back: %w", s.wrap("check", err))
	}
	got, err := io.ReadAll(body)
	body.Close()
	if err != nil || !bytes.Equal(got, probe) {
		return fmt.Errorf("reading the probe object back: got %d bytes, %v", len(got), err)
	}
	if err := s.c.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("deleting the probe object: %w", s.wrap("check", err))
	}
	// Learn (once) whether DeleteIf can send its condition; a server
	// that ignores it is logged, not an error.
	if _, err := s.probeConditionalDelete(); err != nil {
		return err
	}
	return nil
}

// Where names the bucket (endpoint/bucket) for messages.
func (s *Store) Where() string { return s.where }

func randomID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Blobs implements backend.BlobBuckets.
func (s *Store) Blobs(bucket, scope string, l store.Limits) backend.Blobs {
	d := store.Limits{}.WithDefaults()
	if l.MaxKeyBytes == 0 {
		l.MaxKeyBytes = d.MaxKeyBytes
	}
	if l.MaxObjectBytes == 0 {
		l.MaxObjectBytes = d.MaxObjectBytes
	}
	return &Blobs{s: s, base: s.prefix + bucketDir(bucket) + "/" + url.PathEscape(scope) + "/", limits: l}
}

// bucketDir is a bucket's part of its object names: path-escaped, and a
// leading dot escaped too (%2E), since names under the prefix that begin
// with a dot are the store's own (.staging/, .check/), which purges and
// recounts pass over.
func bucketDir(bucket string) string {
	e := url.PathEscape(bucket)
	if strings.HasPrefix(e, ".") {
		e = "%2E" + e[1:]
	}
	return e
}

// Blobs is one bucket in one scope.
type Blobs struct {
	s      *Store
	base   string // object-name prefix of the bucket's keys
	limits store.Limits
}

func (b *Blobs) name(key string) string { return b.base + key }

func (b *Blobs) checkKey(key string) error {
	if key == "" || !utf8.ValidString(key) {
		return store.ErrInvalidKey
	}
	if len(key) > b.limits.MaxKeyBytes {
		return fmt.Errorf("%w: %d bytes, limit %d", store.ErrKeyTooLarge, len(key), b.limits.MaxKeyBytes)
	}
	return nil
}

// meta is what x-amz-meta-interceptd holds.
type meta struct {
	MD5    string            `json:"md5"`
	Owner  string            `json:"owner,omitempty"`
	HTTP   map[string]string `json:"http,omitempty"`
	Custom map[string]string `json:"custom,omitempty"`
}

const metaKey = "Interceptd"

func (m meta) header() string {
	j, _ := json.Marshal(m)
	return base64.RawURLEncoding.EncodeToString(j)
}

// info turns what S3 says of an object into the blob's info. An object
// without interceptd's metadata (written by another tool) gets the S3 ETag
// when it is an MD5, and is otherwise shown with it as it is.
func (b *Blobs) info(key string, oi minio.ObjectInfo) *store.ObjectInfo {
	out := &store.ObjectInfo{Key: key, Size: oi.Size, ETag: strings.Trim(oi.ETag, `"`), Uploaded: oi.LastModified.UTC()}
	raw := oi.UserMetadata[metaKey]
	if raw == "" {
		raw = oi.Metadata.Get("X-Amz-Meta-" + metaKey)
	}
	if raw != "" {
		var m meta
		if j, err := base64.RawURLEncoding.DecodeString(raw); err == nil && json.Unmarshal(j, &m) == nil {
			out.ETag, out.Owner, out.HTTP, out.Custom = m.MD5, m.Owner, m.HTTP, m.Custom
		}
	}
	return out
}

// isNotFound tells an absent object (or a 404 of any kind) from a failure.
func isNotFound(err error) bool {
	r := minio.ToErrorResponse(err)
	return r.StatusCode == http.StatusNotFound || r.Code == "NoSuchKey"
}

func isPreconditionFailed(err error) bool {
	r := minio.ToErrorResponse(err)
	return r.StatusCode == http.StatusPreconditionFailed || r.Code == "PreconditionFailed"
}

// wrap turns a failure to reach the store (a refused connection, a
// timeout, a 5xx) into store.ErrUnavailable, naming the store; an answer
// the store gave (403, 400…) stays an error of its own.
func (s *Store) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	r := minio.ToErrorResponse(err)
	var ne net.Error
	switch {
	case r.StatusCode >= 500, r.Code == "SlowDown", r.Code == "ServiceUnavailable",
		errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne), errors.Is(err, io.ErrUnexpectedEOF),
		r.StatusCode == 0 && r.Code == "":
		return fmt.Errorf("%w: s3 %s at %s: %v", store.ErrUnavailable, op, s.where, err)
	}
	return fmt.Errorf("s3 %s at %s: %w", op, s.where, err)
}

// Head implements backend.Blobs.
func (b *Blobs) Head(key string) (oi store.ObjectInfo, err error) {
	defer b.s.m.observe("head", time.Now(), &err)
	if err := b.checkKey(key); err != nil {
		return oi, err
	}
	cur, _, err := b.head(key)
	if err != nil {
		return oi, err
	}
	if cur == nil {
		return oi, store.ErrNotFound
	}
	return *cur, nil
}

// head returns the object's info and its S3 ETag, or nil for none.
func (b *Blobs) head(key string) (*store.ObjectInfo, string, error) {
	ctx, cancel := b.s.ctx()
	defer cancel()
	oi, err := b.s.c.StatObject(ctx, b.s.bucket, b.name(key), minio.StatObjectOptions{})
	if isNotFound(err) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", b.s.wrap("head", err)
	}
	return b.info(key, oi), oi.ETag, nil
}

// errPrecondition returns what the precondition says of the object now,
// after the store refused a conditional write: its own error when it
// refuses, else a plain ErrPreconditionFailed (the object changed and
// changed back, or the store refused for its own reasons).
func (b *Blobs) errPrecondition(key string, pre func(*store.ObjectInfo) error) error {
	if pre != nil {
		if cur, _, err := b.head(key); err == nil {
			if err := pre(cur); err != nil {
				return err
			}
		}
	}
	return fmt.Errorf("%w: the object changed during the upload", store.ErrPreconditionFailed)
}

// commitHeaders make the write that makes an upload visible conditional on
// the object the precondition approved: If-Match its S3 ETag, or
// If-None-Match * for none. Only with a precondition: a plain put
// replaces whatever is there.
func commitHeaders(pre func(*store.ObjectInfo) error, cur *store.ObjectInfo, s3etag string) map[string]string {
	if pre == nil {
		return nil
	}
	if cur == nil {
		return map[string]string{"If-None-Match": "*"}
	}
	return map[string]string{"If-Match": s3etag}
}

// upload is the body of a Put as it streams in: it counts, hashes and
// bounds what it reads.
type upload struct {
	r        io.Reader
	h        hash.Hash // MD5
	n, max   int64
	announce int64 // -1: unknown
	err      error
}

func (u *upload) Read(p []byte) (int, error) {
	if u.err != nil {
		return 0, u.err
	}
	n, err := u.r.Read(p)
	u.h.Write(p[:n])
	u.n += int64(n)
	if u.n > u.max {
		u.err = fmt.Errorf("%w: over %d bytes", store.ErrValueTooLarge, u.max)
		return 0, u.err
	}
	if u.announce >= 0 && u.n > u.announce {
		u.err = fmt.Errorf("%w: more than the %d bytes announced", store.ErrValueTooLarge, u.announce)
		return 0, u.err
	}
	if err != nil && err != io.EOF {
		u.err = err
	}
	return n, err
}

// Put implements backend.Blobs. An upload of up to PartSize bytes is read
// whole into one buffer and sent as one PUT, conditional on the object the
// precondition approved; a larger one is streamed as a multipart upload to
// a staging name and copied into place by the store (S3 sets metadata only
// when an upload starts, and the MD5 is known only at its end), the copy
// conditional in the same way. With accounting (Account), the owner's
// quota is reserved before any part is sent (the announced size, then
// part by part) and the commit is conditional on the object it replaces
// even without a precondition, so that the object given back to its owner
// is the one replaced.
func (b *Blobs) Put(key string, r io.Reader, o store.PutOptions) (info store.ObjectInfo, err error) {
	defer b.s.m.observe("put", time.Now(), &err)
	if err := b.checkKey(key); err != nil {
		return info, err
	}
	if o.Size > b.limits.MaxObjectBytes {
		return info, fmt.Errorf("%w: %d bytes, limit %d", store.ErrValueTooLarge, o.Size, b.limits.MaxObjectBytes)
	}
	h := b.s.acct.start(4 * b.s.timeout)
	// credit is what the object this upload replaces already charges its
	// owner when that is the uploader: the quota holds the change, as
	// bbolt's does, so an owner at its quota may still overwrite its own
	// objects. The commit takes it again for the object it replaces
	// (commit, below): this one may be gone by then.
	var credit store.Amount
	if o.Precondition != nil || (h != nil && o.Owner != "") {
		cur, _, err := b.head(key)
		if err != nil {
			return info, err
		}
		if o.Precondition != nil {
			if err := o.Precondition(cur); err != nil {
				return info, err
			}
		}
		if cur != nil && o.Owner != "" && cur.Owner == o.Owner {
			credit = store.Amount{Bytes: chargeOf(cur), Keys: 1}
		}
	}
	// The lease covers the calls between two renewals: a part, or the
	// head, commit and head of the end.
	settled := false
	defer func() {
		if !settled {
			give := h.reserved(o.Owner)
			h.end(map[string]store.Amount{o.Owner: {Bytes: -give.Bytes, Keys: -give.Keys}})
		}
	}()
	// reserveTo reserves the owner's quota for n bytes of content (and
	// the key, headers and object), renewing the lease when it is half
	// gone.
	reserveTo := func(n int64) error {
		if h == nil || o.Owner == "" {
			return nil
		}
		want := store.Amount{Bytes: charge(key, max(n, 0), o.HTTP, o.Custom) - credit.Bytes, Keys: 1 - credit.Keys}
		have := h.reserved(o.Owner)
		add := store.Amount{Bytes: max(want.Bytes-have.Bytes, 0), Keys: max(want.Keys-have.Keys, 0)}
		if add == (store.Amount{}) && !h.due() {
			return nil
		}
		return h.reserve(o.Owner, add)
	}
	if err := reserveTo(o.Size); err != nil {
		return info, err
	}
	up := &upload{r: r, h: md5.New(), max: b.limits.MaxObjectBytes, announce: o.Size}
	buf := getBuf(b.s.part)
	defer putBuf(buf)
	n, rerr := io.ReadFull(up, buf[:b.s.part])
	if rerr != nil && rerr != io.EOF && rerr != io.ErrUnexpectedEOF {
		return info, rerr
	}
	if err := reserveTo(up.n); err != nil {
		return info, err
	}
	small := rerr != nil // the body ended within one part
	var body io.Reader = bytes.NewReader(buf[:n])
	if !small {
		body = io.MultiReader(body, up)
	}
	// finish checks the whole body once it has ended: its length against
	// the announced one and its MD5 against Content-MD5.
	finish := func() (string, error) {
		// The body's own failure (a client gone mid-body reads as
		// io.ErrUnexpectedEOF), which io.ReadFull cannot tell from a
		// body that ended within a part.
		if up.err != nil {
			return "", up.err
		}
		if o.Size >= 0 && up.n < o.Size {
			return "", fmt.Errorf("%w: %d of %d bytes", store.ErrIncomplete, up.n, o.Size)
		}
		sum := up.h.Sum(nil)
		if o.ContentMD5 != nil && !bytes.Equal(sum, o.ContentMD5) {
			return "", store.ErrBadDigest
		}
		return hex.EncodeToString(sum), nil
	}
	m := meta{Owner: o.Owner, HTTP: o.HTTP, Custom: o.Custom}
	headers := func(md5hex string) map[string]string {
		m.MD5 = md5hex
		h := map[string]string{"X-Amz-Meta-" + metaKey: m.header()}
		if ct := o.HTTP["Content-Type"]; ct != "" {
			h["Content-Type"] = ct
		}
		return h
	}
	conditional := o.Precondition != nil || h != nil
	// commit runs the precondition on the object there now, marks its
	// owner's usage as changing, and returns the headers that make the
	// write conditional on it, and the object.
	commit := func() (map[string]string, *store.ObjectInfo, error) {
		if !conditional {
			return nil, nil, nil
		}
		cur, s3etag, err := b.head(key)
		if err != nil {
			return nil, nil, err
		}
		if o.Precondition != nil {
			if err := o.Precondition(cur); err != nil {
				return nil, nil, err
			}
		}
		// The credit is for the object this commit replaces, which the
		// conditional request pins: the one seen at the start may have
		// been deleted since and its charge given back already, so that
		// a credit kept from then would be spent twice.
		var now store.Amount
		if cur != nil && o.Owner != "" && cur.Owner == o.Owner {
			now = store.Amount{Bytes: chargeOf(cur), Keys: 1}
		}
		if now != credit {
			credit = now
			if err := reserveTo(up.n); err != nil {
				return nil, nil, err
			}
		}
		if cur == nil {
			return map[string]string{"If-None-Match": "*"}, nil, nil
		}
		if err := h.mark(cur.Owner); err != nil {
			return nil, nil, err
		}
		return map[string]string{"If-Match": s3etag}, cur, nil
	}
	// done settles the accounting of a committed upload: the owner keeps
	// the object's charge, the replaced object's owner gets its back.
	done := func(old *store.ObjectInfo) {
		settled = true
		adj := map[string]store.Amount{}
		add := func(owner string, bytes, keys int64) {
			a := adj[owner]
			a.Bytes += bytes
			a.Keys += keys
			adj[owner] = a
		}
		if o.Owner != "" {
			got := h.reserved(o.Owner)
			add(o.Owner, charge(key, up.n, o.HTTP, o.Custom)-got.Bytes, 1-got.Keys)
		}
		if old != nil && old.Owner != "" {
			add(old.Owner, -chargeOf(old), -1)
		}
		h.end(adj)
	}
	// failed says what a failed commit means: a refusal of the store's
	// own (412) gives the reservation back (deferred above); a commit
	// that may have happened (timeout, 5xx) keeps it, so the owner stays
	// charged for more than it holds, never less, until it is recounted.
	failed := func(err error) error {
		if errors.Is(err, store.ErrUnavailable) {
			settled = true
		}
		return err
	}
	if small {
		md5hex, err := finish()
		if err != nil {
			return info, err
		}
		hd := headers(md5hex)
		sum, _ := hex.DecodeString(md5hex)
		for attempt := 1; ; attempt++ {
			cond, old, err := commit()
			if err != nil {
				return info, err
			}
			po := minio.PutObjectOptions{DisableMultipart: true}
			po.UserMetadata = map[string]string{metaKey: hd["X-Amz-Meta-"+metaKey]}
			po.ContentType = hd["Content-Type"]
			switch {
			case cond["If-None-Match"] != "":
				po.SetMatchETagExcept("*")
			case cond["If-Match"] != "":
				po.SetMatchETag(strings.Trim(cond["If-Match"], `"`))
			}
			ctx, cancel := b.s.ctx()
			_, err = b.s.core.PutObject(ctx, b.s.bucket, b.name(key), bytes.NewReader(buf[:n]), int64(n), base64.StdEncoding.EncodeToString(sum), "", po)
			cancel()
			if isPreconditionFailed(err) {
				if o.Precondition != nil {
					return info, b.errPrecondition(key, o.Precondition)
				}
				if attempt < commitAttempts {
					continue // another writer's commit came between: replace it
				}
				return info, fmt.Errorf("%w: s3 put of %q: the object kept changing", store.ErrUnavailable, key)
			}
			if err != nil {
				return info, failed(b.s.wrap("put", err))
			}
			b.s.m.addBytes("written", int64(n))
			done(old)
			break
		}
		cur, _, err := b.head(key)
		if err != nil || cur == nil {
			// Written but not readable back at once: answer what was
			// written (Uploaded is the time here, not the store's).
			return store.ObjectInfo{Key: key, Size: int64(n), ETag: md5hex, Uploaded: time.Now().UTC(), HTTP: o.HTTP, Custom: o.Custom, Owner: o.Owner}, nil
		}
		return *cur, nil
	}
	// Large: stream the parts to a staging name.
	staging := b.s.prefix + ".staging/" + randomID()
	err = b.s.multipart(staging, body, func() error {
		_, err := finish()
		return err
	}, func() error { return reserveTo(up.n) }, buf)
	defer func() {
		ctx, cancel := b.s.ctx()
		defer cancel()
		if rerr := b.s.c.RemoveObject(ctx, b.s.bucket, staging, minio.RemoveObjectOptions{}); rerr != nil && !isNotFound(rerr) {
			b.s.m.logStaging(staging, rerr)
		}
	}()
	if err != nil {
		return info, err
	}
	md5hex, err := finish()
	if err != nil {
		return info, err
	}
	if h != nil {
		// The copy may take a request timeout per part of content.
		h.lease = b.s.copyTimeout(up.n) + 4*b.s.timeout
		if err := h.reserve(o.Owner, store.Amount{}); err != nil {
			return info, err
		}
	}
	for attempt := 1; ; attempt++ {
		cond, old, err := commit()
		if err != nil {
			return info, err
		}
		hd := headers(md5hex)
		hd["X-Amz-Metadata-Directive"] = "REPLACE"
		for k, v := range cond {
			hd[k] = v
		}
		ctx, cancel := context.WithTimeout(context.Background(), b.s.copyTimeout(up.n))
		_, err = b.s.copier.CopyObject(ctx, b.s.bucket, staging, b.s.bucket, b.name(key), hd, minio.CopySrcOptions{}, minio.PutObjectOptions{})
		cancel()
		if isPreconditionFailed(err) {
			if o.Precondition != nil {
				return info, b.errPrecondition(key, o.Precondition)
			}
			if attempt < commitAttempts {
				continue
			}
			return info, fmt.Errorf("%w: s3 put of %q: the object kept changing", store.ErrUnavailable, key)
		}
		if err != nil {
			return info, failed(b.s.wrap("put", err))
		}
		done(old)
		break
	}
	cur, _, err := b.head(key)
	if err != nil || cur == nil {
		return store.ObjectInfo{Key: key, Size: up.n, ETag: md5hex, Uploaded: time.Now().UTC(), HTTP: o.HTTP, Custom: o.Custom, Owner: o.Owner}, nil
	}
	return *cur, nil
}

// commitAttempts bounds how often a write without a precondition (or a
// delete) tries again when another writer's commit came between its HEAD
// and its own conditional commit.
const commitAttempts = 5

// copyTimeout bounds a server-side copy: the request timeout for each part
// size of content, as the upload had for each part.
func (s *Store) copyTimeout(n int64) time.Duration {
	parts := n/int64(s.part) + 1
	return time.Duration(parts) * s.timeout
}

// multipart streams body to name in parts of buf's size, each part its own
// call bounded by the request timeout. each runs after a part is read and
// before it is sent (the quota reservation), end when body has ended,
// before the upload completes: an error of either aborts the upload.
func (s *Store) multipart(name string, body io.Reader, end, each func() error, buf []byte) error {
	ctx, cancel := s.ctx()
	id, err := s.core.NewMultipartUpload(ctx, s.bucket, name, minio.PutObjectOptions{})
	cancel()
	if err != nil {
		return s.wrap("put", err)
	}
	done := false
	defer func() {
		if !done {
			ctx, cancel := s.ctx()
			defer cancel()
			s.core.AbortMultipartUpload(ctx, s.bucket, name, id)
		}
	}()
	var parts []minio.CompletePart
	for num := 1; ; num++ {
		n, rerr := io.ReadFull(body, buf[:s.part])
		if rerr != nil && rerr != io.EOF && rerr != io.ErrUnexpectedEOF {
			return rerr
		}
		if err := each(); err != nil {
			return err
		}
		if n > 0 || num == 1 {
			ctx, cancel := s.ctx()
			p, err := s.core.PutObjectPart(ctx, s.bucket, name, id, num, bytes.NewReader(buf[:n]), int64(n), minio.PutObjectPartOptions{})
			cancel()
			if err != nil {
				return s.wrap("put", err)
			}
			s.m.addBytes("written", int64(n))
			parts = append(parts, minio.CompletePart{PartNumber: num, ETag: p.ETag})
		}
		if rerr != nil {
			break
		}
	}
	if err := end(); err != nil {
		return err
	}
	ctx, cancel = s.ctx()
	defer cancel()
	if _, err := s.core.CompleteMultipartUpload(ctx, s.bucket, name, id, parts, minio.PutObjectOptions{}); err != nil {
		return s.wrap("put", err)
	}
	done = true
	return nil
}

var bufPool sync.Map // size → *sync.Pool

func getBuf(size int) []byte {
	p, _ := bufPool.LoadOrStore(size, &sync.Pool{New: func() any { b := make([]byte, size); return &b }})
	return *p.(*sync.Pool).Get().(*[]byte)
}

func putBuf(b []byte) {
	if p, ok := bufPool.Load(cap(b)); ok {
		b = b[:cap(b)]
		p.(*sync.Pool).Put(&b)
	}
}

// Open implements backend.Blobs. The object is read in ranges of PartSize,
// each a GET conditional on the S3 ETag Open saw: S3 keeps no old version
// to read, so a read after the object was replaced or deleted fails with
// ErrChanged instead of mixing two versions.
func (b *Blobs) Open(key string) (o backend.Object, err error) {
	defer b.s.m.observe("get", time.Now(), &err)
	if err := b.checkKey(key); err != nil {
		return nil, err
	}
	cur, s3etag, err := b.head(key)
	if err != nil {
		return nil, err
	}
	if cur == nil {
		return nil, store.ErrNotFound
	}
	return &object{b: b, key: key, info: cur, etag: strings.Trim(s3etag, `"`)}, nil
}

// ErrChanged is what a read of an open object returns once the object was
// replaced or deleted after Open: S3 does not keep the old version.
var ErrChanged = errors.New("the object was replaced or deleted while it was being read")

type object struct {
	b    *Blobs
	key  string
	info *store.ObjectInfo
	etag string
	off  int64
	body io.ReadCloser
	left int64 // bytes body has still to give
}

func (o *object) Info() *store.ObjectInfo { return o.info }

func (o *object) Read(p []byte) (int, error) {
	if o.off >= o.info.Size {
		return 0, io.EOF
	}
	if o.body == nil {
		if err := o.fetch(); err != nil {
			return 0, err
		}
	}
	n, err := o.body.Read(p)
	o.off += int64(n)
	o.left -= int64(n)
	o.b.s.m.addBytes("read", int64(n))
	if err == io.EOF || o.left <= 0 {
		o.body.Close()
		o.body = nil
		if o.left > 0 {
			return n, fmt.Errorf("%w: s3 read of %q ended early", store.ErrUnavailable, o.key)
		}
		err = nil
	}
	if err != nil {
		return n, o.b.s.wrap("get", err)
	}
	return n, nil
}

// fetch opens the next range, bounded by the request timeout; the timeout
// covers reading the range's body too, so a reader that stops reading for
// longer loses its range (the next Read asks again).
func (o *object) fetch() error {
	end := min(o.off+int64(o.b.s.part), o.info.Size) - 1
	g := minio.GetObjectOptions{}
	g.SetRange(o.off, end)
	if o.etag != "" {
		g.SetMatchETag(o.etag)
	}
	ctx, cancel := o.b.s.ctx()
	body, _, _, err := o.b.s.core.GetObject(ctx, o.b.s.bucket, o.b.name(o.key), g)
	if isPreconditionFailed(err) || isNotFound(err) {
		cancel()
		return fmt.Errorf("s3 read of %q: %w", o.key, ErrChanged)
	}
	if err != nil {
		cancel()
		return o.b.s.wrap("get", err)
	}
	o.body = cancelCloser{body, cancel}
	o.left = end - o.off + 1
	return nil
}

type cancelCloser struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelCloser) Close() error { err := c.ReadCloser.Close(); c.cancel(); return err }

func (o *object) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		off += o.off
	case io.SeekEnd:
		off += o.info.Size
	}
	if off < 0 {
		return o.off, errors.New("s3 object: seek before the start")
	}
	if off != o.off && o.body != nil {
		o.body.Close()
		o.body = nil
	}
	o.off = off
	return off, nil
}

func (o *object) Close() error {
	if o.body != nil {
		o.body.Close()
		o.body = nil
	}
	return nil
}

// Delete implements backend.Blobs.
func (b *Blobs) Delete(key string) (err error) {
	if b.s.acct != nil {
		// The owner of what is deleted gets its charge back: find it.
		return b.DeleteIf(key, func(*store.ObjectInfo) error { return nil })
	}
	defer b.s.m.observe("delete", time.Now(), &err)
	if err := b.checkKey(key); err != nil {
		return err
	}
	ctx, cancel := b.s.ctx()
	defer cancel()
	if err := b.s.c.RemoveObject(ctx, b.s.bucket, b.name(key), minio.RemoveObjectOptions{}); err != nil && !isNotFound(err) {
		return b.s.wrap("delete", err)
	}
	return nil
}

// DeleteIf implements backend.Blobs. The precondition is checked on a
// HEAD, and the DELETE carries If-Match with the S3 ETag that HEAD saw,
// so a write landing between the two is refused by the store (412), kept,
// and the precondition asked again about it. A server that ignores
// If-Match on DELETE (probed once, see conditionalDeletes) gets the
// DELETE alone: a write landing between the two is then deleted.
func (b *Blobs) DeleteIf(key string, pre func(*store.ObjectInfo) error) (err error) {
	if pre == nil {
		return b.Delete(key)
	}
	defer b.s.m.observe("delete", time.Now(), &err)
	if err := b.checkKey(key); err != nil {
		return err
	}
	h := b.s.acct.start(4 * b.s.timeout)
	settled := false
	defer func() {
		if !settled {
			h.end(nil)
		}
	}()
	for attempt := 1; ; attempt++ {
		cur, s3etag, err := b.head(key)
		if err != nil {
			return err
		}
		if err := pre(cur); err != nil {
			return err
		}
		if cur == nil {
			return nil
		}
		if err := h.mark(cur.Owner); err != nil {
			return err
		}
		err = b.s.removeIfMatch(b.name(key), s3etag)
		if isPreconditionFailed(err) || errors.Is(err, errGone) {
			if attempt < commitAttempts {
				continue // replaced since the HEAD: ask about the new one
			}
			return fmt.Errorf("%w: the object kept changing", store.ErrPreconditionFailed)
		}
		if err != nil {
			err = b.s.wrap("delete", err)
			if errors.Is(err, store.ErrUnavailable) {
				settled = true // it may be gone: recounted after the lease
			}
			return err
		}
		settled = true
		if cur.Owner != "" {
			h.end(map[string]store.Amount{cur.Owner: {Bytes: -chargeOf(cur), Keys: -1}})
		} else {
			h.end(nil)
		}
		return nil
	}
}

// List implements backend.Blobs with ListObjectsV2: S3 lists in the byte
// order of UTF-8 keys and rolls delimited prefixes up itself. A cursor is
// the bbolt store's format (the last key, or the last prefix, of a page),
// so that it means the same whichever engine made it. Each listed object
// is HEADed (eight at a time) for its MD5, headers and metadata, which a
// listing does not carry.
func (b *Blobs) List(o store.BlobListOptions) (res store.BlobList, err error) {
	defer b.s.m.observe("list", time.Now(), &err)
	if o.Limit <= 0 || o.Limit > store.MaxListLimit {
		o.Limit = store.MaxListLimit
	}
	startAfter, skipPrefix := "", ""
	if o.Cursor != "" {
		raw, derr := base64.RawURLEncoding.DecodeString(o.Cursor)
		switch {
		case derr == nil && bytes.HasPrefix(raw, []byte("k1:")):
			startAfter = string(raw[3:])
		case derr == nil && bytes.HasPrefix(raw, []byte("p1:")):
			// Keys under the prefix come after it: S3 would roll them up
			// into the same prefix again, which is dropped below.
			startAfter, skipPrefix = string(raw[3:]), string(raw[3:])
		default:
			return res, store.ErrInvalidCursor
		}
	}
	if startAfter != "" && startAfter < o.Prefix {
		startAfter = ""
	}
	res.Objects, res.DelimitedPrefixes = []store.ObjectInfo{}, []string{}
	type entry struct {
		key    string
		prefix bool
		oi     minio.ObjectInfo
	}
	var got []entry
	token := ""
	sa := ""
	if startAfter != "" {
		sa = b.name(startAfter)
	}
	// One more entry than the page takes tells whether more follow. The
	// listing call takes no context: the transport's response-header
	// timeout (the request timeout) bounds it.
	for len(got) <= o.Limit {
		r, err := b.s.core.ListObjectsV2(b.s.bucket, b.name(o.Prefix), sa, token, o.Delimiter, o.Limit+2)
		if err != nil {
			return res, b.s.wrap("list", err)
		}
		// S3 gives objects and prefixes apart, each in order: merge them.
		i, j := 0, 0
		for i < len(r.Contents) || j < len(r.CommonPrefixes) {
			var e entry
			if j >= len(r.CommonPrefixes) || (i < len(r.Contents) && r.Contents[i].Key < r.CommonPrefixes[j].Prefix) {
				e = entry{key: strings.TrimPrefix(r.Contents[i].Key, b.base), oi: r.Contents[i]}
				i++
			} else {
				e = entry{key: strings.TrimPrefix(r.CommonPrefixes[j].Prefix, b.base), prefix: true}
				j++
			}
			if e.prefix && e.key == skipPrefix {
				continue
			}
			got = append(got, e)
		}
		if !r.IsTruncated || r.NextContinuationToken == "" {
			break
		}
		token, sa = r.NextContinuationToken, ""
	}
	if len(got) > o.Limit {
		got = got[:o.Limit]
		res.Truncated = true
		last := got[len(got)-1]
		c := "k1:" + last.key
		if last.prefix {
			c = "p1:" + last.key
		}
		res.Cursor = base64.RawURLEncoding.EncodeToString([]byte(c))
	}
	infos := make([]*store.ObjectInfo, len(got))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	var mu sync.Mutex
	var firstErr error
	for i, e := range got {
		if e.prefix {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			cur, _, err := b.head(e.key)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			infos[i] = cur // nil: deleted since the listing, left out
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return store.BlobList{}, firstErr
	}
	for i, e := range got {
		switch {
		case e.prefix:
			res.DelimitedPrefixes = append(res.DelimitedPrefixes, e.key)
		case infos[i] != nil:
			res.Objects = append(res.Objects, *infos[i])
		}
	}
	return res, nil
}

var _ backend.BlobBuckets = (*Store)(nil)
