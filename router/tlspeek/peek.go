package tlspeek

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"time"
)

// The errors Peek returns wrap one of these, so a caller can tell them apart
// with errors.Is; the wrapping text says what exactly was wrong.
var (
	// ErrNotTLS is returned when the connection's first byte is not the
	// start of a TLS handshake record: some other protocol (plain HTTP, SSH,
	// an SSLv2-style hello) is on the port, and the caller decides by
	// address. The returned conn replays what was read.
	ErrNotTLS = errors.New("not a TLS handshake")
	// ErrMalformed is returned when the bytes start as TLS but are not a
	// well-formed ClientHello: a bad record header, a record that is not a
	// handshake record after the first, a handshake message that is not a
	// ClientHello, a field that overruns its vector, a duplicate extension,
	// a server name with bytes no host name has. A connection that ends
	// before the whole hello arrived is malformed too, and the error then
	// also wraps io.ErrUnexpectedEOF (io.EOF if no byte came at all).
	ErrMalformed = errors.New("malformed ClientHello")
	// ErrTooLarge is returned when the ClientHello's handshake message is
	// longer than MaxHelloSize.
	ErrTooLarge = errors.New("ClientHello too large")
	// ErrTimeout is returned when the timeout given to Peek passed before
	// the whole ClientHello arrived; the error also wraps the read's own
	// (os.ErrDeadlineExceeded). A protocol in which the server speaks first
	// ends here with nothing read: the caller decides by address.
	ErrTimeout = errors.New("timed out before the whole ClientHello arrived")
)

// MaxHelloSize bounds the ClientHello's handshake message, its four-byte
// header included. Real hellos, post-quantum key shares and all, stay
// under 2 KiB; the bound keeps what one connection can make Peek buffer
// small: at most one byte of handshake in each five-byte-framed record
// means at most 6×MaxHelloSize bytes of records, plus one read's overshoot.
const MaxHelloSize = 16 << 10

const (
	recordHeaderLen     = 5
	recordTypeHandshake = 22
	maxRecordLen        = 1 << 14 // TLSPlaintext.length (RFC 8446 section 5.1)
	handshakeHeaderLen  = 4
	typeClientHello     = 1

	// firstRead is the buffer's first size: enough for a typical hello and
	// a little more in one read.
	firstRead = 4 << 10
	// maxBuffered backs up the bound above: Peek never holds more.
	maxBuffered = 6*MaxHelloSize + recordHeaderLen + maxRecordLen + firstRead
)

// Peek reads the ClientHello from the start of c, which must not have been
// read from yet, and returns what it says and a connection to use in c's
// place. The hello may come in several TLS records and TCP segments; Peek
// reads until it has all of it, or until timeout, and then clears the read
// deadline it set. With a timeout of zero or less it sets none, and a
// deadline the caller set on c applies (and stays).
//
// The returned conn is never nil, also on error (so that the caller can
// still forward a connection it decided by address): it replays every byte
// Peek read from c, the hello and anything the client sent after it in the
// same reads, and then reads on from c (when nothing was read, it is c
// itself). Its writes, deadlines, addresses and
// Close are c's. So that io.Copy keeps the kernel's zero-copy path, it
// implements io.WriterTo (the replayed bytes first, then io.Copy from c, so
// a *net.TCPConn source splices into a *net.TCPConn destination) and
// io.ReaderFrom (handed to c's own), and CloseWrite for half-closing a
// splice. It has no Unwrap: reading c directly would skip the replayed bytes;
// c itself stays the caller's for socket options.
//
// Errors wrap ErrNotTLS, ErrMalformed, ErrTooLarge or ErrTimeout; a read
// that failed otherwise is wrapped as it came. On error the Hello is zero.
func Peek(c net.Conn, timeout time.Duration) (Hello, net.Conn, error) {
	if timeout > 0 {
		if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			return Hello{}, c, fmt.Errorf("setting the read deadline: %w", err)
		}
		defer c.SetReadDeadline(time.Time{})
	}
	var p peeker
	p.buf = (*bufs.Get().(*[]byte))[:0]
	h, err := p.run(c)
	if err != nil {
		h = Hello{} // what was read before the fault is no answer
	}
	if len(p.buf) == 0 {
		Release(p.buf)
		return h, c, err
	}
	return h, &replayConn{Conn: c, buf: p.buf}, err
}

// bufs holds Peek's first buffers (firstRead bytes), given back by
// Release: a passed-through connection's hello is written once and done
// with, and a buffer per connection was most of what the front allocated
// for one.
var bufs = sync.Pool{New: func() any { b := make([]byte, firstRead); return &b }}

// Release gives back the bytes Unwrap returned, once they are written and
// no longer needed, for a later Peek to reuse; neither they nor anything
// sharing their array may be used afterwards. Only a buffer Peek made and
// did not grow is kept; Release(nil) does nothing.
func Release(pending []byte) {
	if cap(pending) != firstRead {
		return
	}
	b := pending[:0]
	bufs.Put(&b)
}

// peeker reassembles the handshake stream from the records read so far.
type peeker struct {
	buf []byte // every byte read from the connection
	off int    // where the first record not yet taken starts in buf
	hs  []byte // handshake bytes from the records taken, when more than one was needed
}

func (p *peeker) run(c net.Conn) (Hello, error) {
	for {
		h, done, err := p.advance()
		if done || err != nil {
			return h, err
		}
		if len(p.buf) == cap(p.buf) {
			if cap(p.buf) >= maxBuffered {
				return Hello{}, fmt.Errorf("%w: %d bytes read without a whole ClientHello", ErrTooLarge, len(p.buf))
			}
			p.buf = slices.Grow(p.buf, min(cap(p.buf), maxBuffered-cap(p.buf)))
		}
		n, rerr := c.Read(p.buf[len(p.buf):cap(p.buf)])
		p.buf = p.buf[:len(p.buf)+n]
		if rerr == nil {
			continue
		}
		// What came with the error may finish the hello.
		if h, done, err := p.advance(); done || err != nil {
			return h, err
		}
		return Hello{}, p.readError(rerr)
	}
}

func (p *peeker) readError(err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("%w (%d bytes read): %w", ErrTimeout, len(p.buf), err)
	case errors.Is(err, io.EOF) && len(p.buf) == 0:
		return fmt.Errorf("%w: the connection closed before its first byte: %w", ErrMalformed, io.EOF)
	case errors.Is(err, io.EOF):
		return fmt.Errorf("%w: the connection closed after %d bytes, inside the ClientHello: %w", ErrMalformed, len(p.buf), io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("reading the ClientHello: %w", err)
}

// advance takes every whole record in buf and, once the handshake stream
// holds the whole ClientHello, parses it. It says done when it has.
func (p *peeker) advance() (Hello, bool, error) {
	if len(p.buf) > 0 && p.buf[0] != recordTypeHandshake {
		return Hello{}, false, fmt.Errorf("%w: first byte %#02x", ErrNotTLS, p.buf[0])
	}
	for {
		rec := p.buf[p.off:]
		if len(rec) >= 1 && rec[0] != recordTypeHandshake {
			return Hello{}, false, malformed("record type %d inside the ClientHello", rec[0])
		}
		if len(rec) >= 2 && rec[1] != 3 {
			return Hello{}, false, malformed("record version %d.x, not 3.x", rec[1])
		}
		if len(rec) < recordHeaderLen {
			return Hello{}, false, nil
		}
		n := int(rec[3])<<8 | int(rec[4])
		switch {
		case n == 0:
			// RFC 8446 section 5.1 forbids them; allowing them would let a
			// client make Peek read without end.
			return Hello{}, false, malformed("empty handshake record")
		case n > maxRecordLen:
			return Hello{}, false, malformed("record of %d bytes, over the %d limit", n, maxRecordLen)
		case len(rec) < recordHeaderLen+n:
			return Hello{}, false, nil
		}
		frag := rec[recordHeaderLen : recordHeaderLen+n]
		p.off += recordHeaderLen + n
		stream := frag
		if p.hs != nil || !wholeMessage(frag) {
			// The common hello fits one record and is parsed where it lies;
			// only a split one is copied together.
			p.hs = append(p.hs, frag...)
			stream = p.hs
		}
		if len(stream) < handshakeHeaderLen {
			continue
		}
		if stream[0] != typeClientHello {
			return Hello{}, false, malformed("handshake message type %d, not a ClientHello", stream[0])
		}
		size := handshakeHeaderLen + (int(stream[1])<<16 | int(stream[2])<<8 | int(stream[3]))
		if size > MaxHelloSize {
			return Hello{}, false, fmt.Errorf("%w: %d bytes, over the %d limit", ErrTooLarge, size, MaxHelloSize)
		}
		if len(stream) < size {
			continue
		}
		// Handshake bytes after the hello are not Peek's to judge: they are
		// replayed like the rest, and the server will.
		h, err := parseHello(stream[handshakeHeaderLen:size])
		return h, err == nil, err
	}
}

// wholeMessage says whether b holds a whole handshake message.
func wholeMessage(b []byte) bool {
	if len(b) < handshakeHeaderLen {
		return false
	}
	return len(b) >= handshakeHeaderLen+(int(b[1])<<16|int(b[2])<<8|int(b[3]))
}
