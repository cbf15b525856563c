package router

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strings"

	"github.com/interceptd/interceptd/store"
)

// Blob serves an R2/S3-like object bucket.
//
//	PUT    /<key>     stream the body in (known length or chunked); stores the
//	                  representation headers and X-Meta-* metadata; checks
//	                  Content-MD5; If-Match / If-None-Match → 412
//	GET    /<key>     the object with ETag, Last-Modified, Content-Length;
//	                  Range → 206 (416 when unsatisfiable), conditionals → 304/412
//	HEAD   /<key>     as GET, no body
//	DELETE /<key>     204, also when absent
//	GET    /?prefix=&delimiter=&cursor=&limit=   JSON listing
type Blob struct {
	DB         *store.DB
	Bucket     string
	PerSandbox bool
	Limits     store.Limits
}

var _ Handler = (*Blob)(nil)

// StoredHeaders are the representation headers a PUT stores and a GET returns.
var StoredHeaders = []string{"Content-Type", "Content-Encoding", "Content-Language", "Content-Disposition", "Cache-Control", "Expires"}

// MetaPrefix marks custom metadata headers: X-Meta-Owner: me is stored as
// owner=me and returned the same way.
const MetaPrefix = "X-Meta-"

func (h *Blob) bucket(env Env) (*store.Blobs, error) {
	scope, err := scopeOf(h.PerSandbox, env)
	if err != nil {
		return nil, err
	}
	return h.DB.Blobs(h.Bucket, scope, h.Limits), nil
}

// ServeHTTP implements Handler.
func (h *Blob) ServeHTTP(w http.ResponseWriter, r *http.Request, env Env) error {
	b, err := h.bucket(env)
	if err != nil {
		return err
	}
	key := strings.TrimPrefix(r.URL.Path, "/")
	if key == "" {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			return Errorf(http.StatusMethodNotAllowed, "method %s not allowed on / (the listing): use GET", sanitize(r.Method))
		}
		return h.list(w, r, b)
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		return h.get(w, r, b, key)
	case http.MethodPut:
		return h.put(w, r, b, key, env.owner())
	case http.MethodDelete:
		if err := b.Delete(key); err != nil {
			return storeError(err)
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	default:
		return methodNotAllowed(w, r)
	}
}

func (h *Blob) put(w http.ResponseWriter, r *http.Request, b *store.Blobs, key, owner string) error {
	o := store.PutOptions{
		Owner:       owner,
		Size:        r.ContentLength,
		IfMatch:     r.Header.Get("If-Match"),
		IfNoneMatch: r.Header.Get("If-None-Match"),
		HTTP:        map[string]string{},
		Custom:      map[string]string{},
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
			return Errorf(http.StatusBadRequest, "Content-MD5 is not a base64 MD5 digest")
		}
		o.ContentMD5 = sum
	}
	info, err := b.Put(key, r.Body, o)
	if err != nil {
		var he *Error
		if errors.As(storeError(err), &he) && he.Status == http.StatusServiceUnavailable {
			// A body that could not be read is the client's doing.
			return &Error{Status: http.StatusBadRequest, Reason: "upload failed: " + sanitizeLong(err.Error()), Err: err}
		}
		return storeError(err)
	}
	w.Header().Set("ETag", `"`+info.ETag+`"`)
	return writeJSON(w, r, http.StatusOK, objectJSON(info))
}

func (h *Blob) get(w http.ResponseWriter, r *http.Request, b *store.Blobs, key string) error {
	obj, err := b.Open(key)
	if err != nil {
		return storeError(err)
	}
	defer obj.Close()
	hd := w.Header()
	for name, v := range obj.Info.HTTP {
		hd.Set(name, v)
	}
	if hd.Get("Content-Type") == "" {
		// Never let ServeContent sniff: the stored type or none.
		hd.Set("Content-Type", "application/octet-stream")
	}
	for k, v := range obj.Info.Custom {
		hd.Set(MetaPrefix+k, v)
	}
	hd.Set("ETag", `"`+obj.Info.ETag+`"`)
	hd.Set("Accept-Ranges", "bytes")
	// ServeContent implements Range (206, 416 with Content-Range: bytes */N),
	// If-Match, If-None-Match, If-Modified-Since, If-Unmodified-Since and
	// If-Range as RFC 9110 orders them.
	http.ServeContent(w, r, "", obj.Info.Uploaded, obj)
	return nil
}

func (h *Blob) list(w http.ResponseWriter, r *http.Request, b *store.Blobs) error {
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
	return writeJSON(w, r, http.StatusOK, out)
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
