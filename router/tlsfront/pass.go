package tlsfront

import (
	"io"
	"net"
	"sync"
	"syscall"

	"github.com/interceptd/interceptd/router/tlspeek"
	"golang.org/x/sys/unix"
)

// passFirst is how much of each direction of a passed-through connection
// is copied by plain reads and writes before splice(2) takes over. A TLS
// handshake, a request and a small answer fit: for such small chunks a
// splice (into a pipe and out of it, a pipe from the pool) costs the daemon
// more than a read and a write, and most connections end before any bulk.
const passFirst = 64 << 10

// copyBuf is the size of the pooled buffers of the first bytes: a whole
// TLS record (16 KiB and its framing) fits.
const copyBuf = 32 << 10

// copyBufs holds the buffers of the first bytes. A buffer is taken when a
// read is about to happen and given back after the write, never held while
// a connection waits: idle connections hold none.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBuf); return &b }}

// splice copies both ways until both sides are done: client (read through
// rc, which replays the hello first) to up, and up to client. When one side
// finishes sending, the other's write side is half-closed so that the end
// passes through; an error on either cuts both. in is what the client sent,
// out what it got.
//
// first is how many bytes of each direction are copied by reads and writes
// before splice(2) takes over (passFirst; the tests and the benchmark
// compare others).
func splice(rc, client, up net.Conn, m *Metrics, first int64) (in, out int64) {
	hello, src := tlspeek.Unwrap(rc)
	done := make(chan struct{})
	go func() {
		defer close(done)
		n, err := pump(up, src, hello, first)
		in = n
		m.bytes("in", n)
		if err != nil {
			up.Close()
			client.Close()
			return
		}
		closeWrite(up)
	}()
	n, err := pump(client, up, nil, first)
	out = n
	m.bytes("out", n)
	if err != nil {
		up.Close()
		client.Close()
	} else {
		closeWrite(client)
	}
	<-done
	client.Close()
	up.Close()
	return in, out
}

// pump writes pending to dst (and gives it back to tlspeek) and then copies
// src to dst until src's end (nil) or an error: up to first bytes by reads
// and writes, the rest by io.Copy, which splices between two TCP sockets.
func pump(dst, src net.Conn, pending []byte, first int64) (int64, error) {
	var n int64
	if len(pending) > 0 {
		w, err := dst.Write(pending)
		tlspeek.Release(pending)
		n += int64(w)
		if err != nil {
			return n, err
		}
	}
	read := readFunc(src)
	for n < first {
		bp, r, err := read()
		if r > 0 {
			w, werr := dst.Write((*bp)[:r])
			n += int64(w)
			if werr != nil {
				err = werr
			}
		}
		if bp != nil {
			copyBufs.Put(bp)
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	m, err := io.Copy(dst, src)
	return n + m, err
}

// readFunc returns what reads src into a pooled buffer: straight from the
// socket through its RawConn, so that the buffer is taken only once data is
// there, or by src.Read for a connection without one (tests' pipes). A
// read returns the buffer (nil if none was taken), the bytes read, and
// io.EOF at the end.
func readFunc(src net.Conn) func() (*[]byte, int, error) {
	sc, ok := src.(syscall.Conn)
	var raw syscall.RawConn
	if ok {
		var err error
		if raw, err = sc.SyscallConn(); err != nil {
			ok = false
		}
	}
	if !ok {
		return func() (*[]byte, int, error) {
			bp := copyBufs.Get().(*[]byte)
			r, err := src.Read(*bp)
			return bp, r, err
		}
	}
	return func() (*[]byte, int, error) {
		var bp *[]byte
		var r int
		var rerr error
		err := raw.Read(func(fd uintptr) bool {
			bp = copyBufs.Get().(*[]byte)
			for {
				r, rerr = unix.Read(int(fd), *bp)
				if rerr != unix.EINTR {
					break
				}
			}
			if rerr == unix.EAGAIN {
				// Nothing yet: give the buffer back while waiting.
				copyBufs.Put(bp)
				bp = nil
				return false
			}
			return true
		})
		switch {
		case err != nil:
			// The connection was closed (Close, or the other direction's
			// error).
			return bp, 0, err
		case rerr != nil:
			return bp, 0, &net.OpError{Op: "read", Net: "tcp", Source: src.LocalAddr(), Addr: src.RemoteAddr(), Err: rerr}
		case r == 0:
			return bp, 0, io.EOF
		}
		return bp, r, nil
	}
}
