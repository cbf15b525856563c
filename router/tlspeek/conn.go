package tlspeek

import (
	"fmt"
	"io"
	"net"
)

// replayConn is the connection Peek returns: the bytes it read, then c.
//
// Only the reading side is touched; Write and the rest are c's, so reads and
// writes may run on different goroutines as on any net.Conn. Reads, like
// those of any net.Conn, are one goroutine's at a time.
type replayConn struct {
	net.Conn
	buf []byte // read from c by Peek and not yet replayed
}

func (r *replayConn) Read(b []byte) (int, error) {
	if len(r.buf) == 0 {
		return r.Conn.Read(b)
	}
	n := copy(b, r.buf)
	r.drop(n)
	return n, nil
}

// drop forgets the first n replayed bytes, and the buffer once it is empty.
func (r *replayConn) drop(n int) {
	r.buf = r.buf[n:]
	if len(r.buf) == 0 {
		r.buf = nil
	}
}

// WriteTo writes the replayed bytes to w and then hands the rest to io.Copy
// from c, so that io.Copy(upstream, conn) splices between two TCP sockets
// once the hello is through.
func (r *replayConn) WriteTo(w io.Writer) (int64, error) {
	var n int64
	if len(r.buf) > 0 {
		m, err := w.Write(r.buf)
		n += int64(m)
		r.drop(m)
		if err == nil && len(r.buf) > 0 {
			err = io.ErrShortWrite
		}
		if err != nil {
			return n, err
		}
	}
	m, err := io.Copy(w, r.Conn)
	return n + m, err
}

// ReadFrom hands src to c's own ReadFrom (a *net.TCPConn splices from
// another), so that io.Copy(conn, upstream) keeps the zero-copy path.
func (r *replayConn) ReadFrom(src io.Reader) (int64, error) {
	if rf, ok := r.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(writerOnly{r.Conn}, src)
}

// CloseWrite half-closes c, for a splice whose other side finished sending.
func (r *replayConn) CloseWrite() error {
	if cw, ok := r.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("closing the write side: %T cannot", r.Conn)
}

// Unwrap hands over what a conn Peek returned still holds: the bytes it
// would replay and the connection it reads on from after them (for a conn
// Peek did not wrap, nil and c itself). A caller that copies by its own
// system calls (a splice, a read straight from the socket) takes them so;
// c must not be read from afterwards.
func Unwrap(c net.Conn) (pending []byte, rest net.Conn) {
	r, ok := c.(*replayConn)
	if !ok {
		return nil, c
	}
	pending = r.buf
	r.buf = nil
	return pending, r.Conn
}

// writerOnly hides everything but Write, so that io.Copy does not come back
// to ReadFrom.
type writerOnly struct{ io.Writer }

var (
	_ io.WriterTo   = (*replayConn)(nil)
	_ io.ReaderFrom = (*replayConn)(nil)
)
