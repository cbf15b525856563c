package handlers

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/interceptd/interceptd/internal/precond"
	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
)

// Blob serves an R2/S3-like object bucket.
//
//	PUT    /<key>     stream the body in (known length or chunked); stores the
//	                  representation headers and X-Meta-* metadata; checks
//	                  Content-MD5; preconditions → 412
//	GET    /<key>     the object with ETag, Last-Modified, Content-Length;
//	                  Range → 206 (416 when unsatisfiable), preconditions → 304/412
//	HEAD   /<key>     as GET, no body (and no ranges)
//	DELETE /<key>     204, also when absent; preconditions → 412
//	GET    /?prefix=&delimiter=&cursor=&limit=   JSON listing
//
// Every method evaluates If-Match, If-None-Match, If-Modified-Since and
// If-Unmodified-Since with the one parser and in the one order of package
// precond (RFC 9110 §13.2.2); a write evaluates them again inside the commit
// that makes it visible.
type Blob struct {
	// Store opens the bucket (the daemon passes backend.Bolt of its store).
	Store      backend.BlobBuckets
	Bucket     string
	PerSandbox bool
	Limits     store.Limits
}

var _ router.Handler = (*Blob)(nil)

// StoredHeaders are the representation headers a PUT stores and a GET returns.
var StoredHeaders = []string{"Content-Type", "Content-Encoding", "Content-Language", "Content-Disposition", "Cache-Control", "Expires"}

// MetaPrefix marks custom metadata headers: X-Meta-Owner: me is stored as
// owner=me and returned the same way.
const MetaPrefix = "X-Meta-"

func (h *Blob) bucket(env router.Env) (backend.Blobs, error) {
	scope, err := scopeOf(h.PerSandbox, env)
	if err != nil {
		return nil, err
	}
	return h.Store.Blobs(h.Bucket, scope, h.Limits), nil
}

// ServeHTTP implements router.Handler.
func (h *Blob) ServeHTTP(w http.ResponseWriter, r *http.Request, env router.Env) error {
	b, err := h.bucket(env)
	if err != nil {
		return err
	}
	key := strings.TrimPrefix(r.URL.Path, "/")
	if key == "" {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			return router.Errorf(http.StatusMethodNotAllowed, "method %s not allowed on / (the listing): use GET", policy.Sanitize(r.Method))
		}
		return h.list(w, r, b)
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		return h.get(w, r, b, key)
	case http.MethodPut, http.MethodPost:
		return h.put(w, r, b, key, env.Owner()) // POST as PUT: see the kv handler
	case http.MethodDelete:
		var pre func(*store.ObjectInfo) error
		if c := precond.Parse(r.Method, r.Header); !c.None() {
			pre = writePrecondition(c)
		}
		if err := b.DeleteIf(key, pre); err != nil {
			return storeError(err)
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	default:
		return methodNotAllowed(w, r)
	}
}

func (h *Blob) put(w http.ResponseWriter, r *http.Request, b backend.Blobs, key, owner string) error {
	o := store.PutOptions{
		Owner:  owner,
		Size:   r.ContentLength,
		HTTP:   map[string]string{},
		Custom: map[string]string{},
	}
	if c := precond.Parse(r.Method, r.Header); !c.None() {
		o.Precondition = writePrecondition(c)
	}
	for _, name := range StoredHeaders {
		if v := r.Header.Get(name); v != "" {
			o.HTTP[name] = v
		}
	}
	for name, vs := range r.Header {
		if strings.HasPrefix(name, MetaPrefix) && len(name) > len(MetaPrefix) {
			o.Custom[strings.ToLower(name[len(MetaPrefix):])] = strings.Join(vs, ", ")
		}
	}
	if m := r.Header.Get("Content-MD5"); m != "" {
		sum, err := base64.StdEncoding.DecodeString(m)
		if err != nil || len(sum) != 16 {
			return router.Errorf(http.StatusBadRequest, "Content-MD5 is not a base64 MD5 digest")
		}
		o.ContentMD5 = sum
	}
	info, err := b.Put(key, r.Body, o)
	if err != nil {
		var he *router.Error
		if errors.As(storeError(err), &he) && he.Status == http.StatusServiceUnavailable && !errors.Is(err, store.ErrUnavailable) {
			// A body that could not be read is the client's doing.
			return &router.Error{Status: http.StatusBadRequest, Reason: "upload failed: " + sanitizeLong(err.Error()), Err: err}
		}
		return storeError(err)
	}
	w.Header().Set("ETag", `"`+info.ETag+`"`)
	return router.WriteJSON(w, r, http.StatusOK, objectJSON(info))
}

// validators are what preconditions compare an object with.
func validators(oi *store.ObjectInfo) precond.Validators {
	if oi == nil {
		return precond.Validators{}
	}
	return precond.Validators{Exists: true, ETag: oi.ETag, LastModified: oi.Uploaded}
}

// writePrecondition is a write's preconditions as the store asks them: of
// the current object, before the upload and again in the commit.
func writePrecondition(c precond.Conditions) func(*store.ObjectInfo) error {
	return func(cur *store.ObjectInfo) error {
		if res, field := c.Evaluate(validators(cur)); res != precond.Proceed {
			return fmt.Errorf("%w: %s", store.ErrPreconditionFailed, field)
		}
		return nil
	}
}

// conditionalHeaders are the fields get decides itself before handing the
// request to http.ServeContent.
var conditionalHeaders = []string{"If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range", "Range"}

func (h *Blob) get(w http.ResponseWriter, r *http.Request, b backend.Blobs, key string) error {
	obj, err := b.Open(key)
	if err != nil {
		// A missing object is a 404 whatever the preconditions say
		// (RFC 9110 §13.2.1).
		return storeError(err)
	}
	defer obj.Close()
	info := obj.Info()
	cur := validators(info)
	etag := `"` + info.ETag + `"`
	hd := w.Header()
	// Decided here, before any stored header is set: an error answer
	// must not carry the object's Content-Encoding or Content-Type.
	res, field := precond.Parse(r.Method, r.Header).Evaluate(cur)
	switch res {
	case precond.Failed:
		return storeError(fmt.Errorf("%w: %s", store.ErrPreconditionFailed, field))
	case precond.NotModified:
		// RFC 9110 §15.4.5: the validators and caching fields a 200
		// would carry, nothing of the content.
		hd.Set("ETag", etag)
		for _, name := range []string{"Cache-Control", "Expires"} {
			if v := info.HTTP[name]; v != "" {
				hd.Set(name, v)
			}
		}
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	spec := ""
	if r.Method == http.MethodGet && r.Header.Get("Range") != "" && precond.IfRange(r.Header, cur) {
		var rr precond.RangeResult
		var reason string
		if rr, spec, reason = precond.Range(r.Header.Get("Range"), info.Size); rr == precond.Unsatisfiable {
			hd.Set("Content-Range", "bytes */"+strconv.FormatInt(info.Size, 10))
			return router.Errorf(http.StatusRequestedRangeNotSatisfiable, "range not satisfiable: %s", reason)
		}
	}
	for name, v := range info.HTTP {
		hd.Set(name, v)
	}
	if hd.Get("Content-Type") == "" {
		// Never let ServeContent sniff: the stored type or none.
		hd.Set("Content-Type", "application/octet-stream")
	}
	for k, v := range info.Custom {
		hd.Set(MetaPrefix+k, v)
	}
	hd.Set("ETag", etag)
	hd.Set("Accept-Ranges", "bytes")
	// ServeContent is left only the ranges this function vetted (none for
	// HEAD, whose ranges RFC 9110 does not define): its own reading of
	// conditionals and ranges answers bytes=-0 with an impossible 206 and
	// writes 412 and 416 in a shape of its own.
	sr := r
	for _, name := range conditionalHeaders {
		if _, ok := r.Header[name]; ok {
			sr = r.WithContext(r.Context()) // a shallow copy
			sr.Header = r.Header.Clone()
			for _, name := range conditionalHeaders {
				sr.Header.Del(name)
			}
			if spec != "" {
				sr.Header.Set("Range", spec)
			}
			break
		}
	}
	http.ServeContent(w, sr, "", info.Uploaded, obj)
	return nil
}

func (h *Blob) list(w http.ResponseWriter, r *http.Request, b backend.Blobs) error {
	q := r.URL.Query()
	limit, err := parseLimit(q)
	if err != nil {
		return err
	}
	res, err := b.List(store.BlobListOptions{Prefix: q.Get("prefix"), Delimiter: q.Get("delimiter"), Cursor: q.Get("cursor"), Limit: limit})
	if err != nil {
		return storeError(err)
	}
	objs := make([]map[string]any, 0, len(res.Objects))
	for _, oi := range res.Objects {
		objs = append(objs, objectJSON(oi))
	}
	out := map[string]any{"objects": objs, "delimited_prefixes": res.DelimitedPrefixes, "truncated": res.Truncated}
	if res.Cursor != "" {
		out["cursor"] = res.Cursor
	}
	return router.WriteJSON(w, r, http.StatusOK, out)
}

func objectJSON(oi store.ObjectInfo) map[string]any {
	m := map[string]any{"key": oi.Key, "size": oi.Size, "etag": oi.ETag, "uploaded": oi.Uploaded}
	if len(oi.HTTP) > 0 {
		m["http_metadata"] = oi.HTTP
	}
	if len(oi.Custom) > 0 {
		m["custom_metadata"] = oi.Custom
	}
	return m
}

func sanitizeLong(s string) string {
	if len(s) > 200 {
		s = s[:200]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
