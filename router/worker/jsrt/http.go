package jsrt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/dop251/goja"
)

// readChunk is how much one read() of a Go-backed stream asks its reader for.
const readChunk = 64 << 10

// stream is a Go io.Reader behind a JS ReadableStream. fetch() and ToResponse hand the
// reader on as it is; only a script reading the stream itself copies chunks into JS.
type stream struct {
	mu sync.Mutex // one read at a time, off the loop
	r  io.Reader
	// claimed: its reader went to Go (fetch, ToResponse, Body), which closes it now.
	claimed bool
	closed  atomic.Bool // closed once: at its end, on cancel, or by release
}

func (s *stream) close() {
	if c, ok := s.r.(io.Closer); ok && s.closed.CompareAndSwap(false, true) {
		c.Close()
	}
}

func (rt *Runtime) newStream(r io.Reader) goja.Value { return rt.vm.ToValue(&stream{r: r}) }

// ownedStream is a stream the runtime must close if the script drops it (a fetch
// response's body, a binding's object): see release.
func (rt *Runtime) ownedStream(r io.Reader) goja.Value {
	s := &stream{r: r}
	rt.owned = append(rt.owned, s)
	return rt.vm.ToValue(s)
}

// release closes the owned streams that no one claimed, so that an upstream response a
// script ignored does not hold its connection. ToResponse and the next Call run it.
func (rt *Runtime) release() {
	for _, s := range rt.owned {
		if !s.claimed {
			s.close()
		}
	}
	rt.owned = nil
}

// NewStream returns a JS ReadableStream that reads r in chunks off the loop when a script
// reads it, and that fetch(), a Response body (ToResponse) and Body hand on as r, unread.
// If r is an io.Closer it is closed at its end or when the stream is cancelled; if the
// script drops it, when the Call ends (Wait, the next Call), or at ToResponse when
// nothing is pending.
func (rt *Runtime) NewStream(r io.Reader) goja.Value {
	v, err := rt.fns.Stream(goja.Undefined(), rt.ownedStream(r))
	if err != nil {
		panic(err) // the helper only wraps its argument
	}
	return v
}

// Body returns a reader over a body a binding was given: a string, an ArrayBuffer or view,
// URLSearchParams, a ReadableStream, or a Request or Response (its body, which is then
// used); null and undefined are empty. A Go-backed stream is its own reader, unread; a
// JS-made stream is pulled through the loop as the reader is read, so read it from the
// Async work of the same Call (a read after the Call ended, or its context, fails). size is the length when known, else -1.
func (rt *Runtime) Body(v goja.Value) (r io.Reader, size int64, err error) {
	w, err := rt.fns.BodyOf(goja.Undefined(), v)
	if err != nil {
		return nil, 0, rt.convert(err)
	}
	r, size = rt.wireReader(w)
	if r == nil {
		return http.NoBody, 0, nil
	}
	return r, size, nil
}

// wireReader turns a body on the wire (see wire in webapi.js) into a reader.
func (rt *Runtime) wireReader(w goja.Value) (io.Reader, int64) {
	if w == nil || goja.IsNull(w) || goja.IsUndefined(w) {
		return nil, 0
	}
	switch b := w.Export().(type) {
	case string:
		// A string body (see extract in webapi.js), as UTF-8: what TextEncoder would
		// make of it, lone surrogates as U+FFFD.
		return strings.NewReader(b), int64(len(b))
	case *stream:
		b.claimed = true
		return b.r, -1
	case goja.ArrayBuffer:
		return bytes.NewReader(b.Bytes()), int64(len(b.Bytes()))
	case []byte:
		// A Uint8Array (see wire in webapi.js): copied, as the script still holds it.
		return bytes.NewReader(bytes.Clone(b)), int64(len(b))
	}
	if o, ok := w.(*goja.Object); ok {
		if read, ok := goja.AssertFunction(o.Get("read")); ok {
			return &loopReader{rt: rt, gen: rt.gen, done: rt.callDone, ctx: rt.ctx, reader: o, read: read}, -1
		}
	}
	return nil, 0
}

// loopReader reads a JS ReadableStream from another goroutine: each Read asks the loop for
// the next chunk and waits for it, or for the Call to end.
type loopReader struct {
	rt     *Runtime
	gen    uint64
	done   <-chan struct{}
	ctx    context.Context
	reader *goja.Object
	read   goja.Callable
	buf    []byte
	err    error
}

type chunk struct {
	b   []byte
	err error
}

func (l *loopReader) Read(p []byte) (int, error) {
	for len(l.buf) == 0 {
		if l.err != nil {
			return 0, l.err
		}
		ch := make(chan chunk, 1)
		l.rt.post(l.gen, func() error { l.pull(ch); return nil })
		select {
		case c := <-ch:
			l.buf, l.err = c.b, c.err
		case <-l.done:
			l.err = errors.New("reading a script's stream after its call ended")
		case <-l.ctx.Done():
			l.err = l.ctx.Err()
		}
	}
	n := copy(p, l.buf)
	l.buf = l.buf[n:]
	return n, nil
}

// pull runs on the loop: read() and send what its promise settles with.
func (l *loopReader) pull(ch chan<- chunk) {
	vm := l.rt.vm
	p, err := l.read(l.reader)
	if err != nil {
		ch <- chunk{err: err}
		return
	}
	then, _ := goja.AssertFunction(p.ToObject(vm).Get("then"))
	_, err = then(p, vm.ToValue(func(c goja.FunctionCall) goja.Value {
		res := c.Argument(0).ToObject(vm)
		if res.Get("done").ToBoolean() {
			ch <- chunk{err: io.EOF}
		} else if a, ok := res.Get("value").Export().([]byte); ok {
			ch <- chunk{b: bytes.Clone(a)}
		} else {
			ch <- chunk{err: errors.New("a script's stream yielded a chunk that is not bytes")}
		}
		return goja.Undefined()
	}), vm.ToValue(func(c goja.FunctionCall) goja.Value {
		ch <- chunk{err: fmt.Errorf("a script's stream failed: %s", c.Argument(0).String())}
		return goja.Undefined()
	}))
	if err != nil {
		ch <- chunk{err: err}
	}
}

// read resolves to the next chunk as a Uint8Array, or null at the end.
func (rt *Runtime) read(s *stream) goja.Value {
	return rt.Async(func() (func() goja.Value, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		buf := make([]byte, readChunk)
		for {
			n, err := s.r.Read(buf)
			if n > 0 {
				return func() goja.Value { return rt.bytes(buf[:n]) }, nil
			}
			if err == io.EOF {
				s.close()
				return func() goja.Value { return goja.Null() }, nil
			}
			if err != nil {
				return nil, fmt.Errorf("reading the body: %w", err)
			}
		}
	})
}

// NewRequest makes a JS Request for r at url (the absolute URL the script sees). The body
// streams from r.Body as the script reads it; Host becomes the "host" header. Header
// fields a server would not have accepted (bad names, CR/LF/NUL in values) are dropped.
// It fails for a method or URL the Request constructor rejects.
//
// The common case (a token method, a URL that parses) is checked and normalised here, as
// the constructor would, and the header fields are read from r only when the script
// first looks at them (see headersOf in webapi.js); anything else takes the
// constructor, for its exact error.
func (rt *Runtime) NewRequest(r *http.Request, url string) (goja.Value, error) {
	body := goja.Null()
	// A GET or HEAD that declared no body has none here either: a server's
	// empty body reader is not a body, and the Request constructor refuses
	// one for those methods.
	noBody := r.ContentLength == 0 && len(r.TransferEncoding) == 0 && (r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == "")
	if r.Body != nil && r.Body != http.NoBody && !noBody {
		body = rt.newStream(r.Body)
	}
	method, ok := requestMethod(r.Method)
	href, err := rt.hrefOf(url)
	if !ok || err != nil {
		v, err := rt.fns.NewRequest(goja.Undefined(), rt.vm.ToValue(r.Method), rt.vm.ToValue(url), rt.flat(decodePairs(requestPairs(r))), body)
		if err != nil {
			return nil, fmt.Errorf("converting the request: %w", rt.convert(err))
		}
		return v, nil
	}
	headers := rt.vm.ToValue(&lazyHeaders{pairs: func() [][2]string { return requestPairs(r) }})
	v, err := rt.fns.LazyRequest(goja.Undefined(), rt.vm.ToValue(method), rt.vm.ToValue(href), headers, body)
	if err != nil {
		return nil, fmt.Errorf("converting the request: %w", rt.convert(err))
	}
	return v, nil
}

// lazyHeaders are a message's header fields still in Go (see headersOf in webapi.js):
// JS builds its Headers from them when a script first looks, and a message whose
// headers no script looked at gives the handle back (parts), which exportPairs reads
// here without a trip through JS. pairs are raw bytes, not isomorphic-decoded.
type lazyHeaders struct {
	pairs func() [][2]string
}

// requestPairs lists r's header fields as NewRequest gives them to JS (before
// decodePairs): sorted by name, Host and the length from the server's parse of them
// (r.Host, r.ContentLength), as Go's server leaves them; a header field of either name
// is not passed twice.
func requestPairs(r *http.Request) [][2]string {
	var pairs [][2]string
	names := make([]string, 0, len(r.Header))
	for k := range r.Header {
		names = append(names, k)
	}
	sort.Strings(names)
	if r.Host != "" {
		pairs = append(pairs, [2]string{"host", r.Host})
	}
	for _, k := range names {
		if lk := strings.ToLower(k); (lk == "host" && r.Host != "") || lk == "content-length" {
			continue
		}
		for _, v := range r.Header[k] {
			pairs = append(pairs, [2]string{k, v})
		}
	}
	if r.ContentLength > 0 {
		pairs = append(pairs, [2]string{"content-length", strconv.FormatInt(r.ContentLength, 10)})
	}
	return pairs
}

// requestMethod is the Request constructor's check of a method: a token, upper-cased if
// it is one of the methods Fetch normalises. ok is false where the constructor throws.
func requestMethod(m string) (string, bool) {
	if m == "" {
		return "", false
	}
	for i := 0; i < len(m); i++ {
		if !isTokenByte(m[i]) {
			return "", false
		}
	}
	switch u := strings.ToUpper(m); u {
	case "DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH":
		return u, true
	}
	return m, true
}

// isTokenByte is webapi.js's token: !#$%&'*+-.^_`|~, digits and ASCII letters.
func isTokenByte(c byte) bool {
	switch {
	case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// hrefOf is new URL(s).href: the parse of host.parseURL put together as URL's href
// getter does.
func (rt *Runtime) hrefOf(s string) (string, error) {
	p, err := rt.parseAbsURL(s)
	if err != nil {
		return "", err
	}
	str := func(k string) string { v, _ := p[k].(string); return v }
	href := str("protocol")
	if opaque, _ := p["opaque"].(bool); !opaque {
		auth := ""
		if user, pw := str("username"), str("password"); user != "" || pw != "" {
			auth = user
			if pw != "" {
				auth += ":" + pw
			}
			auth += "@"
		}
		href += "//" + auth + str("hostname")
		if port := str("port"); port != "" {
			href += ":" + port
		}
	}
	return href + str("pathname") + str("search") + str("hash"), nil
}

// ToRequest converts a JS Request back to an *http.Request bound to ctx. A Go-backed body
// is passed on unread; a JS-made body is collected first (it is in memory already).
func (rt *Runtime) ToRequest(ctx context.Context, v goja.Value) (*http.Request, error) {
	ok, err := rt.fns.IsRequest(goja.Undefined(), v)
	if err != nil || !ok.ToBoolean() {
		return nil, errors.New("not a Request")
	}
	o := v.ToObject(rt.vm)
	live := rt.vm.ToValue(rt.running > 0)
	parts, err := rt.parts(o, func(m goja.Value) (goja.Value, error) { return rt.fns.RequestParts(goja.Undefined(), m, live) })
	if err != nil {
		return nil, err
	}
	return rt.httpRequest(ctx, o.Get("method").String(), o.Get("url").String(), parts.Get("headers"), parts.Get("body"))
}

// parts asks webapi.js for a message's parts, settling a JS-stream body to bytes. After a
// Call it runs that Call's loop on for it; inside one (a host function) such a body is an
// error, since the loop cannot run nested.
func (rt *Runtime) parts(m *goja.Object, get func(goja.Value) (goja.Value, error)) (*goja.Object, error) {
	if rt.running > 0 {
		p, err := get(m)
		if err != nil {
			return nil, err
		}
		po := p.ToObject(rt.vm)
		if _, ok := po.Get("body").Export().(*goja.Promise); ok {
			return nil, errors.New("a body made by a JS ReadableStream cannot be converted inside a call")
		}
		return po, nil
	}
	if rt.broken {
		return nil, ErrBroken
	}
	end := rt.span(true)
	defer end()
	var p goja.Value
	if err := rt.run(func() (err error) { p, err = get(m); return err }); err != nil {
		return nil, err
	}
	po := p.ToObject(rt.vm)
	body, err := rt.await(po.Get("body"))
	if err != nil {
		return nil, err
	}
	po.Set("body", body)
	return po, nil
}

func (rt *Runtime) httpRequest(ctx context.Context, method, url string, headers, body goja.Value) (*http.Request, error) {
	r, size := rt.wireReader(body)
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	if r == nil {
		size = 0
	}
	for _, kv := range exportPairs(headers) {
		switch strings.ToLower(kv[0]) {
		case "host":
			req.Host = kv[1]
		case "content-length":
			// Framing is Go's to write; a streamed body keeps the length its sender gave.
			if n, err := strconv.ParseInt(kv[1], 10, 64); err == nil && size < 0 {
				size = n
			}
		default:
			req.Header.Add(kv[0], kv[1])
		}
	}
	if size >= 0 {
		req.ContentLength = size
	} else {
		req.ContentLength = -1
	}
	if size == 0 && r != nil {
		req.Body = http.NoBody
	}
	return req, nil
}

// flat hands a header list to JS as one array, name, value, name, value..., which JS
// reads much faster than a wrapped Go slice.
func (rt *Runtime) flat(pairs [][2]string) goja.Value {
	vals := make([]any, 0, 2*len(pairs))
	for _, kv := range pairs {
		vals = append(vals, kv[0], kv[1])
	}
	return rt.vm.NewArray(vals...)
}

// decodePairs isomorphic-decodes the values, for JS (see isoDecode).
func decodePairs(pairs [][2]string) [][2]string {
	for i := range pairs {
		pairs[i][1] = isoDecode(pairs[i][1])
	}
	return pairs
}

// exportPairs turns a flat header list from JS into bytes: header values are ByteStrings,
// each code unit (<= 0xFF, which Headers checks) one byte. A lazyHeaders handle gives
// its own fields, less those Headers would have refused, as headersOf would have.
func exportPairs(v goja.Value) [][2]string {
	if o, ok := v.(*goja.Object); ok {
		if lh, ok := o.Export().(*lazyHeaders); ok {
			return acceptedPairs(lh.pairs())
		}
	}
	list, _ := v.Export().([]any)
	out := make([][2]string, 0, len(list)/2)
	for i := 0; i+1 < len(list); i += 2 {
		k, _ := list[i].(string)
		val, _ := list[i+1].(string)
		out = append(out, [2]string{k, isoEncode(val)})
	}
	return out
}

// acceptedPairs is what Headers.append keeps of raw header fields: the name a token, the
// value with its leading and trailing HTTP whitespace (tab, LF, CR, space) trimmed and
// then without NUL, CR or LF. It filters in place.
func acceptedPairs(pairs [][2]string) [][2]string {
	out := pairs[:0]
	for _, kv := range pairs {
		name, value := kv[0], strings.Trim(kv[1], "\t\n\r ")
		ok := name != "" && !strings.ContainsAny(value, "\x00\r\n")
		for i := 0; ok && i < len(name); i++ {
			ok = isTokenByte(name[i])
		}
		if ok {
			out = append(out, [2]string{name, value})
		}
	}
	return out
}

// isoDecode maps each byte to the code point of the same value (Fetch's isomorphic decode),
// so that header bytes outside ASCII reach JS unchanged and come back as they were.
func isoDecode(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			r := make([]rune, len(s))
			for j := 0; j < len(s); j++ {
				r[j] = rune(s[j])
			}
			return string(r)
		}
	}
	return s
}

// isoEncode undoes isoDecode; a code point past 0xFF (Headers refuses them) stays UTF-8.
func isoEncode(s string) string {
	ascii := true
	for i := 0; i < len(s) && ascii; i++ {
		ascii = s[i] < 0x80
	}
	if ascii {
		return s // the common case, and the same bytes
	}
	b := make([]byte, 0, len(s))
	for _, r := range s {
		if r > 0xFF {
			return s
		}
		b = append(b, byte(r))
	}
	return string(b)
}

// redirectKey carries a fetch's redirect mode in its request's context.
type redirectKey struct{}

// RedirectMode is the redirect mode of the request a script's fetch() made,
// from its context: "follow" (the default), "manual" (a 3xx is the
// response) or "error" (a 3xx fails the fetch). Options.Fetch honours it.
func RedirectMode(ctx context.Context) string {
	if m, ok := ctx.Value(redirectKey{}).(string); ok {
		return m
	}
	return "follow"
}

// fetch is the host side of the global fetch().
func (rt *Runtime) fetch(method, url string, headers, body goja.Value, redirect string) goja.Value {
	if rt.opts.Fetch == nil {
		p, _, reject := rt.vm.NewPromise()
		reject(rt.vm.NewTypeError("fetch is not available to this worker"))
		return rt.vm.ToValue(p)
	}
	ctx := rt.ctx
	if redirect != "" && redirect != "follow" {
		ctx = context.WithValue(ctx, redirectKey{}, redirect)
	}
	req, err := rt.httpRequest(ctx, method, url, headers, body)
	if err != nil {
		panic(rt.vm.NewTypeError(err.Error()))
	}
	return rt.Async(func() (func() goja.Value, error) {
		resp, err := rt.opts.Fetch(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("fetch failed: %w", err)
		}
		return func() goja.Value { return rt.newResponse(resp, url) }, nil
	})
}

func (rt *Runtime) newResponse(resp *http.Response, url string) goja.Value {
	h := resp.Header
	headers := rt.vm.ToValue(&lazyHeaders{pairs: func() [][2]string {
		var pairs [][2]string
		for k, vs := range h {
			for _, v := range vs {
				pairs = append(pairs, [2]string{k, v})
			}
		}
		return pairs
	}})
	body := goja.Null()
	if resp.Body != nil && resp.Body != http.NoBody {
		body = rt.ownedStream(resp.Body)
	}
	text := strings.TrimSpace(strings.TrimPrefix(resp.Status, strconv.Itoa(resp.StatusCode)))
	v, err := rt.fns.NewResponse(goja.Undefined(), rt.vm.ToValue(resp.StatusCode), rt.vm.ToValue(text), headers, body, rt.vm.ToValue(url))
	if err != nil {
		panic(err)
	}
	return v
}

// Response is a JS Response as Go sees it. Body is nil for no body; a Go-backed body (an
// upstream's, a stream the host made) is the reader itself, so close it if it is an
// io.Closer; a JS-made body is a *bytes.Reader.
type Response struct {
	Status     int
	StatusText string
	Header     http.Header
	Body       io.Reader
}

// ToResponse converts what a handler returned (a Response) for Go to write. A JS
// ReadableStream body is read to the end here, on the loop, under the CPU limit.
func (rt *Runtime) ToResponse(v goja.Value) (*Response, error) {
	o, ok := v.(*goja.Object)
	if !ok {
		return nil, fmt.Errorf("the handler returned %s, not a Response", typeName(v))
	}
	parts, err := rt.parts(o, func(m goja.Value) (goja.Value, error) { return rt.fns.ResponseParts(goja.Undefined(), m) })
	if err != nil {
		return nil, err
	}
	res := &Response{Status: int(parts.Get("status").ToInteger()), StatusText: parts.Get("statusText").String(), Header: http.Header{}}
	for _, kv := range exportPairs(parts.Get("headers")) {
		res.Header.Add(kv[0], kv[1])
	}
	res.Body, _ = rt.wireReader(parts.Get("body"))
	rt.mu.Lock()
	idle := rt.pending == 0 && len(rt.queue) == 0
	rt.mu.Unlock()
	if idle {
		// Nothing left could read a body the script dropped; do not wait for the next Call.
		rt.release()
	}
	return res, nil
}
