package tlsfront

import (
	"io"
	"math"
	"net"
	"sync"
	"syscall"

	"github.com/interceptd/interceptd/router/tlspeek"
	"golang.org/x/sys/unix"
)

// passFirst is how much of the sandbox's direction of a passed-through
// connection (to the upstream) is copied by plain reads and writes before
// splice(2) takes over. A TLS handshake, a request and a small answer fit:
// for such small chunks a splice (into a pipe and out of it, a pipe from
// the pool) costs the daemon more than a read and a write, and most
// connections end before any bulk.
const passFirst = 64 << 10

// toSandboxFirst is the same for the upstream's direction (to the
// sandbox): all of it, never spliced. The receiver of that direction is a
// process in the sandbox, on this host, and spliced pages cost it more
// than copied ones: in bench/run's 1 GiB download curl spent 2.6-2.8 ms of
// CPU per MiB received through a splice against 2.2-2.3 copied (2.0
// direct), and the download ran at 0.70-0.74× direct against 0.81-0.82×
// (HAProxy, which copies, 0.81-0.92×). The daemon's own CPU per MiB goes
// from about 0.45-1.1 ms to 1.4-1.5, HAProxy's figure; the two together are
// about what they were. The sandbox's direction keeps the splice: its
// receiver is mostly a remote server, which gets the segments rebuilt by
// the wire whatever the pages they came from.
const toSandboxFirst = math.MaxInt64

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
// firstIn and firstOut are how many bytes of each direction, to the
// upstream and to the client, are copied by reads and writes before
// splice(2) takes over (passFirst and toSandboxFirst; the tests and the
// benchmark compare others).
func splice(rc, client, up net.Conn, m *Metrics, firstIn, firstOut int64) (in, out int64) {
	hello, src := tlspeek.Unwrap(rc)
	done := make(chan struct{})
	go func() {
		defer close(done)
		n, err := pump(up, src, hello, firstIn)
		in = n
		m.bytes("in", n)
		if err != nil {
			up.Close()
			client.Close()
			return
		}
		closeWrite(up)
	}()
	n, err := pump(client, up, nil, firstOut)
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
