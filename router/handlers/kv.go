// Package handlers holds the built-in handler kinds the router runs: KV
// and state spaces (KV), blob buckets (Blob), fixed answers (Respond, Deny),
// credential-injecting proxies (Proxy, with the secret scrubber) and the
// forward to the original destination (Forward). Each implements
// router.Handler and returns its failures to the router, which writes them.
//
// It imports the router's contract, the storage contract (store/backend,
// with store's values and errors: the handlers never see which engine
// keeps the data), and router/forward for the handlers that send requests
// on; internal/kinds builds these handlers from their config.
package handlers

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
)

// KV serves a key-value space: the kv kind (shared or per-sandbox) and the
// state kind (always per-sandbox, with transactions).
//
//	GET    /<key>          200 value (X-KV-Expiration, X-KV-Metadata), 404
//	HEAD   /<key>          as GET, no body
//	PUT    /<key>          store the body; ?ttl=N or ?expiration=UNIX (judged
//	                       by store.ParseExpiry); metadata
//	                       in X-KV-Metadata or ?metadata=; 204
//	DELETE /<key>          204, also when absent
//	GET    /?prefix=&limit=&cursor=   JSON listing
//	POST   /               a transaction (state only)
//
// The key is the percent-decoded path without its leading slash.
type KV struct {
	// Store opens the space (the daemon passes backend.Bolt of its store).
	Store     backend.KVSpaces
	Kind      string // store.KindKV or store.KindState
	Namespace string
	// PerSandbox keys the space by the calling sandbox's name.
	PerSandbox bool
	// Transactions enables POST / (the state kind).
	Transactions bool
	Limits       store.Limits

	shared atomic.Pointer[backend.KV] // the shared space, built once
}

var _ router.Handler = (*KV)(nil)

var octetStream = []string{"application/octet-stream"}

// smallLengths are the Content-Length fields of values under 512 bytes,
// shared like octetStream: a hot key's answer builds none.
var smallLengths = func() (l [512][]string) {
	for n := range l {
		l[n] = []string{strconv.Itoa(n)}
	}
	return l
}()

func lengthField(n int) []string {
	if n < len(smallLengths) {
		return smallLengths[n]
	}
	return []string{strconv.Itoa(n)}
}

func (h *KV) space(env router.Env) (backend.KV, error) {
	if !h.PerSandbox {
		// Built once: it never changes, and building it allocates.
		if kv := h.shared.Load(); kv != nil {
			return *kv, nil
		}
		kv := h.Store.Keys(h.Kind, h.Namespace, store.ScopeShared, h.Limits)
		h.shared.Store(&kv)
		return kv, nil
	}
	// Kept in the connection's cache: a connection serves one request at a
	// time and comes from one sandbox, so the handle (scope string, handle,
	// path) is not built again for each request.
	var slot *router.HandlerSlot
	if env.Conn != nil {
		slot = &env.Conn.Cache().Handler
		if slot.Owner == any(h) && slot.Sandbox == env.Sandbox {
			return slot.Value.(backend.KV), nil
		}
	}
	scope, err := scopeOf(h.PerSandbox, env)
	if err != nil {
		return nil, err
	}
	kv := h.Store.Keys(h.Kind, h.Namespace, scope, h.Limits)
	if slot != nil {
		*slot = router.HandlerSlot{Owner: h, Sandbox: env.Sandbox, Value: kv}
	}
	return kv, nil
}

// scopeOf is the store scope a request works in: shared, or the calling
// sandbox's own.
func scopeOf(perSandbox bool, env router.Env) (string, error) {
	if !perSandbox {
		return store.ScopeShared, nil
	}
	if env.Sandbox == "" {
		return "", router.Errorf(http.StatusBadRequest, "this handler keeps data per sandbox: name one")
	}
	return store.SandboxScope(env.Sandbox), nil
}

// ServeHTTP implements router.Handler.
func (h *KV) ServeHTTP(w http.ResponseWriter, r *http.Request, env router.Env) error {
	kv, err := h.space(env)
	if err != nil {
		return err
	}
	key := strings.TrimPrefix(r.URL.Path, "/")
	if key == "" {
		switch {
		case r.Method == http.MethodGet || r.Method == http.MethodHead:
			return h.list(w, r, kv)
		case r.Method == http.MethodPost && h.Transactions:
			return h.txn(w, r, kv, env.Owner())
		}
		allow := "GET, HEAD"
		if h.Transactions {
			allow += ", POST"
		}
		w.Header().Set("Allow", allow)
		return router.Errorf(http.StatusMethodNotAllowed, "method %s not allowed on / (the listing): use %s", policy.Sanitize(r.Method), allow)
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		e, err := kv.Get(key)
		if err != nil {
			return storeError(err)
		}
		hd := w.Header()
		hd["Content-Type"] = octetStream // shared: net/http and the lean loop only read it
		hd["Content-Length"] = lengthField(len(e.Value))
		if !e.Expires.IsZero() {
			hd.Set("X-KV-Expiration", strconv.FormatInt(e.Expires.Unix(), 10))
		}
		if e.Metadata != nil {
			hd.Set("X-KV-Metadata", asciiJSON(e.Metadata))
		}
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			w.Write(e.Value)
		}
		return nil
	case http.MethodPut, http.MethodPost:
		// POST to a key writes it as PUT does: busybox wget, in the
		// smallest images, can only POST (POST to / is state's transaction).
		e, err := readEntry(r, kv)
		if err != nil {
			return err
		}
		e.Owner = env.Owner()
		if err := kv.Put(key, e); err != nil {
			return storeError(err)
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	case http.MethodDelete:
		if err := kv.Delete(key); err != nil {
			return storeError(err)
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	default:
		return methodNotAllowed(w, r)
	}
}

// methodNotAllowed answers a method a key does not take.
func methodNotAllowed(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Allow", "GET, HEAD, PUT, POST, DELETE")
	return router.Errorf(http.StatusMethodNotAllowed, "method %s not allowed: use GET, HEAD, PUT (or POST) or DELETE", policy.Sanitize(r.Method))
}

// valueLimitNoter is a space whose value limit has a cause beyond the
// handler's max_value_bytes (etcdstore's: the servers' request limit),
// which a refusal names.
type valueLimitNoter interface{ ValueLimitNote() string }

// readEntry reads a PUT: the body, its expiry and metadata.
func readEntry(r *http.Request, kv backend.KV) (store.Entry, error) {
	l := kv.Limits()
	why := ""
	if n, ok := kv.(valueLimitNoter); ok {
		if note := n.ValueLimitNote(); note != "" {
			why = " (" + note + ")"
		}
	}
	var e store.Entry
	q := r.URL.Query()
	ttl := q.Get("ttl")
	if ttl == "" {
		ttl = q.Get("expiration_ttl")
	}
	exp, err := store.ParseExpiry(ttl, q.Get("expiration"), time.Now())
	if err != nil {
		return e, &router.Error{Status: http.StatusBadRequest, Reason: err.Error()}
	}
	e.Expires = exp
	meta := r.Header.Get("X-KV-Metadata")
	if m := q.Get("metadata"); m != "" {
		meta = m
	}
	if meta != "" {
		e.Metadata = []byte(meta)
	}
	max := int64(l.MaxValueBytes)
	if r.ContentLength > max {
		return e, router.Errorf(http.StatusRequestEntityTooLarge, "value too large: %d bytes, limit %d%s", r.ContentLength, max, why)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil {
		return e, &router.Error{Status: http.StatusBadRequest, Reason: "reading request body failed", Err: err}
	}
	if int64(len(body)) > max {
		return e, router.Errorf(http.StatusRequestEntityTooLarge, "value too large: over %d bytes, limit %d%s", max, max, why)
	}
	e.Value = body
	return e, nil
}

func (h *KV) list(w http.ResponseWriter, r *http.Request, kv backend.KV) error {
	q := r.URL.Query()
	limit, err := parseLimit(q)
	if err != nil {
		return err
	}
	res, err := kv.List(store.ListOptions{Prefix: q.Get("prefix"), Cursor: q.Get("cursor"), Limit: limit})
	if err != nil {
		return storeError(err)
	}
	return router.WriteJSON(w, r, http.StatusOK, res)
}

// parseLimit reads a listing's limit: absent is 0 (the default page).
func parseLimit(q url.Values) (int, error) {
	l := q.Get("limit")
	if l == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(l)
	if err != nil || n < 1 || n > store.MaxListLimit {
		return 0, router.Errorf(http.StatusBadRequest, "limit %q: want 1 to %d", policy.Sanitize(l), store.MaxListLimit)
	}
	return n, nil
}

// Transaction wire format (POST / on a state handler).
type txnRequest struct {
	Conditions []txnCondition `json:"conditions"`
	Reads      []string       `json:"reads"`
	Writes     []txnWrite     `json:"writes"`
	Deletes    []string       `json:"deletes"`
}

type txnValue struct {
	Value       *string `json:"value,omitempty"`
	ValueBase64 *string `json:"value_base64,omitempty"`
}

func (v txnValue) bytes(what string) ([]byte, error) {
	switch {
	case v.Value != nil && v.ValueBase64 != nil:
		return nil, router.Errorf(http.StatusBadRequest, "%s: give value or value_base64, not both", what)
	case v.Value != nil:
		return []byte(*v.Value), nil
	case v.ValueBase64 != nil:
		b, err := base64.StdEncoding.DecodeString(*v.ValueBase64)
		if err != nil {
			return nil, router.Errorf(http.StatusBadRequest, "%s: value_base64 is not base64", what)
		}
		return b, nil
	}
	return nil, nil
}

func valueOf(b []byte) txnValue {
	s := string(b)
	if utf8.ValidString(s) {
		return txnValue{Value: &s}
	}
	enc := base64.StdEncoding.EncodeToString(b)
	return txnValue{ValueBase64: &enc}
}

type txnCondition struct {
	Key string `json:"key"`
	txnValue
	Absent bool `json:"absent,omitempty"`
	Exists bool `json:"exists,omitempty"`
}

type txnWrite struct {
	Key string `json:"key"`
	txnValue
	// TTL and Expiration are kept as written, for store.ParseExpiry to
	// judge as it judges a PUT's ?ttl= and ?expiration=: decoding them into
	// an int64 would wrap or truncate before anyone could refuse them.
	TTL        json.RawMessage `json:"ttl,omitempty"`
	Expiration json.RawMessage `json:"expiration,omitempty"`
	Metadata   json.RawMessage `json:"metadata,omitempty"`
}

// rawNumber is a JSON value's text, "" for absent or null.
func rawNumber(m json.RawMessage) string {
	if s := string(m); s != "null" {
		return s
	}
	return ""
}

func (h *KV) txn(w http.ResponseWriter, r *http.Request, kv backend.KV, owner string) error {
	var req txnRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, int64(kv.Limits().MaxValueBytes)*2))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return router.Errorf(http.StatusBadRequest, "transaction body: %v", err)
	}
	var t store.Txn
	for i, c := range req.Conditions {
		v, err := c.bytes("condition " + strconv.Itoa(i))
		if err != nil {
			return err
		}
		t.Conditions = append(t.Conditions, store.Condition{Key: c.Key, Equals: v, Absent: c.Absent, Exists: c.Exists})
	}
	for i, wr := range req.Writes {
		v, err := wr.bytes("write " + strconv.Itoa(i))
		if err != nil {
			return err
		}
		if v == nil {
			return router.Errorf(http.StatusBadRequest, "write %d: value or value_base64 is required", i)
		}
		exp, err := store.ParseExpiry(rawNumber(wr.TTL), rawNumber(wr.Expiration), time.Now())
		if err != nil {
			return router.Errorf(http.StatusBadRequest, "write %d: %v", i, err)
		}
		e := store.Entry{Value: v, Owner: owner, Expires: exp}
		if len(wr.Metadata) > 0 {
			e.Metadata = wr.Metadata
		}
		t.Writes = append(t.Writes, store.Write{Key: wr.Key, Entry: e})
	}
	t.Reads, t.Deletes = req.Reads, req.Deletes
	reads, err := kv.Apply(t)
	var ce *store.ConditionError
	if errors.As(err, &ce) {
		c := req.Conditions[ce.Index]
		// JSON, as documented, but with the header every error carries.
		w.Header().Set("X-Interceptd-Error", "condition failed: condition "+strconv.Itoa(ce.Index))
		return router.WriteJSON(w, r, http.StatusConflict, map[string]any{
			"error": "condition failed: " + ce.Condition.String(), "index": ce.Index, "condition": c,
		})
	}
	if err != nil {
		if errors.Is(err, store.ErrClosed) || errors.Is(err, store.ErrQuotaExceeded) || errors.Is(err, store.ErrDiskFull) || errors.Is(err, store.ErrUnavailable) ||
			errors.Is(err, store.ErrMisconfigured) {
			return storeError(err)
		}
		return router.Errorf(http.StatusBadRequest, "transaction: %v", err)
	}
	out := map[string]any{}
	for k, e := range reads {
		if e == nil {
			out[k] = nil
			continue
		}
		out[k] = valueOf(e.Value)
	}
	return router.WriteJSON(w, r, http.StatusOK, map[string]any{"reads": out})
}

// storeError maps store errors to statuses and client-facing reasons.
func storeError(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return &router.Error{Status: http.StatusNotFound, Reason: "key not found"}
	case errors.Is(err, store.ErrKeyTooLarge):
		return &router.Error{Status: http.StatusRequestURITooLong, Reason: err.Error()}
	case errors.Is(err, store.ErrValueTooLarge), errors.Is(err, store.ErrMetadataTooLarge):
		return &router.Error{Status: http.StatusRequestEntityTooLarge, Reason: err.Error()}
	case errors.Is(err, store.ErrInvalidKey):
		return &router.Error{Status: http.StatusBadRequest, Reason: "invalid key: it must be non-empty UTF-8"}
	case errors.Is(err, store.ErrInvalidMetadata), errors.Is(err, store.ErrInvalidCursor), errors.Is(err, store.ErrInvalidExpiry),
		errors.Is(err, store.ErrBadDigest), errors.Is(err, store.ErrIncomplete):
		return &router.Error{Status: http.StatusBadRequest, Reason: err.Error()}
	case errors.Is(err, store.ErrPreconditionFailed):
		return &router.Error{Status: http.StatusPreconditionFailed, Reason: err.Error()}
	case errors.Is(err, store.ErrQuotaExceeded):
		// "quota_exceeded: the kv bytes quota of sandbox …": names the
		// kind and the limit; nothing of the write was stored.
		return &router.Error{Status: http.StatusInsufficientStorage, Reason: err.Error()}
	case errors.Is(err, store.ErrDiskFull):
		// The free space itself is the host's business: it stays in the log.
		return &router.Error{Status: http.StatusInsufficientStorage, Reason: "disk_full: the store's disk is under its free-space floor; writes are refused until space is freed", Err: err}
	case errors.Is(err, store.ErrMisconfigured):
		// The servers' operator must change the setting the error names;
		// retrying does not help, and the caller did nothing wrong.
		return &router.Error{Status: http.StatusInternalServerError, Reason: err.Error(), Err: err}
	case errors.Is(err, store.ErrUnavailable):
		// The engine's address and its error stay in the log.
		return &router.Error{Status: http.StatusServiceUnavailable, Reason: "store_unavailable: the store's backend cannot be reached; try again", Err: err}
	}
	return &router.Error{Status: http.StatusServiceUnavailable, Reason: "store unavailable", Err: err}
}

// asciiJSON escapes non-ASCII runes of a JSON document as \uXXXX so that it
// can travel in a header and still parse to the same value.
func asciiJSON(b []byte) string {
	var s strings.Builder
	for _, r := range string(b) {
		switch {
		case r < 0x80:
			s.WriteRune(r)
		case r > 0xffff:
			r1, r2 := utf16Surrogates(r)
			s.WriteString(`\u` + strconv.FormatInt(int64(r1), 16) + `\u` + strconv.FormatInt(int64(r2), 16))
		default:
			s.WriteString(`\u` + leftPad(strconv.FormatInt(int64(r), 16)))
		}
	}
	return s.String()
}

func utf16Surrogates(r rune) (rune, rune) {
	r -= 0x10000
	return 0xd800 + (r>>10)&0x3ff, 0xdc00 + r&0x3ff
}

func leftPad(h string) string { return strings.Repeat("0", 4-len(h)) + h }
