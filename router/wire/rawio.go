package wire

import (
	"bufio"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// RawIO reads and writes a socket with system calls the Go scheduler is not
// told about, through the connection's poller as net.Conn does (deadlines,
// waiting for readiness, Close waking a waiter).
//
// Why: a read or write on a non-blocking socket never waits, but on a veth
// a write also delivers the segment to the receiving socket and wakes its
// reader, which takes long enough that, announced to the scheduler (as
// net.Conn does), the call often spans two of sysmon's 20 µs ticks; sysmon
// then hands the goroutine's processor to another thread (waking one,
// which the returning thread must then give it back from) and keeps
// ticking to do it again: thread wake-ups, futex sleeps and sysmon's own
// nanosleeps on every forward (the perf figures are in bench/README.md).
// Not announcing a call that cannot block keeps the
// processor with its goroutine; goroutines queued behind it are stolen by
// an idle processor as usual.
type RawIO struct {
	rc   syscall.RawConn
	conn net.Conn // for the addresses in errors
	rd   rawOp
	wr   rawOp

	// FlushThenAwait's call in progress (under rd.mu).
	bw      *bufio.Writer
	sent    bool
	sendErr error
	awaitFn func(uintptr) bool // r.await: made once
}

// rawOp is one direction's call in progress. Its mutex makes concurrent
// callers take turns (as net.Conn's own lock does), so that one's buffer
// is never another's.
type rawOp struct {
	mu    sync.Mutex
	p     []byte
	n     int
	errno syscall.Errno
	fn    func(uintptr) bool // RawIO.read or RawIO.write: made once, not per call
}

// NewRawIO returns c's raw I/O, or nil if c has no descriptor.
func NewRawIO(c net.Conn) *RawIO {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &RawIO{rc: rc, conn: c}
	r.rd.fn, r.wr.fn, r.awaitFn = r.read, r.write, r.await
	return r
}

// Read reads as net.Conn's Read does: at least one byte, io.EOF at the end.
func (r *RawIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	op := &r.rd
	op.mu.Lock()
	defer op.mu.Unlock()
	op.p, op.n, op.errno = p, 0, 0
	err := r.rc.Read(op.fn)
	op.p = nil
	switch {
	case err != nil:
		return 0, err
	case op.errno != 0:
		return 0, r.opError("read", op.errno)
	case op.n == 0:
		return 0, io.EOF
	}
	return op.n, nil
}

func (r *RawIO) read(fd uintptr) bool {
	op := &r.rd
	n, e := sysIO(syscall.SYS_READ, fd, op.p)
	switch e {
	case 0:
		op.n = n
	case syscall.EAGAIN:
		return false // wait for readiness, then again
	default:
		op.errno = e
	}
	return true
}

// sysIO makes one read or write system call on p, again if a signal
// interrupted it.
func sysIO(trap, fd uintptr, p []byte) (int, syscall.Errno) {
	for {
		n, _, e := syscall.RawSyscall(trap, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e != syscall.EINTR {
			return int(n), e
		}
	}
}

// Write writes all of p, as net.Conn's Write does, waiting for room in the
// socket's buffer when there is none.
func (r *RawIO) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	op := &r.wr
	op.mu.Lock()
	defer op.mu.Unlock()
	op.p, op.n, op.errno = p, 0, 0
	err := r.rc.Write(op.fn)
	n := op.n
	op.p = nil
	switch {
	case err != nil:
		return n, err
	case op.errno != 0:
		return n, r.opError("write", op.errno)
	}
	return n, nil
}

func (r *RawIO) write(fd uintptr) bool {
	op := &r.wr
	for op.n < len(op.p) {
		n, e := sysIO(syscall.SYS_WRITE, fd, op.p[op.n:])
		switch e {
		case 0:
			op.n += n
		case syscall.EAGAIN:
			return false // wait for room, then the rest
		default:
			op.errno = e
			return true
		}
	}
	return true
}

// FlushThenAwait flushes bw, a request whose answer cannot come before
// it is sent, and waits until the answer (or an end, or an error) is there
// to read. The poller's readiness is reset before the request goes, so the
// answer's arrival is not missed, and no read is spent finding nothing yet:
// one system call less per exchange than a flush and a read. Bytes that
// were waiting before the request (which a peer should not send) do not
// end the wait; the answer does.
func (r *RawIO) FlushThenAwait(bw *bufio.Writer) error {
	r.rd.mu.Lock()
	defer r.rd.mu.Unlock()
	r.bw, r.sent, r.sendErr = bw, false, nil
	err := r.rc.Read(r.awaitFn)
	r.bw = nil
	if r.sendErr != nil {
		return r.sendErr
	}
	return err
}

func (r *RawIO) await(uintptr) bool {
	if r.sent {
		return true // readable: the read that follows takes it
	}
	r.sent = true
	r.sendErr = r.bw.Flush()
	return r.sendErr != nil // sent: now wait
}

// Peek reports whether fd has data, an end or an error waiting, without
// taking it.
func Peek(fd uintptr, b []byte) (ready bool) {
	_, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return e != syscall.EAGAIN
}

func (r *RawIO) opError(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: r.conn.LocalAddr(), Addr: r.conn.RemoteAddr(),
		Err: os.NewSyscallError(op, errno)}
}
