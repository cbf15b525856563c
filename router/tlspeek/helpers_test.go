package tlspeek_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"
)

// fakeConn is a net.Conn whose reads come from data, at most chunk bytes
// each (0: no limit), and then io.EOF; its writes are kept. It records read
// deadlines.
type fakeConn struct {
	data      []byte
	chunk     int
	written   bytes.Buffer
	deadlines []time.Time
}

func newFakeConn(data []byte, chunk int) *fakeConn {
	return &fakeConn{data: data, chunk: chunk}
}

func (c *fakeConn) Read(b []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	if c.chunk > 0 && len(b) > c.chunk {
		b = b[:c.chunk]
	}
	n := copy(b, c.data)
	c.data = c.data[n:]
	return n, nil
}

func (c *fakeConn) Write(b []byte) (int, error)        { return c.written.Write(b) }
func (c *fakeConn) Close() error                       { return nil }
func (c *fakeConn) LocalAddr() net.Addr                { return &net.TCPAddr{} }
func (c *fakeConn) RemoteAddr() net.Addr               { return &net.TCPAddr{} }
func (c *fakeConn) SetDeadline(t time.Time) error      { return nil }
func (c *fakeConn) SetWriteDeadline(t time.Time) error { return nil }
func (c *fakeConn) SetReadDeadline(t time.Time) error {
	c.deadlines = append(c.deadlines, t)
	return nil
}

// captureHello returns the bytes a crypto/tls client with cfg sends first:
// its ClientHello, as records.
func captureHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	c := newFakeConn(nil, 0)
	if err := tls.Client(c, cfg).Handshake(); err == nil {
		t.Fatal("a handshake with nobody succeeded")
	}
	if c.written.Len() == 0 {
		t.Fatal("the client sent nothing")
	}
	return c.written.Bytes()
}

// helloMessage takes the handshake bytes out of the records in raw, up to
// the end of the first handshake message, the way a TLS server would; ok is
// false when raw does not hold a whole one. It is written apart from the
// package's own reader, so that the two check each other.
func helloMessage(raw []byte) (msg []byte, recordVersion [2]byte, ok bool) {
	var hs []byte
	for len(raw) >= 5 && raw[0] == 22 {
		n := int(raw[3])<<8 | int(raw[4])
		if len(raw) < 5+n {
			return nil, recordVersion, false
		}
		if recordVersion == [2]byte{} {
			recordVersion = [2]byte{raw[1], raw[2]}
		}
		hs = append(hs, raw[5:5+n]...)
		raw = raw[5+n:]
		if len(hs) >= 4 {
			size := 4 + (int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3]))
			if len(hs) >= size {
				return hs[:size], recordVersion, true
			}
		}
	}
	return nil, recordVersion, false
}

// frame puts a handshake message into records of the given fragment sizes
// (the last size repeats until the message is used up; none: one record).
func frame(msg []byte, sizes ...int) []byte {
	return frameVersion(msg, [2]byte{3, 1}, sizes...)
}

func frameVersion(msg []byte, v [2]byte, sizes ...int) []byte {
	var out []byte
	for i := 0; len(msg) > 0; i++ {
		n := len(msg)
		if len(sizes) > 0 {
			n = min(sizes[min(i, len(sizes)-1)], len(msg))
		}
		out = append(out, 22, v[0], v[1], byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

// reframe re-frames the hello that raw starts with.
func reframe(t testing.TB, raw []byte, sizes ...int) []byte {
	t.Helper()
	msg, _, ok := helloMessage(raw)
	if !ok {
		t.Fatalf("no whole hello in %d bytes", len(raw))
	}
	return frame(msg, sizes...)
}

// A hand-made ClientHello: ext is one extension, clientHello builds the
// handshake message around a list of them.
type ext struct {
	typ  uint16
	data []byte
}

func u16(n int) []byte { return []byte{byte(n >> 8), byte(n)} }

func vec16(parts ...[]byte) []byte {
	b := bytes.Join(parts, nil)
	return append(u16(len(b)), b...)
}

func vec8(parts ...[]byte) []byte {
	b := bytes.Join(parts, nil)
	return append([]byte{byte(len(b))}, b...)
}

// helloBody is a ClientHello body: TLS 1.2 legacy version, a zero random,
// an empty session id, one suite, null compression, then exts (as a block
// only when there are any).
func helloBody(exts ...ext) []byte {
	b := []byte{3, 3}
	b = append(b, make([]byte, 32)...)
	b = append(b, 0)                // session id
	b = append(b, 0, 2, 0x13, 0x01) // cipher suites
	b = append(b, 1, 0)             // compression methods
	if exts == nil {
		return b
	}
	var block []byte
	for _, e := range exts {
		block = append(block, u16(int(e.typ))...)
		block = append(block, vec16(e.data)...)
	}
	return append(b, vec16(block)...)
}

// handshake wraps a ClientHello body in its handshake header.
func handshake(body []byte) []byte {
	n := len(body)
	return append([]byte{1, byte(n >> 16), byte(n >> 8), byte(n)}, body...)
}

func clientHello(exts ...ext) []byte { return handshake(helloBody(exts...)) }

func sni(names ...string) ext {
	var list [][]byte
	for _, n := range names {
		list = append(list, []byte{0}, vec16([]byte(n)))
	}
	return ext{0, vec16(list...)}
}

func alpn(protos ...string) ext {
	var list [][]byte
	for _, p := range protos {
		list = append(list, vec8([]byte(p)))
	}
	return ext{16, vec16(list...)}
}

func versions(vs ...uint16) ext {
	var list [][]byte
	for _, v := range vs {
		list = append(list, u16(int(v)))
	}
	return ext{43, vec8(list...)}
}

func padding(n int) ext { return ext{21, make([]byte, n)} }

// testCert is a self-signed ECDSA certificate for names, and a pool that
// trusts it.
func testCert(t testing.TB, names ...string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// resumingConfig returns a client config whose session cache holds a
// ticket from a real handshake with a TLS server on loopback, so that the
// hello it sends next offers resumption.
func resumingConfig(t testing.TB, maxVersion uint16) *tls.Config {
	t.Helper()
	cert, pool := testCert(t, "api.test.internal")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	defer ln.Close()
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		s := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: maxVersion})
		if s.Handshake() == nil {
			s.Write([]byte("x"))
			io.Copy(io.Discard, s)
		}
	}()
	cfg := &tls.Config{
		ServerName:         "api.test.internal",
		RootCAs:            pool,
		MaxVersion:         maxVersion,
		ClientSessionCache: tls.NewLRUClientSessionCache(4),
	}
	c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Reading makes the client take TLS 1.3's post-handshake ticket.
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	return cfg
}

// extensionTypes lists the extensions in a hello message, to check that a
// test's hello is what the test says it is.
func extensionTypes(t testing.TB, msg []byte) []uint16 {
	t.Helper()
	b := msg[4+2+32:]
	b = b[1+int(b[0]):]
	b = b[2+(int(b[0])<<8|int(b[1])):]
	b = b[1+int(b[0]):]
	if len(b) == 0 {
		return nil
	}
	b = b[2:]
	var types []uint16
	for len(b) >= 4 {
		types = append(types, uint16(b[0])<<8|uint16(b[1]))
		b = b[4+(int(b[2])<<8|int(b[3])):]
	}
	return types
}
