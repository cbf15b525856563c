package router

import (
	"net/netip"

	"github.com/interceptd/interceptd/policy"
)

// Conn is the client connection a request came on, as the transport that
// serves it (router/httpserve's lean loop and its net/http handoff; next,
// TLS) offers it to the dispatch and the handlers. It is the one coupling
// between a transport and what runs behind it: a handler reaches the
// connection only through it, and never imports a transport.
//
// A connection comes from one sandbox and carries one request at a time,
// so what one request builds (a store handle, a metric series) can serve
// the next through Cache without a lock.
type Conn interface {
	// Addrs are the sandbox's address and port and the original
	// destination: the daemon's word (the socket's), not the request's.
	Addrs() (source, dest netip.AddrPort)
	// Cache is the connection's own cache; see ConnCache.
	Cache() *ConnCache
	// WhenGone arranges for f to run, once, if the client goes away while
	// the request is served (so that a handler stops waiting on an
	// upstream for nobody); StopWhenGone undoes it and reports whether f
	// had not run. A handler calls them in pairs, within one request.
	WhenGone(f func())
	StopWhenGone() bool
	// Ambiguous reports that the transport found the request's framing
	// ambiguous (both Content-Length and Transfer-Encoding, on the path
	// that allows a transfer coding): the router refuses it as request
	// smuggling, counted and logged like any other refusal.
	Ambiguous() bool
	// Close closes the client's connection: how a cut tunnel ends the
	// sandbox's side.
	Close() error
}

// ConnCache is what a connection keeps from one request to its next. The
// router's own fields (the metric series the connection counted into last,
// its block of request ids) are unexported; Handler is the handlers' slot.
type ConnCache struct {
	requests      requestSeries // the requests counter's last series
	decisions     policy.Series // the decisions counter's
	idNext, idEnd uint64        // the connection's block of request ids; see nextRequestID

	// Handler is kept for the handler that served the connection's last
	// request and built something it can reuse for the same sandbox: it
	// checks Owner (itself) and Sandbox before using Value. One slot is
	// enough: most connections carry one handler's requests.
	Handler HandlerSlot
}

// HandlerSlot is a handler's entry in a connection's cache.
type HandlerSlot struct {
	Owner   any
	Sandbox string
	Value   any
}

// nextRequestID returns the next id of the connection's block, drawing a
// new block when it is used up.
func (c *ConnCache) nextRequestID() string {
	if c.idNext == c.idEnd {
		c.idEnd = requestIDSeq.Add(idBlock) + 1
		c.idNext = c.idEnd - idBlock
	}
	n := c.idNext
	c.idNext++
	return requestIDOf(n)
}
