package router

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/interceptd/interceptd/store"
)

// KV serves one KV namespace: GET/HEAD /<key> read, PUT /<key> writes the
// body, DELETE /<key> removes (204 also when absent). The key is the
// percent-decoded path without its leading slash; slashes inside are fine.
type KV struct {
	Store *store.KV
	// MaxValueSize bounds PUT bodies; it should match the store's limit.
	MaxValueSize int64
}

var _ Handler = (*KV)(nil)

// ServeHTTP implements Handler.
func (h *KV) ServeHTTP(w http.ResponseWriter, r *http.Request, env Env) error {
	key := strings.TrimPrefix(r.URL.Path, "/")
	if key == "" {
		return Errorf(http.StatusBadRequest, "a key is required: use /<key>")
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		e, err := h.Store.Get(key)
		if err != nil {
			return kvError(err)
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(e.Value)))
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			w.Write(e.Value)
		}
		return nil
	case http.MethodPut:
		max := h.MaxValueSize
		if max <= 0 {
			max = 25 << 20
		}
		if r.ContentLength > max {
			return Errorf(http.StatusRequestEntityTooLarge, "value too large: %d bytes, limit %d", r.ContentLength, max)
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, max+1))
		if err != nil {
			return &Error{Status: http.StatusBadRequest, Reason: "reading request body failed", Err: err}
		}
		if int64(len(body)) > max {
			return Errorf(http.StatusRequestEntityTooLarge, "value too large: over %d bytes", max)
		}
		if err := h.Store.Put(key, store.Entry{Value: body}); err != nil {
			return kvError(err)
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	case http.MethodDelete:
		if err := h.Store.Delete(key); err != nil {
			return kvError(err)
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	default:
		w.Header().Set("Allow", "GET, HEAD, PUT, DELETE")
		return Errorf(http.StatusMethodNotAllowed, "method %s not allowed: use GET, HEAD, PUT or DELETE", sanitize(r.Method))
	}
}

func kvError(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return &Error{Status: http.StatusNotFound, Reason: "key not found"}
	case errors.Is(err, store.ErrKeyTooLarge):
		return &Error{Status: http.StatusRequestURITooLong, Reason: err.Error()}
	case errors.Is(err, store.ErrValueTooLarge):
		return &Error{Status: http.StatusRequestEntityTooLarge, Reason: err.Error()}
	case errors.Is(err, store.ErrInvalidKey):
		return &Error{Status: http.StatusBadRequest, Reason: "invalid key: it must be non-empty UTF-8"}
	}
	return &Error{Status: http.StatusServiceUnavailable, Reason: "store unavailable", Err: err}
}

// sanitize keeps a client-supplied token printable and short for messages.
func sanitize(s string) string {
	if len(s) > 32 {
		s = s[:32]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, s)
}
