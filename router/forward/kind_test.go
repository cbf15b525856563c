package forward

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/interceptd/interceptd/router/wire"
)

// The half of router/wire's "a write to a reset connection fails as a
// reset" that names the kind: wire's tests cannot import this package.
func TestAWriteToAResetRawConnectionIsCalledAReset(t *testing.T) {
	ln := loopbackListener(t)
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	r := wire.NewRawIO(c)
	if r == nil {
		t.Fatal("a TCP connection has no raw I/O")
	}
	peer.(*net.TCPConn).SetLinger(0)
	peer.Close()
	time.Sleep(20 * time.Millisecond)
	for i := 0; i < 3 && err == nil; i++ { // the reset may come with the first write's answer
		_, err = r.Write([]byte("x"))
		time.Sleep(10 * time.Millisecond)
	}
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("got %v, want a reset or broken pipe from write", err)
	}
	if k := ErrorKind(err); k != "reset" {
		t.Fatalf("forwarding would call it %q, not a reset", k)
	}
}
