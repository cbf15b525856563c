package forward

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/interceptd/interceptd/router/wire"
	"golang.org/x/net/http/httpguts"
)

// This file is the forwarder's own HTTP/1.1 client. A stock http.Transport
// runs two goroutines per upstream connection and hands every request and
// response between them over channels; on a small host that handoff, not the
// parsing, was most of the forwarder's cost (see bench/README.md). Here the
// handler's goroutine writes the request and reads the response itself, on a
// pooled keep-alive connection, with pooled buffers. Requests it does not
// handle (protocol upgrades, Expect: 100-continue, request trailers) go to
// httputil.ReverseProxy, which does.

// upstreamPool keeps idle keep-alive connections to original destinations,
// each for the sandbox that opened it: a connection is never handed from one
// sandbox to another, so nothing one sandbox leaves in it (a request prefix
// an upstream has not consumed) can reach another's request.
type upstreamPool struct {
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	maxPerDest  int
	maxIdle     int
	idleTimeout time.Duration

	mu        sync.Mutex
	idle      map[poolKey][]*upConn
	n         int
	lastSweep time.Time
	janitor   *time.Timer
}

type upConn struct {
	net.Conn
	raw       syscall.RawConn
	rio       *wire.RawIO // nil if the connection has no descriptor
	br        *bufio.Reader
	bw        *bufio.Writer
	key       poolKey
	idleSince time.Time
	reused    bool
	cut       func()   // cuts the connection short: made once, not per request
	head      respHead // the last response head; its raw fields' memory is reused
}

// maxKeptHead bounds the memory of raw head fields an upstream connection
// keeps for its next response.
const maxKeptHead = 4 << 10

var (
	upReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}
	upWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
)

// poolKey is whose connection to where.
type poolKey struct {
	sandbox string
	dest    netip.AddrPort
}

// get returns an idle connection for key, or a new one. An idle one is
// first checked for a close (or an unasked-for answer, such as a 408) the
// upstream sent while it idled: a system call. With replayable, one idle
// for less than freshIdle is not: upstreams do that at their idle timeout,
// seconds long, and the caller sends the request again on a new connection
// if the reused one turns out closed or answers 408.
func (p *upstreamPool) get(ctx context.Context, key poolKey, replayable bool) (*upConn, error) {
	now := time.Now()
	p.mu.Lock()
	for s := p.idle[key]; len(s) > 0; s = p.idle[key] {
		uc := s[len(s)-1]
		s[len(s)-1] = nil
		// An emptied list stays, for put to reuse (a new one for every
		// forward otherwise); sweepLocked removes it once it idles.
		p.idle[key] = s[:len(s)-1]
		p.n--
		p.mu.Unlock()
		// Checked outside the lock: it is a system call, and every
		// sandbox's forwards share this pool.
		idle := now.Sub(uc.idleSince)
		check := !replayable || idle >= freshIdle
		if idle > p.idleTimeout || uc.br.Buffered() > 0 || check && !uc.alive() {
			uc.close()
			p.mu.Lock()
			continue
		}
		uc.reused = true
		return uc, nil
	}
	p.mu.Unlock()
	return p.connect(ctx, key)
}

func (p *upstreamPool) connect(ctx context.Context, key poolKey) (*upConn, error) {
	c, err := p.dial(ctx, "tcp", key.dest.String())
	if err != nil {
		return nil, err
	}
	uc := &upConn{Conn: c, key: key}
	uc.cut = func() { uc.SetDeadline(wire.ALongTimeAgo) }
	var rw io.ReadWriter = c
	if r := wire.NewRawIO(c); r != nil {
		uc.raw, uc.rio, rw = r.RawConn(), r, r
	}
	uc.br = upReaders.Get().(*bufio.Reader)
	uc.br.Reset(rw)
	uc.bw = upWriters.Get().(*bufio.Writer)
	uc.bw.Reset(rw)
	return uc, nil
}

// put returns a connection whose last exchange ended cleanly.
func (p *upstreamPool) put(uc *upConn) {
	now := time.Now()
	uc.idleSince = now
	p.mu.Lock()
	if p.idle == nil {
		p.idle = map[poolKey][]*upConn{}
	}
	var stale []*upConn
	if now.Sub(p.lastSweep) > p.idleTimeout/2 {
		p.lastSweep = now
		stale = p.sweepLocked(now)
	}
	s := p.idle[uc.key]
	keep := len(s) < p.maxPerDest && p.n < p.maxIdle
	if keep {
		p.idle[uc.key] = append(s, uc)
		p.n++
		if p.janitor == nil {
			// Sweeps go on while anything is idle, traffic or not.
			p.janitor = time.AfterFunc(p.idleTimeout, p.sweep)
		}
	}
	p.mu.Unlock()
	if !keep {
		uc.close()
	}
	for _, c := range stale {
		c.close()
	}
}

// sweep closes what has been idle too long, and comes back while anything
// is still idle. (A list get emptied is removed by the sweep that was due:
// the janitor runs from the put that filled it.)
func (p *upstreamPool) sweep() {
	p.mu.Lock()
	now := time.Now()
	p.lastSweep = now
	stale := p.sweepLocked(now)
	if p.n > 0 {
		p.janitor.Reset(p.idleTimeout / 2)
	} else {
		p.janitor = nil
	}
	p.mu.Unlock()
	for _, c := range stale {
		c.close()
	}
}

// sweepLocked removes connections idle for longer than idleTimeout, so that
// destinations a sandbox stopped using do not hold sockets open, and the
// lists left empty.
func (p *upstreamPool) sweepLocked(now time.Time) []*upConn {
	var stale []*upConn
	for d, s := range p.idle {
		kept := s[:0]
		for _, c := range s {
			if now.Sub(c.idleSince) > p.idleTimeout {
				stale = append(stale, c)
				p.n--
			} else {
				kept = append(kept, c)
			}
		}
		if len(kept) == 0 {
			delete(p.idle, d)
		} else {
			p.idle[d] = kept
		}
	}
	return stale
}

func (uc *upConn) close() {
	uc.Conn.Close()
	if uc.br != nil {
		uc.br.Reset(nil)
		upReaders.Put(uc.br)
		uc.bw.Reset(nil)
		upWriters.Put(uc.bw)
		uc.br, uc.bw = nil, nil
	}
}

// alive reports whether an idle connection can carry another request: the
// upstream has neither closed it nor sent anything unasked. One non-blocking
// peek, instead of the background reader http.Transport keeps per
// connection.
func (uc *upConn) alive() bool {
	if uc.br.Buffered() > 0 {
		return false
	}
	if uc.raw == nil {
		return true
	}
	var b [1]byte
	ok := false
	err := uc.raw.Read(func(fd uintptr) bool {
		ok = !wire.Peek(fd, b[:])
		return true
	})
	return err == nil && ok
}

// hopHeaders are meaningful only for one connection (RFC 9110 §7.6.1) and
// are never passed on; nor is any header the Connection header names.
var hopHeaders = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true,
	"Proxy-Authenticate": true, "Proxy-Authorization": true, "Te": true,
	"Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Content-Length": true,
}

// leanable reports whether the lean client can carry r; the rest go to
// httputil.ReverseProxy.
func leanable(r *http.Request) bool {
	return r.ProtoMajor == 1 && r.Header["Upgrade"] == nil && r.Header["Expect"] == nil &&
		r.Trailer == nil && r.Method != http.MethodConnect
}

// connectionTokens returns the header names a Connection header lists, if
// it lists any besides keep-alive and close.
func connectionTokens(h map[string][]string) map[string]bool {
	var m map[string]bool
	for _, v := range h["Connection"] {
		for _, t := range strings.Split(v, ",") {
			t = textproto.TrimString(t)
			if t == "" || strings.EqualFold(t, "close") || strings.EqualFold(t, "keep-alive") {
				continue
			}
			if m == nil {
				m = map[string]bool{}
			}
			m[http.CanonicalHeaderKey(t)] = true
		}
	}
	return m
}

// freshIdle: a pooled connection idle for less than this is reused for a
// replayable request without the liveness check (see upstreamPool.get).
const freshIdle = time.Second

// errStaleAnswer: a reused connection answered 408, which upstreams send
// on an idle connection before closing it.
var errStaleAnswer = errors.New("408 on a reused connection")

// forwardLean sends r to t.Dest over a pooled connection and relays the
// response to w. Its error is the caller's to answer (or, wrapping
// ErrAborted, to cut the connection with).
func (f *Forwarder) forwardLean(w http.ResponseWriter, r *http.Request, t Target) error {
	ctx := r.Context()
	key := poolKey{t.Sandbox, t.Dest}
	uc, err := f.pool.get(ctx, key, replayable(r))
	if err != nil {
		return f.failed(err)
	}
	err = f.exchange(w, r, t, uc)
	if err != nil && uc.reused && !errors.Is(err, ErrAborted) && replayable(r) {
		// A kept-alive connection can be closed by the upstream just as we
		// send on it; what it never answered can be sent once more.
		if uc, err = f.pool.connect(ctx, key); err == nil {
			err = f.exchange(w, r, t, uc)
		}
	}
	switch {
	case errors.Is(err, ErrAborted):
		// The status line is out: the router cuts the connection, so the
		// sandbox sees a truncated response, not a complete-looking one.
		f.Logger.Debug("forwarding failed mid-response", "error", err)
		f.Metrics.Failed(ErrorKind(err))
		return err
	case err != nil:
		return f.failed(err)
	}
	return nil
}

func replayable(r *http.Request) bool {
	if r.ContentLength != 0 {
		return false
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// exchange carries one request and its response on uc, and returns uc to
// the pool or closes it. Errors before the response began leave w untouched;
// errors after it are wrapped in ErrAborted.
func (f *Forwarder) exchange(w http.ResponseWriter, r *http.Request, t Target, uc *upConn) (err error) {
	reusable := false
	// A sandbox that goes away must not leave us waiting on its upstream.
	var stop func() bool
	if t.Client != nil {
		t.Client.WhenGone(uc.cut)
	} else {
		stop = context.AfterFunc(r.Context(), uc.cut)
	}
	var bodyDone chan error
	defer func() {
		if bodyDone != nil {
			// The handler must not return while the body is being read:
			// cut both ends the sender may be blocked on, then wait.
			uc.SetDeadline(wire.ALongTimeAgo)
			http.NewResponseController(w).SetReadDeadline(wire.ALongTimeAgo)
			<-bodyDone
		}
		stopped := false
		if t.Client != nil {
			stopped = t.Client.StopWhenGone()
		} else {
			stopped = stop()
		}
		if stopped && reusable && err == nil {
			f.pool.put(uc)
		} else {
			uc.close()
		}
	}()

	writeHead(uc.bw, r, t.Dest)
	if r.ContentLength != 0 {
		// The head goes out first, so the upstream can decide on it
		// however slowly the sandbox sends its body.
		if err := uc.bw.Flush(); err != nil {
			return fmt.Errorf("sending request: %w", err)
		}
		// The body is sent while the response is read: an upstream may
		// answer (413, 401) before it has read it all. Full duplex, or
		// net/http would make writing the answer wait for the body.
		http.NewResponseController(w).EnableFullDuplex()
		done := make(chan error, 1)
		bodyDone = done
		// done, not bodyDone: a variable the goroutine captured would live
		// on the heap for every request, bodiless ones too.
		go func() { done <- writeBody(uc.bw, r) }()
	} else if uc.rio != nil {
		// The answer cannot come before the request: wait for it without
		// a read that finds nothing yet.
		if err := uc.rio.FlushThenAwait(uc.bw); err != nil {
			return fmt.Errorf("sending request: %w", err)
		}
	} else if err := uc.bw.Flush(); err != nil {
		return fmt.Errorf("sending request: %w", err)
	}

	// Behind the lean loop the head is relayed without a header map.
	rw, _ := w.(wire.RawHeadWriter)
	if rw != nil && !rw.RawHeads() {
		rw = nil
	}
	h := &uc.head
	if err := readHead(uc.br, h, rw != nil, h.raw.Fields); err != nil {
		return fmt.Errorf("reading response: %w", err)
	}
	code := h.code
	if code == http.StatusRequestTimeout && uc.reused && replayable(r) {
		// Most likely the upstream's word on the idle connection, sent
		// before our request reached it (as net/http's Transport reads
		// it): not an answer. The caller sends the request again.
		return errStaleAnswer
	}

	// Framing of the response body (RFC 9112 §6.3).
	noBody := r.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	chunked, length, closeDelimited := false, int64(-1), false
	if h.te && !noBody {
		chunked = h.teChunked
		closeDelimited = !chunked || h.cl
	} else if h.cl {
		if h.clErr != nil {
			return h.clErr
		}
		length = h.length
	} else if !noBody {
		closeDelimited = true
	}
	keepAlive := !closeDelimited && !h.connClose
	if h.proto == 0 {
		keepAlive = keepAlive && h.connKeepAlive
	}

	if h.trailer != nil {
		w.Header()["Trailer"] = h.trailer
	}
	if rw != nil {
		h.raw.Length = -1
		if h.cl && (noBody || length >= 0) {
			h.raw.Length = length
		}
		rw.WriteRawHead(code, &h.raw)
	} else {
		out := w.Header()
		hdr := h.hdr
		drop := connectionTokens(hdr)
		for k, vs := range hdr {
			if hopHeaders[k] || drop[k] {
				continue
			}
			if k == wire.RequestIDHeader {
				out[k] = append(out[k], vs...) // ours first, as ReverseProxy did
				continue
			}
			out[k] = vs
		}
		if cl := hdr["Content-Length"]; cl != nil && (noBody || length >= 0) {
			if len(cl) > 1 || strings.IndexByte(cl[0], ',') >= 0 {
				cl = []string{strconv.FormatInt(length, 10)}
			}
			out["Content-Length"] = cl
		}
		if _, ok := out["Content-Type"]; !ok {
			out["Content-Type"] = nil // a transparent hop does not sniff and add one
		}
		w.WriteHeader(code)
	}
	h.hdr, h.trailer = nil, nil
	if cap(h.raw.Fields) > maxKeptHead {
		h.raw.Fields = nil // one big head does not stay with the connection
	}

	if !noBody && length != 0 {
		var n int64
		var err error
		if length > 0 {
			n, err = relayBuffered(w, uc.br, length)
		} else {
			buf := wire.CopyBuffers.Get()
			var body io.Reader = uc.br
			if chunked {
				body = httputil.NewChunkedReader(uc.br)
			}
			n, err = relay(w, body, buf, uc.br)
			wire.CopyBuffers.Put(buf)
		}
		if err != nil {
			if closeDelimited && errors.Is(err, io.EOF) {
				err = nil
			} else {
				return fmt.Errorf("%w: %w", ErrAborted, err)
			}
		}
		if length > 0 && n != length {
			return fmt.Errorf("%w: %d of %d bytes", ErrAborted, n, length)
		}
		if chunked {
			budget := maxResponseHeaderBytes
			trailer, err := readFields(uc.br, &budget)
			if err != nil {
				return fmt.Errorf("%w: reading trailer: %w", ErrAborted, err)
			}
			if len(trailer) > 0 {
				out := w.Header()
				for k, vs := range trailer {
					out[http.TrailerPrefix+k] = vs
				}
			}
		}
	}
	if bodyDone != nil {
		var berr error
		wait := time.NewTimer(50 * time.Millisecond)
		select {
		case berr = <-bodyDone:
			// The usual case: the upstream read the body, then answered;
			// the sender is at most finishing up.
			wait.Stop()
		case <-wait.C:
			// The upstream answered before the body was all sent (413, 401):
			// the sandbox gets the answer now, and the rest of its body is
			// not waited for, on either side.
			rc := http.NewResponseController(w)
			rc.Flush()
			uc.SetDeadline(wire.ALongTimeAgo)
			rc.SetReadDeadline(wire.ALongTimeAgo)
			berr = <-bodyDone
			if berr == nil {
				berr = errors.New("body cut short")
			}
		}
		bodyDone = nil
		if berr != nil {
			return nil // the sandbox has its answer; this connection is spent
		}
	}
	reusable = keepAlive
	return nil
}

// relayBuffered copies a body of length n from br to w straight out of
// br's buffer: no copy buffer, and one copy less.
func relayBuffered(w io.Writer, br *bufio.Reader, n int64) (int64, error) {
	var total int64
	for total < n {
		if br.Buffered() == 0 {
			if _, err := br.Peek(1); err != nil { // fills the buffer
				return total, err
			}
		}
		p, _ := br.Peek(int(min(int64(br.Buffered()), n-total)))
		m, err := w.Write(p)
		br.Discard(m)
		total += int64(m)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// relay copies a body of unknown length (chunked, or to the end of the
// connection) to w, flushing as data arrives: it may be a stream (server-sent
// events).
func relay(w http.ResponseWriter, body io.Reader, buf []byte, br *bufio.Reader) (int64, error) {
	var total int64
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
			if fl, ok := w.(http.Flusher); ok && br.Buffered() == 0 {
				fl.Flush()
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// writeHead writes the request line and headers as the sandbox sent them,
// less hop-by-hop headers, with our own framing of the body.
func writeHead(bw *bufio.Writer, r *http.Request, dest netip.AddrPort) {
	uri := r.RequestURI
	if uri == "" || uri[0] != '/' {
		uri = r.URL.RequestURI()
	}
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	bw.WriteString(uri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	if r.Host != "" {
		bw.WriteString(r.Host)
	} else {
		bw.WriteString(dest.String())
	}
	bw.WriteString("\r\n")
	drop := connectionTokens(r.Header)
	for k, vs := range r.Header {
		if k == "Te" && wire.HeaderHas(r.Header, "Te", "trailers") {
			// "TE: trailers" is the one TE value a proxy passes on.
			bw.WriteString("Te: trailers\r\n")
			continue
		}
		if hopHeaders[k] || drop[k] || k == "Host" {
			continue
		}
		for _, v := range vs {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	switch {
	case r.ContentLength > 0:
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.FormatInt(r.ContentLength, 10))
		bw.WriteString("\r\n")
	case r.ContentLength < 0:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	case r.Header["Content-Length"] != nil, r.Method == http.MethodPost, r.Method == http.MethodPut, r.Method == http.MethodPatch:
		bw.WriteString("Content-Length: 0\r\n")
	}
	bw.WriteString("\r\n")
}

// errUpstreamWrite marks a failure to send the body upstream (as opposed to
// a failure to read it from the sandbox).
var errUpstreamWrite = errors.New("sending request body")

type upstreamWriter struct{ w io.Writer }

func (u upstreamWriter) Write(p []byte) (int, error) {
	n, err := u.w.Write(p)
	if err != nil {
		err = fmt.Errorf("%w: %w", errUpstreamWrite, err)
	}
	return n, err
}

// writeBody sends r's body (framed as writeHead announced) and flushes.
func writeBody(bw *bufio.Writer, r *http.Request) error {
	buf := wire.CopyBuffers.Get()
	defer wire.CopyBuffers.Put(buf)
	var err error
	if r.ContentLength > 0 {
		var n int64
		n, err = io.CopyBuffer(upstreamWriter{bw}, io.LimitReader(r.Body, r.ContentLength), buf)
		if err == nil && n < r.ContentLength {
			err = io.ErrUnexpectedEOF
		}
	} else {
		cw := httputil.NewChunkedWriter(upstreamWriter{bw})
		if _, err = io.CopyBuffer(cw, r.Body, buf); err == nil {
			if err = cw.Close(); err == nil {
				_, err = bw.WriteString("\r\n")
			}
		}
	}
	if err == nil {
		if ferr := bw.Flush(); ferr != nil {
			err = fmt.Errorf("%w: %w", errUpstreamWrite, ferr)
		}
	}
	return err
}

// Limits on what an upstream may send before its body: the sandbox chose
// the upstream, so it may be the sandbox's own server. Lines are also
// bounded by the connection's read buffer (16 KiB).
const (
	maxResponseHeaderBytes = 256 << 10
	maxHeaderFields        = 1000
	maxInterimResponses    = 5
)

// readFields reads header (or trailer) fields up to the empty line,
// spending *budget bytes at most. Unlike textproto's reader it has bounds
// (the budget, maxHeaderFields, and the buffer for one line), and it
// refuses obsolete line folding, as a proxy may (RFC 9112 §5.2).
func readFields(br *bufio.Reader, budget *int) (textproto.MIMEHeader, error) {
	h := textproto.MIMEHeader{}
	var vals []string // backing for one-value fields: one allocation, not one each
	for n := 0; ; n++ {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return nil, errors.New("header line too long")
			}
			return nil, err
		}
		if *budget -= len(line); *budget < 0 {
			return nil, errors.New("header too large")
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			return h, nil
		}
		if n >= maxHeaderFields {
			return nil, errors.New("too many header fields")
		}
		if line[0] == ' ' || line[0] == '\t' {
			return nil, errors.New("folded header line")
		}
		i := bytes.IndexByte(line, ':')
		if i <= 0 {
			return nil, fmt.Errorf("malformed header line %q", truncate(line))
		}
		k, ok := commonFields[string(line[:i])] // no allocation for the usual names
		if !ok {
			k = string(line[:i])
		}
		value := string(bytes.Trim(line[i+1:], " \t"))
		if !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidHeaderFieldValue(value) {
			return nil, fmt.Errorf("invalid header field %q", truncate(line))
		}
		k = http.CanonicalHeaderKey(k)
		if vs := h[k]; vs != nil {
			h[k] = append(vs, value)
			continue
		}
		if len(vals) == cap(vals) {
			vals = make([]string, 0, 8)
		}
		vals = append(vals, value)
		h[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
}

// commonFields maps the usual response field names, as servers spell them,
// to their canonical form.
var commonFields = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Content-Length", "Content-Type", "Date", "Server", "Connection", "Keep-Alive",
		"Transfer-Encoding", "Cache-Control", "Etag", "Last-Modified", "Expires", "Vary", "Location",
		"Set-Cookie", "Accept-Ranges", "Content-Encoding", "Age", "Via", "Trailer", "Pragma"} {
		m[k], m[strings.ToLower(k)] = k, k
	}
	m["ETag"] = "Etag"
	return m
}()

func truncate(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}
