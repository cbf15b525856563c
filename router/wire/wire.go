// Package wire holds the HTTP/1.1 wire-level pieces that the intercepting
// server (router/httpserve) and the forwarding client (router/forward) both
// use: raw socket I/O that skips the scheduler's bookkeeping (RawIO), a
// response head relayed as it came (RawHead, RawHeadWriter), strict decimal
// parsing, header token lookup, the request id's header name and a pool of
// copy buffers.
//
// It sits below both and imports neither, nor anything of interceptd's: it
// is the one place the two ends of a forwarded request share, so that
// neither has to import the other.
package wire

import (
	"net/textproto"
	"strings"
	"sync"
	"syscall"
	"time"
)

// RequestIDHeader carries the request id on every response.
const RequestIDHeader = "X-Interceptd-Request-Id"

// ALongTimeAgo, as a deadline, ends a wait at once.
var ALongTimeAgo = time.Unix(1, 0)

// RawConn is the connection's raw descriptor access, for a wait without a
// buffer (see the server's idle connections).
func (r *RawIO) RawConn() syscall.RawConn { return r.rc }

// RawHead is a response head the forwarder relays as it came, without a
// header map between the upstream's bytes and the sandbox's.
type RawHead struct {
	// Fields are checked "Name: value\r\n" lines, hop-by-hop ones and
	// the framing (Content-Length, Transfer-Encoding) left out.
	Fields []byte
	// Length is the Content-Length to announce, or -1 for none.
	Length int64
	// Date: Fields carry a Date, so the writer adds none.
	Date bool
}

// RawHeadWriter is a ResponseWriter that takes a RawHead: the lean loop's,
// through the router's recorder. net/http's does not; the forwarder then
// relays through the header map.
type RawHeadWriter interface {
	// RawHeads reports whether WriteRawHead can be used now.
	RawHeads() bool
	// WriteRawHead writes the final head: code, the fields of
	// Header() (the request id), then h's. Trailers Header() declares
	// are sent as with WriteHeader.
	WriteRawHead(code int, h *RawHead)
}

// ParseDecimal parses a Content-Length: 1 to 18 digits, nothing else.
func ParseDecimal[T string | []byte](b T) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(b); i++ {
		if b[i] < '0' || b[i] > '9' {
			return 0, false
		}
		n = n*10 + int64(b[i]-'0')
	}
	return n, true
}

// HeaderHas reports whether a comma-separated header lists token.
func HeaderHas(h map[string][]string, key, token string) bool {
	for _, v := range h[key] {
		for rest, more := v, true; more; {
			var t string
			t, rest, more = strings.Cut(rest, ",")
			if strings.EqualFold(textproto.TrimString(t), token) {
				return true
			}
		}
	}
	return false
}

// CopyBuffers recycles the 32 KiB buffers bodies are copied with (also by
// httputil.ReverseProxy, as its BufferPool): without a pool every forwarded
// request allocates one, larger than all its other allocations together,
// for the GC to collect.
var CopyBuffers = &BufferPool{}

// BufferPool is a pool of 32 KiB copy buffers; it implements
// httputil.BufferPool.
type BufferPool struct{ p sync.Pool }

// Get returns a buffer from the pool, or a new one.
func (b *BufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

// Put returns buf to the pool.
func (b *BufferPool) Put(buf []byte) { b.p.Put(&buf) }
