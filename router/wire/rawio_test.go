package wire

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection, the first one
// wrapped in RawIO.
func tcpPair(t *testing.T) (*RawIO, *net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); peer.Close() })
	r := NewRawIO(c)
	if r == nil {
		t.Fatal("a TCP connection has no raw I/O")
	}
	return r, c.(*net.TCPConn), peer.(*net.TCPConn)
}

func TestRawIOBehavesAsTheConnectionWould(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, r *RawIO, c, peer *net.TCPConn)
	}{
		{"a read returns what the peer sent, then the end", func(t *testing.T, r *RawIO, c, peer *net.TCPConn) {
			peer.Write([]byte("hello"))
			peer.Close()
			got, err := io.ReadAll(r)
			if err != nil || string(got) != "hello" {
				t.Fatalf("read %q, %v", got, err)
			}
		}},
		{"a read waits for data that comes later", func(t *testing.T, r *RawIO, c, peer *net.TCPConn) {
			time.AfterFunc(20*time.Millisecond, func() { peer.Write([]byte("late")) })
			b := make([]byte, 16)
			n, err := r.Read(b)
			if err != nil || string(b[:n]) != "late" {
				t.Fatalf("read %q, %v", b[:n], err)
			}
		}},
		{"a read past the deadline times out", func(t *testing.T, r *RawIO, c, peer *net.TCPConn) {
			c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			_, err := r.Read(make([]byte, 1))
			var ne net.Error
			if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("got %v, want a timeout", err)
			}
		}},
		{"closing the connection wakes a waiting reader", func(t *testing.T, r *RawIO, c, peer *net.TCPConn) {
			time.AfterFunc(20*time.Millisecond, func() { c.Close() })
			if _, err := r.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("got %v, want net.ErrClosed", err)
			}
		}},
		{"a write larger than the socket buffers waits for room and sends it all", func(t *testing.T, r *RawIO, c, peer *net.TCPConn) {
			c.SetWriteBuffer(4096)
			want := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
			got := make(chan []byte, 1)
			go func() {
				time.Sleep(20 * time.Millisecond) // the writer fills the buffers first
				b, _ := io.ReadAll(peer)
				got <- b
			}()
			n, err := r.Write(want)
			if err != nil || n != len(want) {
				t.Fatalf("wrote %d, %v", n, err)
			}
			c.CloseWrite()
			if b := <-got; !bytes.Equal(b, want) {
				t.Fatalf("peer read %d bytes, not the %d written", len(b), len(want))
			}
		}},
		{"a write to a reset connection fails as a reset", func(t *testing.T, r *RawIO, c, peer *net.TCPConn) {
			peer.SetLinger(0)
			peer.Close()
			time.Sleep(20 * time.Millisecond)
			var err error
			for i := 0; i < 3 && err == nil; i++ { // the reset may come with the first write's answer
				_, err = r.Write([]byte("x"))
				time.Sleep(10 * time.Millisecond)
			}
			var oe *net.OpError
			if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) || !errors.As(err, &oe) || oe.Op != "write" {
				t.Fatalf("got %v, want a reset or broken pipe from write", err)
			}
			// Forwarding calls this a reset (forward.ErrorKind, which this
			// package's tests cannot import: forward imports wire) when,
			// besides the reset or broken pipe above, nothing it checks
			// first matches: a certificate that did not verify, a refusal.
			var cv *tls.CertificateVerificationError
			if errors.As(err, &cv) || errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("forwarding would not call %v a reset", err)
			}
		}},
		{"a read and a write at once keep to their own buffers", func(t *testing.T, r *RawIO, c, peer *net.TCPConn) {
			go io.Copy(peer, peer) // an echo
			want := bytes.Repeat([]byte("abcdefgh"), 32<<10)
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for p := want; len(p) > 0; p = p[min(len(p), 1000):] {
					if _, err := r.Write(p[:min(len(p), 1000)]); err != nil {
						t.Error(err)
						return
					}
				}
			}()
			got := make([]byte, len(want))
			if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("echo came back different (%v)", err)
			}
			wg.Wait()
		}},
		{"a flush then await sends the request and returns when the answer is there", func(t *testing.T, r *RawIO, c, peer *net.TCPConn) {
			go func() {
				b := make([]byte, 3)
				io.ReadFull(peer, b)
				time.Sleep(20 * time.Millisecond)
				peer.Write(append(b, '!'))
			}()
			bw := bufio.NewWriter(r)
			bw.WriteString("req")
			if err := r.FlushThenAwait(bw); err != nil {
				t.Fatal(err)
			}
			// It is there: a peek that does not wait finds it. (A read
			// with a deadline of a millisecond failed whenever a busy
			// machine let the millisecond pass before the read.)
			b := make([]byte, 8)
			var n int
			var err error
			rc, _ := c.SyscallConn()
			rc.Control(func(fd uintptr) { n, _, err = syscall.Recvfrom(int(fd), b, syscall.MSG_PEEK|syscall.MSG_DONTWAIT) })
			if err != nil || string(b[:n]) != "req!" {
				t.Fatalf("after the wait, %q was there (%v), want req!", b[:max(n, 0)], err)
			}
			if n, err := r.Read(b); err != nil || string(b[:n]) != "req!" {
				t.Fatalf("after the wait, read %q, %v", b[:n], err)
			}
		}},
		{"a flush then await gives up at the deadline", func(t *testing.T, r *RawIO, c, peer *net.TCPConn) {
			c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			bw := bufio.NewWriter(r)
			bw.WriteString("req")
			if err := r.FlushThenAwait(bw); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("got %v, want a timeout", err)
			}
		}},
		{"a flush then await to a reset connection fails as the write", func(t *testing.T, r *RawIO, c, peer *net.TCPConn) {
			peer.SetLinger(0)
			peer.Close()
			time.Sleep(20 * time.Millisecond)
			var err error
			for i := 0; i < 3 && err == nil; i++ {
				bw := bufio.NewWriter(r)
				bw.WriteString("req")
				err = r.FlushThenAwait(bw)
			}
			if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
				t.Fatalf("got %v, want a reset or broken pipe", err)
			}
		}},
		{"an empty read or write does nothing", func(t *testing.T, r *RawIO, c, peer *net.TCPConn) {
			if n, err := r.Read(nil); n != 0 || err != nil {
				t.Fatalf("read %d, %v", n, err)
			}
			if n, err := r.Write(nil); n != 0 || err != nil {
				t.Fatalf("wrote %d, %v", n, err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, c, peer := tcpPair(t)
			tt.run(t, r, c, peer)
		})
	}
}

func TestRawPeekSaysWhetherSomethingIsWaiting(t *testing.T) {
	r, _, peer := tcpPair(t)
	var b [1]byte
	peek := func() (ready bool) {
		r.rc.Read(func(fd uintptr) bool { ready = Peek(fd, b[:]); return true })
		return ready
	}
	if peek() {
		t.Fatal("nothing sent, yet the peek saw something")
	}
	peer.Write([]byte("x"))
	time.Sleep(10 * time.Millisecond)
	if !peek() || !peek() {
		t.Fatal("a byte waits, yet the peek saw nothing (or took it)")
	}
	if n, _ := r.Read(b[:]); n != 1 || b[0] != 'x' {
		t.Fatalf("the byte peeked at was not there to read: %q", b[:n])
	}
	peer.Close()
	time.Sleep(10 * time.Millisecond)
	if !peek() {
		t.Fatal("the peer closed, yet the peek saw nothing")
	}
}

func TestAConnectionWithoutADescriptorHasNoRawIO(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if NewRawIO(a) != nil {
		t.Fatal("a pipe got raw I/O")
	}
}
