package tlspeek_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/interceptd/interceptd/router/tlspeek"
)

// FuzzClientHello holds Peek to its promises on any bytes: it does not
// panic; the conn it returns replays exactly what came in; a hello it reads
// reads the same when its handshake bytes come in one-byte records (so no
// framing can change what the SNI says); and a ServerName is lowercased,
// without a trailing dot, unless it is an IP literal.
func FuzzClientHello(f *testing.F) {
	for _, cfg := range []*tls.Config{
		{ServerName: "api.github.com", NextProtos: []string{"h2", "http/1.1"}},
		{ServerName: "pypi.org", MaxVersion: tls.VersionTLS12},
		{InsecureSkipVerify: true},
	} {
		raw := captureHello(f, cfg)
		f.Add(raw)
		f.Add(reframe(f, raw, 50))
	}
	f.Add(frame(clientHello(sni("2001:db8::1"), alpn("h2"), versions(0x0a0a, 0x0304), ext{0xfe0d, nil})))
	f.Add(frame(clientHello(sni("A.Example."), padding(40))))
	f.Add(frame(clientHello(sni("a", "b"))))
	f.Add(frame(clientHello()))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{22, 3, 1, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		h, conn, err := tlspeek.Peek(newFakeConn(in, 0), 0)
		if got, rerr := io.ReadAll(conn); rerr != nil || !bytes.Equal(got, in) {
			t.Fatalf("replayed %q (%v), sent %q", got, rerr, in)
		}
		// Where the reads end changes nothing: one byte at a time reads
		// the same, or fails the same way.
		h1, _, err1 := tlspeek.Peek(newFakeConn(in, 1), 0)
		if !reflect.DeepEqual(h1, h) || kind(err1) != kind(err) {
			t.Fatalf("one byte per read: %+v, %v; all at once: %+v, %v", h1, err1, h, err)
		}
		if err != nil {
			if !errors.Is(err, tlspeek.ErrNotTLS) && !errors.Is(err, tlspeek.ErrMalformed) && !errors.Is(err, tlspeek.ErrTooLarge) {
				t.Fatalf("an error of no kind: %v", err)
			}
			if !reflect.DeepEqual(h, tlspeek.Hello{}) {
				t.Fatalf("an error came with %+v", h)
			}
			return
		}
		if name := h.ServerName; name != "" {
			if _, ipErr := netip.ParseAddr(name); ipErr != nil && (name != strings.ToLower(name) || strings.HasSuffix(name, ".")) {
				t.Fatalf("server name %q is not normalised", name)
			}
		}
		msg, v, ok := helloMessage(in)
		if !ok {
			t.Fatalf("Peek read a hello from %q, the reference reader finds none", in)
		}
		h2, _, err := tlspeek.Peek(newFakeConn(frameVersion(msg, v, 1), 0), 0)
		if err != nil || !reflect.DeepEqual(h2, h) {
			t.Fatalf("in one-byte records: %+v, %v; as sent: %+v", h2, err, h)
		}
	})
}

// kind is which of Peek's errors err is.
func kind(err error) error {
	for _, k := range []error{tlspeek.ErrNotTLS, tlspeek.ErrMalformed, tlspeek.ErrTooLarge, tlspeek.ErrTimeout} {
		if errors.Is(err, k) {
			return k
		}
	}
	return err
}
