// Package httpserve is the HTTP/1.1 server of intercepted connections: the
// transport in front of the router. It accepts what TPROXY hands the
// transparent listener, reads requests, and passes each to a Handler (the
// router) with the connection's scope (router.Conn). It decides nothing and
// runs no handler itself.
//
// It imports the router for the Conn contract it implements and
// router/wire for the pieces it shares with the forwarder; never the
// handlers or the forwarder.
//
// Most of what sandboxes send is small and plain: a GET, or a PUT with a
// Content-Length, whose head arrives in one segment. For those the server
// runs its own loop: no background reader and no context per request, a read
// deadline moved at most once a second, one write per response. At tens of
// thousands of requests a second that is most of what net/http costs beyond
// the system calls. Everything else goes, with its connection, to net/http
// and the smuggling watcher from that request on: chunked or Expect uploads,
// upgrades, absolute or asterisk targets, heads over leanReadSize, and
// anything not strictly well-formed (bare LF, folded lines, two Hosts or two
// Content-Lengths, an invalid name or value). So the lean loop only ever
// accepts a strict subset of what net/http accepts (FuzzLeanHead holds it
// to http.ReadRequest), and the edge cases stay on the hardened path.
package httpserve

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/interceptd/interceptd/internal/connlimit"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/wire"
	"golang.org/x/net/http/httpguts"
)

const (
	// leanReadSize bounds a head the lean loop parses; larger ones (up to
	// MaxHeaderBytes) go to net/http.
	leanReadSize  = 8 << 10
	leanWriteSize = 4 << 10
	// leanSmallBody: a response body this small whose length the handler
	// did not give is held back and sent with a Content-Length, as
	// net/http does.
	leanSmallBody = 2 << 10
	// maxDiscard is how much of an unread request body is read away to
	// keep the connection; beyond it the connection is closed.
	maxDiscard    = 256 << 10
	headerTimeout = 10 * time.Second
	idleTimeout   = 120 * time.Second
	// watchAfter: a handler still running after this long (up to half as
	// long again: see sweepWatches) has the connection watched, so that a
	// sandbox going away cancels its request's context (net/http watches
	// every request, at a cost).
	watchAfter = 100 * time.Millisecond
)

// Connection states for Shutdown: an idle connection waits for the first
// byte of a request and may be closed; an active one finishes its request.
const (
	connIdle int32 = iota
	connActive
	connClosed
)

// leanBufs are a connection's buffers while it carries a request; an idle
// connection gives them back, so that thousands of kept-alive connections
// cost little more than their goroutines.
type leanBufs struct {
	br   *bufio.Reader
	bw   *bufio.Writer
	pend [leanSmallBody]byte
	num  [20]byte // for formatting numbers: a local array would escape into bw.Write
}

var bufPool = sync.Pool{New: func() any {
	return &leanBufs{br: bufio.NewReaderSize(nil, leanReadSize), bw: bufio.NewWriterSize(nil, leanWriteSize)}
}}

// Serve serves intercepted connections from ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return nil
	}
	s.ln = ln
	s.mu.Unlock()
	s.startHandoff()
	for {
		c, err := connlimit.Accept(ln, s.closing.Load, s.log, "intercepted http")
		if c == nil {
			return err
		}
		go s.serveConn(c)
	}
}

// startHandoff starts the net/http server that takes what the lean loop
// hands off, once.
func (s *Server) startHandoff() {
	s.handoffOnce.Do(func() { go s.srv.Serve(sniffListener{s.hand}) }) // returns ErrServerClosed on Shutdown
}

// ServeConn serves one connection until it is closed, as Serve serves each
// it accepts: for a transport that opens its connections itself (the TLS
// front, once it has terminated TLS). c need not be a socket: without one
// the lean loop reads and writes c as it is. It returns when c is closed,
// also when the lean loop handed it to net/http.
func (s *Server) ServeConn(c net.Conn) {
	if s.closing.Load() {
		c.Close()
		return
	}
	s.startHandoff()
	dc := &closeSignal{Conn: c, closed: make(chan struct{})}
	s.serveConn(dc)
	<-dc.closed
}

// closeSignal is a connection that says when it was closed (ServeConn).
type closeSignal struct {
	net.Conn
	once   sync.Once
	closed chan struct{}
}

func (c *closeSignal) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.closed) })
	return err
}

// CloseWrite half-closes, for lingerClose.
func (c *closeSignal) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// Shutdown stops accepting, lets in-flight requests finish until ctx ends,
// and closes idle connections.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
	}
	s.mu.Unlock()
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Shutdown(ctx) }() // also closes the handoff listener
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for s.closeIdle() > 0 {
		select {
		case <-ctx.Done():
			<-errc
			return ctx.Err()
		case <-tick.C:
		}
	}
	return <-errc
}

// closeIdle closes the lean connections waiting for a request and returns
// how many remain.
func (s *Server) closeIdle() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for lc := range s.conns {
		if lc.state.CompareAndSwap(connIdle, connClosed) {
			lc.c.Close()
		}
	}
	return len(s.conns)
}

func (s *Server) track(lc *leanConn, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.conns == nil {
			s.conns = map[*leanConn]struct{}{}
		}
		s.conns[lc] = struct{}{}
	} else {
		delete(s.conns, lc)
	}
}

// leanConn is one intercepted connection served by the lean loop.
type leanConn struct {
	s      *Server
	c      net.Conn
	raw    syscall.RawConn // to wait for a request without a buffer; nil if c has none
	io     io.ReadWriter   // c's rawIO, or c if it has none
	bufs   *leanBufs       // nil while idle
	br     *bufio.Reader   // bufs.br; reads lc, not c: see Read
	bw     *bufio.Writer   // bufs.bw
	ctx    context.Context // cancelled when the sandbox goes away
	cancel context.CancelFunc
	proto  *http.Request // a request with ctx set, copied into each new one
	rdl    time.Time     // the read deadline last set
	state  atomic.Int32

	// Watching for the sandbox going away while a handler runs.
	seq       atomic.Uint32 // odd while a request is served; see sweepWatches
	swSeq     uint32        // sweepWatches' own: the request it last saw
	swSeen    int           // and how many sweeps in a row
	mu        sync.Mutex
	wantWatch bool // the handler has run for watchAfter
	bodyDone  bool // nothing more of the request will be read
	reqDone   bool
	watching  bool
	watchDone chan struct{}
	// pre holds what was read while the connection held no buffers: by
	// the wait for the next request (its read, where a peek and then a
	// read into the buffer took two system calls), or by the watcher.
	// Read gives it first.
	pre          [preSize]byte
	preOff, preN int
	unread       bool             // request bytes may be left unread: close gracefully
	goneFn       func()           // see WhenGone
	cache        router.ConnCache // see Cache
	src, dst     netip.AddrPort
	idEnd        uint64
	served       int // requests answered
}

// preSize covers the head of most requests an API client sends: a longer
// one is read on from the socket (and given headerTimeout, as a head in
// pieces).
const preSize = 512

// Read gives the reader what was read into pre first.
func (lc *leanConn) Read(p []byte) (int, error) {
	if lc.preOff < lc.preN {
		n := copy(p, lc.pre[lc.preOff:lc.preN])
		lc.preOff += n
		return n, nil
	}
	return lc.io.Read(p)
}

// pending reports whether pre holds bytes not yet read.
func (lc *leanConn) pending() bool { return lc.preOff < lc.preN }

func (lc *leanConn) acquire() {
	lc.bufs = bufPool.Get().(*leanBufs)
	lc.br, lc.bw = lc.bufs.br, lc.bufs.bw
	lc.br.Reset(lc)
	lc.bw.Reset(lc.io)
}

func (lc *leanConn) release() {
	lc.br.Reset(nil)
	lc.bw.Reset(nil)
	bufPool.Put(lc.bufs)
	lc.bufs, lc.br, lc.bw = nil, nil, nil
}

// waitReadable waits until c has something to read (or its deadline
// passes) without holding buffers: what comes is read into pre, by the
// connection's raw reader (which reads first, then waits if it found
// nothing: the poller forgets a readiness reported before the wait began).
// It returns the read's error, io.EOF for the end.
func (lc *leanConn) waitReadable() error {
	if lc.raw == nil {
		return nil // the read that follows waits instead
	}
	n, err := lc.io.Read(lc.pre[:])
	if n > 0 {
		lc.preOff, lc.preN = 0, n
	}
	return err
}

func (s *Server) serveConn(c net.Conn) {
	s.metrics.connOpened()
	lc := &leanConn{s: s, c: c}
	lc.src, lc.dst = addrPort(c.RemoteAddr()), addrPort(c.LocalAddr())
	// ServerContextKey as net/http sets it: httputil.ReverseProxy only
	// aborts (cuts the connection) on a failed body copy when it is there.
	base := context.WithValue(context.Background(), http.ServerContextKey, s.srv)
	base = context.WithValue(base, http.LocalAddrContextKey, c.LocalAddr())
	lc.ctx, lc.cancel = context.WithCancel(base)
	lc.proto = (&http.Request{RemoteAddr: c.RemoteAddr().String()}).WithContext(lc.ctx)
	lc.io = c
	if r := wire.NewRawIO(c); r != nil {
		lc.raw, lc.io = r.RawConn(), r
	}
	lc.acquire() // the first request is usually there already
	s.track(lc, true)
	handedOff := false
	defer func() {
		s.track(lc, false)
		lc.cancel()
		if !handedOff {
			if lc.unread && lc.bufs != nil {
				lc.lingerClose()
			}
			c.Close()
			s.metrics.connClosed()
		}
		if lc.bufs != nil {
			lc.release()
		}
	}()
	for !s.closing.Load() {
		lc.state.Store(connIdle)
		req, body, next := lc.readRequest()
		switch next {
		case nextClose:
			return
		case nextHandoff:
			handedOff = lc.handoff()
			return
		}
		if !lc.serve(req, body) {
			return
		}
	}
}

type nextStep int

const (
	nextServe nextStep = iota
	nextClose
	nextHandoff
)

// readRequest waits for the next request and parses its head, or says
// that net/http is to serve it, or that the connection is done.
func (lc *leanConn) readRequest() (*http.Request, *leanBody, nextStep) {
	if lc.br == nil || lc.br.Buffered() == 0 {
		// Moved at most once a second: setting a deadline costs a timer
		// update, and a second more or less of idle time does not matter.
		if d := time.Now().Add(idleTimeout); lc.rdl.IsZero() || d.Sub(lc.rdl) > time.Second {
			lc.c.SetReadDeadline(d)
			lc.rdl = d
		}
		// Not before the first request, which is usually there already.
		if lc.br != nil && !lc.pending() && lc.raw != nil && lc.served > 0 {
			lc.release()
		}
		if lc.br == nil {
			if !lc.pending() {
				if err := lc.waitReadable(); err != nil {
					return nil, nil, nextClose
				}
			}
			lc.acquire()
		}
		if _, err := lc.br.Peek(1); err != nil {
			return nil, nil, nextClose
		}
	}
	if !lc.state.CompareAndSwap(connIdle, connActive) {
		return nil, nil, nextClose // Shutdown closed it
	}
	slow := false
	for {
		buf, _ := lc.br.Peek(lc.br.Buffered())
		n, complete := headEnd(buf)
		if n < 0 {
			return nil, nil, nextHandoff
		}
		if complete {
			req, ok := parseHead(buf[:n], lc.proto)
			if !ok {
				return nil, nil, nextHandoff
			}
			lc.br.Discard(n)
			var body *leanBody
			if req.ContentLength > 0 {
				body = &leanBody{lc: lc, n: req.ContentLength}
				req.Body = body
				// A body may take long; the idle deadline must not cut it.
				lc.c.SetReadDeadline(time.Time{})
				lc.rdl = time.Time{}
			} else {
				req.Body = http.NoBody
			}
			return req, body, nextServe
		}
		if lc.br.Buffered() == lc.br.Size() {
			return nil, nil, nextHandoff // too large for us
		}
		if !slow {
			// The head did not come in one piece: from now on it has
			// headerTimeout to arrive (a trickling sandbox).
			slow = true
			d := time.Now().Add(headerTimeout)
			lc.c.SetReadDeadline(d)
			lc.rdl = d
		}
		if _, err := lc.br.Peek(lc.br.Buffered() + 1); err != nil {
			return nil, nil, nextClose
		}
	}
}

// handoff passes the connection, with what it has buffered, to net/http;
// false when net/http is shutting down and the connection is to be closed.
func (lc *leanConn) handoff() bool {
	pre := make([]byte, lc.br.Buffered())
	lc.br.Read(pre)
	// The buffer takes all of lc.pre on its first fill; should a byte be
	// left there, it goes along all the same.
	pre = append(pre, lc.pre[lc.preOff:lc.preN]...)
	lc.preOff = lc.preN
	lc.c.SetReadDeadline(time.Time{})
	return lc.s.hand.pass(&prefixConn{Conn: lc.c, pre: pre})
}

// lingerClose ends a connection that may still have request bytes coming:
// closing a socket with unread data sends a reset, which can destroy the
// response still in flight. It half-closes, then reads away what comes for
// a moment (net/http sleeps instead) before the caller closes.
func (lc *leanConn) lingerClose() {
	lc.bw.Flush()
	cw, ok := lc.c.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	lc.c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	io.CopyN(io.Discard, lc.c, 4<<20)
}

// serve runs one request and finishes its response. It reports whether the
// connection may carry another.
func (lc *leanConn) serve(req *http.Request, body *leanBody) (keep bool) {
	w := &leanResponse{lc: lc, req: req, cl: -1}
	lc.mu.Lock()
	lc.wantWatch, lc.watching, lc.reqDone = false, false, false
	lc.bodyDone = body == nil
	lc.mu.Unlock()
	lc.seq.Add(1) // odd: serving; sweepWatches sees it from now on
	if s := lc.s; !s.sweeping.Load() && s.sweeping.CompareAndSwap(false, true) {
		go s.sweepWatches()
	}
	aborted := false
	func() {
		defer func() {
			if p := recover(); p != nil {
				aborted = true
				if p != http.ErrAbortHandler {
					buf := make([]byte, 64<<10)
					buf = buf[:runtime.Stack(buf, false)]
					lc.s.log.Error("panic serving intercepted request", "panic", fmt.Sprint(p), "stack", string(buf))
				}
			}
		}()
		lc.s.h.ServeConn(w, req, lc)
	}()
	lc.endWatch()
	if aborted {
		// What was written goes out, then the connection is cut: the
		// sandbox sees a truncated response, not a complete-looking one.
		if body != nil {
			lc.unread = body.stop()
		}
		lc.bw.Flush()
		return false
	}
	w.finish()
	// The answer goes out before what is left of the upload is read away:
	// a sandbox stalling its upload still has it at once.
	if w.err != nil || lc.bw.Flush() != nil {
		if body != nil {
			lc.unread = body.stop()
		}
		return false
	}
	if body != nil && !body.drain() {
		lc.unread = true
		return false
	}
	lc.served++
	return !w.closeAfter && !req.Close
}

// sweepWatches starts the watch of requests that have run for watchAfter.
// One ticker for every connection, instead of a timer set and stopped on
// every request, which would put two operations on the runtime's timer
// heap on the path of every request, almost none of which runs long
// enough to need one; a request is watched after 100 to 150 ms. It runs while requests are being served: a
// daemon with only idle connections does not tick.
func (s *Server) sweepWatches() {
	t := time.NewTicker(watchAfter / 2)
	defer t.Stop()
	var conns []*leanConn
	for range t.C {
		conns = s.snapshot(conns[:0])
		serving := false
		for _, lc := range conns {
			seq := lc.seq.Load()
			if seq&1 == 0 || seq != lc.swSeq {
				lc.swSeq, lc.swSeen = seq, 0
				serving = serving || seq&1 == 1
				continue
			}
			serving = true
			// Seen at three sweeps in a row: it has run for watchAfter.
			if lc.swSeen++; lc.swSeen == 2 {
				lc.watchDue()
			}
		}
		if !serving {
			// Stop, then look once more: a request that began before the
			// stop was visible is seen here; one after it starts a sweeper.
			s.sweeping.Store(false)
			if !s.anyServing(conns[:0]) || !s.sweeping.CompareAndSwap(false, true) {
				clear(conns)
				return
			}
		}
		clear(conns)
	}
}

// snapshot appends the router's connections to conns.
func (s *Server) snapshot(conns []*leanConn) []*leanConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	for lc := range s.conns {
		conns = append(conns, lc)
	}
	return conns
}

// anyServing reports whether a connection is serving a request.
func (s *Server) anyServing(buf []*leanConn) bool {
	for _, lc := range s.snapshot(buf) {
		if lc.seq.Load()&1 == 1 {
			return true
		}
	}
	return false
}

// watchDue: the request has run for watchAfter.
func (lc *leanConn) watchDue() {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if lc.reqDone {
		return
	}
	lc.wantWatch = true
	if lc.bodyDone {
		lc.startWatchLocked()
	}
}

// bodyRead is called when the request body has been read to its end.
func (lc *leanConn) bodyRead() {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	lc.bodyDone = true
	if lc.wantWatch && !lc.reqDone {
		lc.startWatchLocked()
	}
}

func (lc *leanConn) startWatchLocked() {
	// Nothing reads the connection now (the body is done); bytes already
	// buffered are a pipelined request: the sandbox is there.
	if lc.watching || lc.pending() || lc.br.Buffered() > 0 {
		return
	}
	lc.watching = true
	lc.watchDone = make(chan struct{})
	// For as long as the handler runs (a long poll, a stream), not until
	// the idle deadline; endWatch sets one again.
	lc.c.SetReadDeadline(time.Time{})
	go func() {
		defer close(lc.watchDone)
		n, err := lc.c.Read(lc.pre[:])
		if n > 0 {
			lc.preOff, lc.preN = 0, n
			return
		}
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			lc.gone() // EOF or reset: the sandbox went away
		}
	}()
}

// gone cancels the connection's context, and runs what WhenGone asked for.
// Cancelled first: a WhenGone that comes after either sees it and runs its
// function itself, or left it here for the lock below.
func (lc *leanConn) gone() {
	lc.cancel()
	lc.mu.Lock()
	f := lc.goneFn
	lc.goneFn = nil
	lc.mu.Unlock()
	if f != nil {
		f()
	}
}

// WhenGone arranges for f to run if the sandbox goes away before
// StopWhenGone; it does what context.AfterFunc on the connection's context
// would, without its allocations on every forwarded request. f runs at once
// if the sandbox is already gone.
func (lc *leanConn) WhenGone(f func()) {
	lc.mu.Lock()
	done := lc.ctx.Err() != nil
	if !done {
		lc.goneFn = f
	}
	lc.mu.Unlock()
	if done {
		f()
	}
}

// StopWhenGone undoes WhenGone. It reports false if f ran, or may still
// be running.
func (lc *leanConn) StopWhenGone() bool {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	stopped := lc.goneFn != nil
	lc.goneFn = nil
	return stopped
}

// endWatch stops the watcher, if one runs, before the connection is read
// again.
func (lc *leanConn) endWatch() {
	lc.seq.Add(1) // even: done
	lc.mu.Lock()
	lc.reqDone = true
	watching := lc.watching
	lc.mu.Unlock()
	if watching {
		lc.c.SetReadDeadline(wire.ALongTimeAgo)
		<-lc.watchDone
		lc.rdl = wire.ALongTimeAgo
	}
}

// leanBody is a request body of known length.
type leanBody struct {
	lc     *leanConn
	mu     sync.Mutex
	n      int64 // left to read
	closed bool
	err    error
}

func (b *leanBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return 0, http.ErrBodyReadAfterClose
	case b.err != nil:
		return 0, b.err
	case b.n == 0:
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.lc.br.Read(p)
	b.n -= int64(n)
	switch {
	case b.n == 0:
		b.lc.bodyRead()
		err = io.EOF
	case err == io.EOF:
		err = io.ErrUnexpectedEOF
	}
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

func (b *leanBody) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

// drain closes the body and reads away what the handler left, if that is
// little; it reports whether the connection is still in step. Once it
// returns, no reader the handler left behind (a transport still sending
// the body upstream) touches the connection's buffer again.
func (b *leanBody) drain() bool {
	deadline := func() {
		b.lc.c.SetReadDeadline(time.Now().Add(headerTimeout))
		b.lc.rdl = wire.ALongTimeAgo // reset before the next request
	}
	locked := b.mu.TryLock()
	if !locked {
		// A reader left behind holds the lock, maybe blocked on the
		// sandbox: a deadline ends its wait.
		deadline()
		b.mu.Lock()
	}
	defer b.mu.Unlock()
	b.closed = true
	if b.err != nil || b.n > maxDiscard {
		return false
	}
	if b.n == 0 {
		return true
	}
	if locked {
		deadline() // not set above
	}
	_, err := io.CopyN(io.Discard, b.lc.br, b.n)
	b.n = 0
	return err == nil
}

// stop closes the body at once, for a connection about to be cut, and
// reports whether some of it was left unread.
func (b *leanBody) stop() bool {
	b.lc.c.SetReadDeadline(wire.ALongTimeAgo)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	return b.n > 0
}

// leanResponse is the lean loop's http.ResponseWriter.
type leanResponse struct {
	lc  *leanConn
	req *http.Request
	// header is made on the first Header call: a forward relays its
	// upstream's head raw, and needs none. requestID is the router's field
	// until then.
	header      http.Header
	requestID   []string
	status      int
	wroteHeader bool
	committed   bool   // the head is written
	pending     []byte // body held back until its length is known
	cl          int64  // the length the head gave, or -1
	written     int64
	chunked     bool
	noBody      bool // HEAD, or a status without a body
	closeAfter  bool
	err         error
}

func (w *leanResponse) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header, 8)
		if w.requestID != nil {
			w.header[wire.RequestIDHeader] = w.requestID
		}
	}
	return w.header
}

// SetRequestID gives the response the router's request id field, without
// making the header map for it.
func (w *leanResponse) SetRequestID(id []string) {
	if w.header != nil {
		w.header[wire.RequestIDHeader] = id
		return
	}
	w.requestID = id
}

func (w *leanResponse) WriteHeader(code int) {
	if w.wroteHeader || w.err != nil {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		// Informational (100, 103): its head goes out now, the final one
		// follows.
		if w.req.ProtoAtLeast(1, 1) {
			w.writeStatusLine(code)
			w.writeFields(false)
			w.lc.bw.WriteString("\r\n")
			w.setErr(w.lc.bw.Flush())
		}
		return
	}
	w.wroteHeader, w.status = true, code
	w.noBody = w.req.Method == http.MethodHead || !bodyAllowed(code)
}

func bodyAllowed(code int) bool {
	return code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
}

func (w *leanResponse) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.noBody {
		return len(p), nil // HEAD: eaten
	}
	if !w.committed {
		if len(w.pending)+len(p) <= len(w.lc.bufs.pend) {
			w.pending = append(w.lc.bufs.pend[:len(w.pending)], p...)
			return len(p), nil
		}
		w.commit(false, p, nil)
		if w.err != nil {
			return 0, w.err
		}
	}
	return w.writeBody(p)
}

func (w *leanResponse) WriteString(s string) (int, error) {
	if !w.committed && len(w.pending)+len(s) <= len(w.lc.bufs.pend) && w.wroteHeader && w.err == nil && !w.noBody {
		w.pending = append(w.lc.bufs.pend[:len(w.pending)], s...)
		return len(s), nil
	}
	return w.Write([]byte(s))
}

func (w *leanResponse) setErr(err error) {
	if err != nil && w.err == nil {
		w.err, w.closeAfter = err, true
	}
}

func (w *leanResponse) writeBody(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if w.cl >= 0 && w.written+int64(len(p)) > w.cl {
		return 0, http.ErrContentLength
	}
	bw := w.lc.bw
	if w.chunked {
		bw.Write(strconv.AppendInt(w.lc.bufs.num[:0], int64(len(p)), 16))
		bw.WriteString("\r\n")
	}
	n, err := bw.Write(p)
	if w.chunked && err == nil {
		_, err = bw.WriteString("\r\n")
	}
	w.written += int64(n)
	w.setErr(err)
	return n, err
}

func (w *leanResponse) RawHeads() bool { return !w.wroteHeader && w.err == nil }

func (w *leanResponse) WriteRawHead(code int, h *wire.RawHead) {
	if !w.RawHeads() || code < 200 || code > 999 {
		panic(fmt.Sprintf("writeRawHead: code %d, or a head already written", code))
	}
	w.WriteHeader(code)
	w.commit(false, nil, h)
}

// commit writes the head: with the length when the handler gave it or has
// finished, else chunked (close-delimited for HTTP/1.0). first is the body
// about to be written, for sniffing a missing Content-Type. With raw, the
// head is raw's, the length is raw's, and nothing is sniffed: a
// transparent hop adds no Content-Type.
func (w *leanResponse) commit(final bool, first []byte, raw *wire.RawHead) {
	w.committed = true
	h := w.header
	if raw != nil {
		delete(h, "Content-Length")
		w.cl = raw.Length
	} else if v := h["Content-Length"]; len(v) > 0 {
		if n, err := strconv.ParseInt(v[0], 10, 64); err == nil && n >= 0 && len(v) == 1 {
			w.cl = n
		} else {
			delete(h, "Content-Length")
		}
	}
	delete(h, "Transfer-Encoding") // the framing is ours
	if w.lc.s.closing.Load() || w.req.Close || wire.HeaderHas(h, "Connection", "close") {
		w.closeAfter = true
	}
	_, trailers := h["Trailer"]
	lengthLine := raw != nil && raw.Length >= 0 && w.status != http.StatusNoContent
	if !w.noBody && w.cl < 0 {
		switch {
		case final && !trailers:
			w.cl, lengthLine = int64(len(w.pending)), true
		case w.req.ProtoAtLeast(1, 1):
			w.chunked = true
		default:
			w.closeAfter = true // HTTP/1.0: the body ends with the connection
		}
	}
	bw := w.lc.bw
	w.writeStatusLine(w.status)
	w.writeFields(true)
	_, date := h["Date"]
	if raw != nil {
		bw.Write(raw.Fields)
		date = date || raw.Date
	}
	if !date {
		bw.WriteString("Date: ")
		bw.WriteString(httpDate())
		bw.WriteString("\r\n")
	}
	if _, ok := h["Content-Type"]; !ok && !w.noBody && raw == nil {
		data := w.pending
		if len(data) == 0 {
			data = first
		}
		if len(data) > 0 {
			bw.WriteString("Content-Type: ")
			bw.WriteString(http.DetectContentType(data))
			bw.WriteString("\r\n")
		}
	}
	if lengthLine {
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(w.lc.bufs.num[:0], w.cl, 10))
		bw.WriteString("\r\n")
	}
	if w.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	switch {
	case w.closeAfter:
		bw.WriteString("Connection: close\r\n")
	case !w.closeAfter && !w.req.ProtoAtLeast(1, 1):
		bw.WriteString("Connection: keep-alive\r\n")
	}
	_, err := bw.WriteString("\r\n")
	w.setErr(err)
	if p := w.pending; len(p) > 0 && err == nil {
		w.pending = nil
		w.writeBody(p)
	}
}

func (w *leanResponse) writeStatusLine(code int) {
	bw := w.lc.bw
	if code < len(statusLines) && statusLines[code] != "" {
		bw.WriteString(statusLines[code])
		return
	}
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(strconv.Itoa(code))
	bw.WriteString(" status code ")
	bw.WriteString(strconv.Itoa(code))
	bw.WriteString("\r\n")
}

// statusLines holds the status line of every code with a name.
var statusLines = func() (l [600]string) {
	for code := range l {
		if text := http.StatusText(code); text != "" {
			l[code] = "HTTP/1.1 " + strconv.Itoa(code) + " " + text + "\r\n"
		}
	}
	return l
}()

// writeFields writes the header fields, less trailers and invalid names, with
// line breaks in values turned to spaces, as net/http does.
func (w *leanResponse) writeFields(final bool) {
	bw := w.lc.bw
	if w.header == nil {
		for _, v := range w.requestID {
			writeField(bw, wire.RequestIDHeader, v)
		}
		return
	}
	for k, vs := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		switch k {
		case "Content-Length":
			if !final || w.status == http.StatusNoContent {
				continue // an informational head or a 204 carries no length
			}
		case "Transfer-Encoding":
			continue // the framing is ours
		case "Connection":
			if final {
				continue // commit writes its own
			}
		}
		for _, v := range vs {
			if strings.ContainsAny(v, "\r\n") {
				v = textproto.TrimString(newlineToSpace.Replace(v))
			}
			writeField(bw, k, v)
		}
	}
}

var newlineToSpace = strings.NewReplacer("\r\n", " ", "\r", " ", "\n", " ")

func writeField(bw *bufio.Writer, name, value string) {
	bw.WriteString(name)
	bw.WriteString(": ")
	bw.WriteString(value)
	bw.WriteString("\r\n")
}

// finish writes what the handler left: the head if it wrote nothing, the
// held-back body, the last chunk and trailers.
func (w *leanResponse) finish() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return
	}
	if !w.committed {
		w.commit(true, nil, nil)
	}
	bw := w.lc.bw
	if w.chunked {
		bw.WriteString("0\r\n")
		for k, vs := range w.header {
			name, ok := strings.CutPrefix(k, http.TrailerPrefix)
			if !ok || !httpguts.ValidHeaderFieldName(name) {
				continue
			}
			for _, v := range vs {
				if httpguts.ValidHeaderFieldValue(v) {
					writeField(bw, name, v)
				}
			}
		}
		for _, decl := range w.header["Trailer"] {
			for _, name := range strings.Split(decl, ",") {
				name = http.CanonicalHeaderKey(textproto.TrimString(name))
				if name == "" || !httpguts.ValidTrailerHeader(name) || !httpguts.ValidHeaderFieldName(name) {
					continue
				}
				for _, v := range w.header[name] {
					if httpguts.ValidHeaderFieldValue(v) {
						writeField(bw, name, v)
					}
				}
			}
		}
		_, err := bw.WriteString("\r\n")
		w.setErr(err)
	}
	if !w.noBody && w.cl >= 0 && w.written != w.cl {
		w.closeAfter = true // short of its length: the sandbox must see the cut
	}
}

// Flush sends what is written so far (streams, server-sent events).
func (w *leanResponse) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed && w.err == nil {
		w.commit(false, nil, nil)
	}
	if w.err == nil {
		w.setErr(w.lc.bw.Flush())
	}
}

// EnableFullDuplex: the lean loop reads the body and writes the response
// independently already.
func (w *leanResponse) EnableFullDuplex() error { return nil }

// SetReadDeadline lets a handler cut the sandbox's upload short.
func (w *leanResponse) SetReadDeadline(t time.Time) error {
	w.lc.rdl = wire.ALongTimeAgo // reset before the next request
	return w.lc.c.SetReadDeadline(t)
}

func (w *leanResponse) SetWriteDeadline(t time.Time) error { return w.lc.c.SetWriteDeadline(t) }

// The Date header changes once a second, so it is formatted once a second
// and shared, not formatted again for every response.
type dateEntry struct {
	sec int64
	val string
}

var dateCache atomic.Pointer[dateEntry]

func httpDate() string {
	now := time.Now()
	if e := dateCache.Load(); e != nil && e.sec == now.Unix() {
		return e.val
	}
	e := &dateEntry{sec: now.Unix(), val: now.UTC().Format(http.TimeFormat)}
	dateCache.Store(e)
	return e.val
}

// headEnd finds the end of a request head in buf: its length and true when
// the blank line is there, -1 when the head is not one the lean loop
// parses (a bare LF, a leading blank line), else 0 and false.
func headEnd(buf []byte) (int, bool) {
	if len(buf) > 0 && (buf[0] == '\r' || buf[0] == '\n') {
		return -1, false
	}
	for i := 0; ; {
		j := bytes.IndexByte(buf[i:], '\n')
		if j < 0 {
			return 0, false
		}
		j += i
		if j == 0 || buf[j-1] != '\r' {
			return -1, false // bare LF: net/http decides
		}
		if j >= 3 && buf[j-2] == '\n' && buf[j-3] == '\r' {
			return j + 1, true
		}
		i = j + 1
	}
}

// parseHead parses a complete request head if it is in the lean loop's
// strict subset; false sends the request to net/http, which accepts or
// refuses it on its own rules.
func parseHead(head []byte, proto *http.Request) (*http.Request, bool) {
	if bytes.Count(head, []byte{'\r'}) != bytes.Count(head, []byte{'\n'}) {
		return nil, false // a CR not ending a line (headEnd saw every LF has one)
	}
	s := string(head[:len(head)-4]) // one allocation: every string below is part of it
	line, rest, _ := strings.Cut(s, "\r\n")
	method, line, ok1 := strings.Cut(line, " ")
	target, version, ok2 := strings.Cut(line, " ")
	if !ok1 || !ok2 || method == "" || method == http.MethodConnect || !httpguts.ValidHeaderFieldName(method) ||
		len(target) == 0 || target[0] != '/' || !validTarget(target) {
		return nil, false
	}
	var minor int
	switch version {
	case "HTTP/1.1":
		minor = 1
	case "HTTP/1.0":
	default:
		return nil, false
	}
	rq := new(requestWithURL) // one allocation for both
	u := &rq.u
	if !plainTarget(target, u) {
		pu, err := url.ParseRequestURI(target)
		if err != nil {
			return nil, false
		}
		u = pu
	}
	n := strings.Count(rest, "\r\n") + 1
	if rest == "" {
		n = 0
	}
	h := make(http.Header, n)
	vals := make([]string, n) // one backing array for the one-value fields
	hosts, lengths := 0, 0
	var host, length string
	for i := 0; rest != ""; i++ {
		line, rest, _ = strings.Cut(rest, "\r\n")
		name, value, ok := strings.Cut(line, ":")
		if !ok || !httpguts.ValidHeaderFieldName(name) { // folded lines start with a space
			return nil, false
		}
		value = textproto.TrimString(value)
		if !httpguts.ValidHeaderFieldValue(value) {
			return nil, false
		}
		key := textproto.CanonicalMIMEHeaderKey(name)
		switch key {
		case "Host":
			hosts++
			host = value
			continue // net/http keeps it in Request.Host only
		case "Content-Length":
			lengths++
			length = value
		case "Transfer-Encoding", "Expect", "Upgrade", "Trailer", "Http2-Settings":
			return nil, false
		}
		if vs := h[key]; vs != nil {
			h[key] = append(vs, value)
		} else {
			vals[i] = value
			h[key] = vals[i : i+1 : i+1]
		}
	}
	if hosts > 1 || (hosts == 0 && minor == 1) || !httpguts.ValidHostHeader(host) || lengths > 1 {
		return nil, false
	}
	var cl int64
	if lengths == 1 {
		var ok bool
		if cl, ok = wire.ParseDecimal(length); !ok { // the sniffer's rule: digits only
			return nil, false
		}
	}
	conn := h["Connection"]
	closing := httpguts.HeaderValuesContainsToken(conn, "close")
	if minor == 0 {
		closing = closing || !httpguts.HeaderValuesContainsToken(conn, "keep-alive")
	}
	r := &rq.r
	*r = *proto // keeps its context
	r.Method, r.URL, r.RequestURI = method, u, target
	r.Proto, r.ProtoMajor, r.ProtoMinor = version, 1, minor
	r.Header, r.Host, r.ContentLength, r.Close = h, host, cl, closing
	return r, true
}

type requestWithURL struct {
	r http.Request
	u url.URL
}

// plainTarget fills u as url.ParseRequestURI would for a target whose path
// needs no unescaping (letters, digits, "-._~/") and whose query, if any,
// is not empty; it reports false for any other, which ParseRequestURI
// parses. Most targets are plain, and ParseRequestURI was a per-request
// cost of its own.
func plainTarget(target string, u *url.URL) bool {
	path, query, hasQuery := strings.Cut(target, "?")
	if hasQuery && query == "" {
		return false // ForceQuery: left to ParseRequestURI
	}
	for i := 0; i < len(path); i++ {
		c := path[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' || c == '/') {
			return false
		}
	}
	u.Path, u.RawQuery = path, query
	return true
}

// validTarget: visible ASCII only.
func validTarget(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// handoffListener is how the lean loop passes a connection to net/http.
type handoffListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
	m    *Metrics
}

func newHandoffListener(m *Metrics) *handoffListener {
	return &handoffListener{ch: make(chan net.Conn), done: make(chan struct{}), m: m}
}

func (l *handoffListener) pass(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		// Counted here, before net/http starts serving it: counted after
		// pass returned, a scrape could see the answer but not the count.
		l.m.handoff()
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *handoffListener) Addr() net.Addr { return handoffAddr{} }

type handoffAddr struct{}

func (handoffAddr) Network() string { return "tcp" }
func (handoffAddr) String() string  { return "interceptd-handoff" }

// prefixConn is a connection whose first reads return what the lean loop
// had already read from it.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
