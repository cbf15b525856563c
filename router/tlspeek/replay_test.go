package tlspeek_test

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/interceptd/interceptd/router/tlspeek"
)

// pipe is a connected pair of loopback TCP connections, closed at cleanup.
func pipe(t testing.TB) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// TestAHandshakeThroughPeekCompletes puts Peek in front of a real TLS
// server: the client, which knows nothing of it, must finish its handshake,
// verify the server's certificate, agree on ALPN and carry data both ways.
func TestAHandshakeThroughPeekCompletes(t *testing.T) {
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			cert, pool := testCert(t, "api.test.internal")
			client, server := pipe(t)
			type result struct {
				hello tlspeek.Hello
				err   error
			}
			done := make(chan result, 1)
			go func() {
				h, conn, err := tlspeek.Peek(server, 5*time.Second)
				if err != nil {
					done <- result{h, err}
					return
				}
				s := tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}})
				buf := make([]byte, 4)
				if _, err := io.ReadFull(s, buf); err != nil {
					done <- result{h, fmt.Errorf("server read: %w", err)}
					return
				}
				if _, err := s.Write([]byte("pong:" + string(buf))); err != nil {
					done <- result{h, fmt.Errorf("server write: %w", err)}
					return
				}
				done <- result{h, s.Close()}
			}()
			c := tls.Client(client, &tls.Config{ServerName: "api.test.internal", RootCAs: pool, MaxVersion: v, NextProtos: []string{"h2", "http/1.1"}})
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(c)
			if err != nil || string(got) != "pong:ping" {
				t.Fatalf("client read %q (%v)", got, err)
			}
			if st := c.ConnectionState(); st.Version != v || st.NegotiatedProtocol != "h2" {
				t.Errorf("negotiated %s with ALPN %q", tls.VersionName(st.Version), st.NegotiatedProtocol)
			}
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			want := tlspeek.Hello{ServerName: "api.test.internal", ALPN: []string{"h2", "http/1.1"}, Versions: []uint16{tls.VersionTLS12}}
			if v == tls.VersionTLS13 {
				want.Versions = []uint16{tls.VersionTLS13, tls.VersionTLS12}
			}
			if !reflect.DeepEqual(r.hello, want) {
				t.Errorf("peeked %+v, want %+v", r.hello, want)
			}
		})
	}
}

// readFromRecorder is a destination that says what io.Copy gave its
// ReadFrom, as a *net.TCPConn destination's would splice from.
type readFromRecorder struct {
	bytes.Buffer
	srcs []string
}

func (r *readFromRecorder) ReadFrom(src io.Reader) (int64, error) {
	r.srcs = append(r.srcs, fmt.Sprintf("%T", src))
	return r.Buffer.ReadFrom(src)
}

// TestIOCopyHandsTheSocketOnAfterTheReplay holds WriteTo to its promise:
// after the replayed bytes, the destination's ReadFrom gets the socket
// itself (which a *net.TCPConn destination splices from), not a reader that
// copies through user space.
func TestIOCopyHandsTheSocketOnAfterTheReplay(t *testing.T) {
	raw := captureHello(t, &tls.Config{ServerName: "bulk.example"})
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	client, server := pipe(t)
	go func() {
		client.Write(raw)
		client.Write(payload)
		client.CloseWrite()
	}()
	h, conn, err := tlspeek.Peek(server, 5*time.Second)
	if err != nil || h.ServerName != "bulk.example" {
		t.Fatalf("peeked %+v, %v", h, err)
	}
	var dst readFromRecorder
	n, err := io.Copy(&dst, conn)
	if err != nil || n != int64(len(raw)+len(payload)) || !bytes.Equal(dst.Bytes(), append(raw, payload...)) {
		t.Fatalf("copied %d bytes (%v), sent %d", n, err, len(raw)+len(payload))
	}
	if len(dst.srcs) != 1 || !strings.HasPrefix(strings.TrimPrefix(dst.srcs[0], "*"), "net.") {
		t.Errorf("ReadFrom got %v, want the net package's socket", dst.srcs)
	}
}

// TestASpliceThroughPeekCarriesBothWays runs the passthrough as the daemon
// will: Peek, then io.Copy each way between the client's connection and an
// upstream one, half-closing as each side ends.
func TestASpliceThroughPeekCarriesBothWays(t *testing.T) {
	raw := captureHello(t, &tls.Config{ServerName: "up.example"})
	up := make([]byte, 3<<20)
	down := make([]byte, 2<<20)
	rand.Read(up)
	rand.Read(down)
	client, front := pipe(t)
	back, upstream := pipe(t)

	var wg sync.WaitGroup
	var toUpstream, toClient []byte
	wg.Add(4)
	go func() { defer wg.Done(); client.Write(raw); client.Write(up); client.CloseWrite() }()
	go func() { defer wg.Done(); toClient, _ = io.ReadAll(client) }()
	go func() { defer wg.Done(); upstream.Write(down); upstream.CloseWrite() }()
	go func() { defer wg.Done(); toUpstream, _ = io.ReadAll(upstream) }()

	_, conn, err := tlspeek.Peek(front, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	splice := make(chan error, 2)
	go func() {
		_, err := io.Copy(back, conn)
		back.CloseWrite()
		splice <- err
	}()
	go func() {
		_, err := io.Copy(conn, back)
		conn.(interface{ CloseWrite() error }).CloseWrite()
		splice <- err
	}()
	for range 2 {
		if err := <-splice; err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if !bytes.Equal(toUpstream, append(raw, up...)) {
		t.Errorf("upstream got %d bytes, client sent %d", len(toUpstream), len(raw)+len(up))
	}
	if !bytes.Equal(toClient, down) {
		t.Errorf("client got %d bytes, upstream sent %d", len(toClient), len(down))
	}
}

// TestUnwrapHandsOverTheReplayAndReleaseLetsTheNextPeekStartAfresh: Unwrap
// gives the bytes Peek read and the socket under them, after which the conn
// replays nothing; a released buffer that a later Peek reuses holds that
// connection's bytes only.
func TestUnwrapHandsOverTheReplayAndReleaseLetsTheNextPeekStartAfresh(t *testing.T) {
	for i, name := range []string{"first.test", "second-with-a-longer-name.test", "third.test"} {
		client, server := pipe(t)
		sent := make(chan []byte, 1)
		go func() {
			// What a client sends first, written whole, then its end.
			a, b := net.Pipe()
			go tls.Client(a, &tls.Config{ServerName: name}).Handshake()
			buf := make([]byte, 4096)
			n, _ := b.Read(buf)
			a.Close()
			client.Write(buf[:n])
			client.CloseWrite()
			sent <- buf[:n]
		}()
		h, rc, err := tlspeek.Peek(server, 5*time.Second)
		if err != nil || h.ServerName != name {
			t.Fatalf("connection %d: Peek: %q, %v", i, h.ServerName, err)
		}
		pending, rest := tlspeek.Unwrap(rc)
		if rest != net.Conn(server) {
			t.Fatalf("connection %d: Unwrap's conn is %T, not the socket", i, rest)
		}
		want := <-sent
		if !bytes.Equal(pending, want) {
			t.Fatalf("connection %d: Unwrap gave %d bytes, not the %d the client sent", i, len(pending), len(want))
		}
		if n, err := rc.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Errorf("connection %d: after Unwrap the conn read %d bytes (%v), want none and the end", i, n, err)
		}
		tlspeek.Release(pending)
	}
}
