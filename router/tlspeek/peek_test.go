package tlspeek_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/interceptd/interceptd/router/tlspeek"
)

// A name of 253 bytes, the longest a DNS name can be, in labels of 63.
var longName = strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61)

func TestPeekReadsWhatRealClientsSend(t *testing.T) {
	tests := []struct {
		name string
		cfg  func(t *testing.T) *tls.Config
		want tlspeek.Hello
		ext  uint16 // an extension the hello must carry, to prove the case is what it says
	}{{
		name: "a TLS 1.3 client gives its server name lowercased and its ALPN in order",
		cfg: func(*testing.T) *tls.Config {
			return &tls.Config{ServerName: "API.GitHub.com", MaxVersion: tls.VersionTLS13, NextProtos: []string{"h2", "http/1.1"}}
		},
		want: tlspeek.Hello{ServerName: "api.github.com", ALPN: []string{"h2", "http/1.1"}, Versions: []uint16{tls.VersionTLS13, tls.VersionTLS12}},
	}, {
		name: "a client offering HTTP/1.1 only",
		cfg: func(*testing.T) *tls.Config {
			return &tls.Config{ServerName: "pypi.org", NextProtos: []string{"http/1.1"}}
		},
		want: tlspeek.Hello{ServerName: "pypi.org", ALPN: []string{"http/1.1"}, Versions: []uint16{tls.VersionTLS13, tls.VersionTLS12}},
	}, {
		name: "a client without a server name sends no SNI",
		cfg: func(*testing.T) *tls.Config {
			return &tls.Config{InsecureSkipVerify: true}
		},
		want: tlspeek.Hello{Versions: []uint16{tls.VersionTLS13, tls.VersionTLS12}},
	}, {
		name: "crypto/tls leaves an IP literal out of the SNI",
		cfg: func(*testing.T) *tls.Config {
			return &tls.Config{ServerName: "192.0.2.7"}
		},
		want: tlspeek.Hello{Versions: []uint16{tls.VersionTLS13, tls.VersionTLS12}},
	}, {
		name: "a TLS 1.2 client offers TLS 1.2 alone",
		cfg: func(*testing.T) *tls.Config {
			return &tls.Config{ServerName: "files.pythonhosted.org", MaxVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}
		},
		want: tlspeek.Hello{ServerName: "files.pythonhosted.org", ALPN: []string{"h2"}, Versions: []uint16{tls.VersionTLS12}},
	}, {
		name: "a TLS 1.3-only client offers one version",
		cfg: func(*testing.T) *tls.Config {
			return &tls.Config{ServerName: "example.com", MinVersion: tls.VersionTLS13}
		},
		want: tlspeek.Hello{ServerName: "example.com", Versions: []uint16{tls.VersionTLS13}},
	}, {
		name: "a server name of 253 bytes is read whole",
		cfg: func(*testing.T) *tls.Config {
			return &tls.Config{ServerName: longName}
		},
		want: tlspeek.Hello{ServerName: longName, Versions: []uint16{tls.VersionTLS13, tls.VersionTLS12}},
	}, {
		name: "a TLS 1.3 client resuming with a session ticket",
		cfg: func(t *testing.T) *tls.Config {
			return resumingConfig(t, tls.VersionTLS13)
		},
		want: tlspeek.Hello{ServerName: "api.test.internal", Versions: []uint16{tls.VersionTLS13, tls.VersionTLS12}},
		ext:  41, // pre_shared_key
	}, {
		name: "a TLS 1.2 client resuming with a session ticket",
		cfg: func(t *testing.T) *tls.Config {
			return resumingConfig(t, tls.VersionTLS12)
		},
		want: tlspeek.Hello{ServerName: "api.test.internal", Versions: []uint16{tls.VersionTLS12}},
		ext:  35, // session_ticket
	}}
	framings := []struct {
		name   string
		sizes  []int // fragment sizes; none: as the client framed it
		chunk  int   // bytes per read; 0: all at once
		record bool  // re-frame at all
	}{
		{name: "as sent"},
		{name: "as sent, one byte per read", chunk: 1},
		{name: "in two records", sizes: []int{100}, record: true},
		{name: "in two records, 7 bytes per read", sizes: []int{100}, chunk: 7, record: true},
		{name: "in two records split inside the handshake header", sizes: []int{2}, record: true},
		{name: "in one-byte records", sizes: []int{1}, record: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := captureHello(t, tt.cfg(t))
			if tt.ext != 0 {
				msg, _, _ := helloMessage(raw)
				if !slices.Contains(extensionTypes(t, msg), tt.ext) {
					t.Fatalf("the hello lacks extension %d: %v", tt.ext, extensionTypes(t, msg))
				}
			}
			for _, f := range framings {
				t.Run(f.name, func(t *testing.T) {
					in := raw
					if f.record {
						in = reframe(t, raw, f.sizes...)
					}
					// Bytes after the hello (TLS 1.3 early data, say) are
					// replayed too.
					in = append(slices.Clip(in), "after"...)
					c := newFakeConn(in, f.chunk)
					h, rc, err := tlspeek.Peek(c, time.Second)
					if err != nil {
						t.Fatal(err)
					}
					if !reflect.DeepEqual(h, tt.want) {
						t.Errorf("got  %+v\nwant %+v", h, tt.want)
					}
					got, err := io.ReadAll(rc)
					if err != nil || !bytes.Equal(got, in) {
						t.Errorf("replayed %d bytes (%v), sent %d", len(got), err, len(in))
					}
					if len(c.deadlines) != 2 || !c.deadlines[1].IsZero() {
						t.Errorf("read deadlines set: %v; want one, then cleared", c.deadlines)
					}
				})
			}
		})
	}
}

// TestPeekReadsHandMadeHellos covers what crypto/tls clients do not send.
func TestPeekReadsHandMadeHellos(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want tlspeek.Hello
	}{{
		name: "an IPv4 literal in the SNI is reported as it came",
		in:   frame(clientHello(sni("192.0.2.1"))),
		want: tlspeek.Hello{ServerName: "192.0.2.1"},
	}, {
		name: "an IPv6 literal in the SNI is reported as it came",
		in:   frame(clientHello(sni("2001:DB8::1"))),
		want: tlspeek.Hello{ServerName: "2001:DB8::1"},
	}, {
		name: "a trailing dot is dropped and capitals lowered",
		in:   frame(clientHello(sni("WWW.Example.COM."))),
		want: tlspeek.Hello{ServerName: "www.example.com"},
	}, {
		name: "underscores and hyphens are host name bytes",
		in:   frame(clientHello(sni("_acme-challenge.my-host.example"))),
		want: tlspeek.Hello{ServerName: "_acme-challenge.my-host.example"},
	}, {
		name: "a name type other than host_name is skipped",
		in: frame(clientHello(ext{0, vec16(
			[]byte{7}, vec16([]byte("whatever")),
			[]byte{0}, vec16([]byte("a.example")),
		)})),
		want: tlspeek.Hello{ServerName: "a.example"},
	}, {
		// OpenSSL reads the first entry and ignores the rest; Go skips
		// other types: both take a.example, as Peek does.
		name: "a host_name followed by an entry of another type is the host_name",
		in: frame(clientHello(ext{0, vec16(
			[]byte{0}, vec16([]byte("a.example")),
			[]byte{7}, vec16([]byte("denied.example")),
		)})),
		want: tlspeek.Hello{ServerName: "a.example"},
	}, {
		name: "an encrypted_client_hello extension is reported, with the outer name",
		in:   frame(clientHello(sni("public.example"), ext{0xfe0d, []byte{0, 1, 2, 3}}, versions(0x0a0a, tls.VersionTLS13))),
		want: tlspeek.Hello{ServerName: "public.example", ECH: true, Versions: []uint16{0x0a0a, tls.VersionTLS13}},
	}, {
		name: "a hello without extensions (TLS 1.0 style)",
		in:   frame(clientHello()),
		want: tlspeek.Hello{},
	}, {
		name: "a hello with many extensions spanning two records",
		in:   frame(clientHello(padding(3000), alpn("h2"), padding2(9000), sni("big.example")), 8000),
		want: tlspeek.Hello{ServerName: "big.example", ALPN: []string{"h2"}},
	}, {
		name: "a hello of exactly MaxHelloSize is read",
		in:   frame(exactly(tlspeek.MaxHelloSize, sni("edge.example")), 16000),
		want: tlspeek.Hello{ServerName: "edge.example"},
	}, {
		name: "a record version of 3.0 is accepted",
		in:   frameVersion(clientHello(sni("old.example")), [2]byte{3, 0}),
		want: tlspeek.Hello{ServerName: "old.example"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, rc, err := tlspeek.Peek(newFakeConn(tt.in, 0), 0)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(h, tt.want) {
				t.Errorf("got  %+v\nwant %+v", h, tt.want)
			}
			if got, _ := io.ReadAll(rc); !bytes.Equal(got, tt.in) {
				t.Errorf("replayed %d bytes, sent %d", len(got), len(tt.in))
			}
		})
	}
}

// padding2 is a second padding-like extension (a private-use number), since
// an extension may appear once.
func padding2(n int) ext { return ext{0xff01, make([]byte, n)} }

// exactly builds a hello message of size bytes, header included, by sizing
// its padding.
func exactly(size int, e ext) []byte {
	base := len(clientHello(e, padding(0)))
	return clientHello(e, padding(size-base))
}

func TestPeekRefusesWhatIsNotAWellFormedHello(t *testing.T) {
	good := clientHello(sni("a.example"), alpn("h2"))
	body := helloBody(sni("a.example"))
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"plain HTTP is not TLS", []byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), tlspeek.ErrNotTLS},
		{"an SSLv2-style hello is not TLS", []byte{0x80, 0x2e, 0x01, 0x03, 0x01}, tlspeek.ErrNotTLS},
		{"one byte that is not a handshake record is enough to say so", []byte{'S'}, tlspeek.ErrNotTLS},
		{"an alert record after the first is malformed", append(frame(good[:10]), 21, 3, 1, 0, 2, 2, 40), tlspeek.ErrMalformed},
		{"an application data record inside the hello is malformed", append(frame(good[:10]), append([]byte{23, 3, 3}, vec16(good[10:])...)...), tlspeek.ErrMalformed},
		{"a record version that is not 3.x is malformed", frameVersion(good, [2]byte{2, 0}), tlspeek.ErrMalformed},
		{"an empty record is malformed", append([]byte{22, 3, 1, 0, 0}, frame(good)...), tlspeek.ErrMalformed},
		{"a record over 16384 bytes is malformed", []byte{22, 3, 1, 0x40, 0x01}, tlspeek.ErrMalformed},
		{"a handshake message that is not a ClientHello is malformed", frame(append([]byte{2}, good[1:]...)), tlspeek.ErrMalformed},
		{"a hello declaring more than MaxHelloSize is too large, before it arrives", frame([]byte{1, 0, 0x3f, 0xfd}), tlspeek.ErrTooLarge},
		{"a hello one byte over MaxHelloSize is too large", frame(exactly(tlspeek.MaxHelloSize+1, sni("a.example")), 16000), tlspeek.ErrTooLarge},
		{"a body too short for its random is malformed", frame(handshake(body[:20])), tlspeek.ErrMalformed},
		{"a session id over 32 bytes is malformed", frame(handshake(append(append(slices.Clone(body[:34]), vec8(make([]byte, 33))...), body[35:]...))), tlspeek.ErrMalformed},
		{"an odd cipher suite list is malformed", frame(handshake(append(append(slices.Clone(body[:35]), 0, 3, 0x13, 0x01, 0x13), body[39:]...))), tlspeek.ErrMalformed},
		{"no compression methods is malformed", frame(handshake(append(append(slices.Clone(body[:39]), 0), body[41:]...))), tlspeek.ErrMalformed},
		{"an extension block longer than the body is malformed", frame(handshake(append(slices.Clone(body[:41]), 0xff, 0xff, 0, 0))), tlspeek.ErrMalformed},
		{"bytes after the extension block are malformed", frame(handshake(append(slices.Clone(body), 0))), tlspeek.ErrMalformed},
		{"an extension overrunning the block is malformed", frame(handshake(append(slices.Clone(body[:41]), 0, 4, 0, 16, 0, 9))), tlspeek.ErrMalformed},
		{"a truncated extension header is malformed", frame(handshake(append(slices.Clone(body[:41]), 0, 1, 0))), tlspeek.ErrMalformed},
		{"two ALPN extensions are malformed", frame(clientHello(alpn("h2"), sni("a.example"), alpn("http/1.1"))), tlspeek.ErrMalformed},
		{"two server_name extensions are malformed", frame(clientHello(sni("allowed.example"), sni("denied.example"))), tlspeek.ErrMalformed},
		{"two host_names in one list are malformed", frame(clientHello(sni("allowed.example", "denied.example"))), tlspeek.ErrMalformed},
		{"an empty server_name list is malformed", frame(clientHello(ext{0, vec16()})), tlspeek.ErrMalformed},
		{"a server_name extension without a list is malformed", frame(clientHello(ext{0, nil})), tlspeek.ErrMalformed},
		{"bytes after the host_name inside the list are malformed", frame(clientHello(ext{0, vec16([]byte{0}, vec16([]byte("allowed.example")), []byte{0, 0})})), tlspeek.ErrMalformed},
		{"a ChangeCipherSpec record inside the hello is malformed", append(frame(good[:10]), 20, 3, 3, 0, 1, 1), tlspeek.ErrMalformed},
		{"bytes after the server_name list are malformed", frame(clientHello(ext{0, append(sni("a.example").data, 0)})), tlspeek.ErrMalformed},
		{"an empty host_name is malformed", frame(clientHello(sni(""))), tlspeek.ErrMalformed},
		{"a host_name of a dot is malformed", frame(clientHello(sni("."))), tlspeek.ErrMalformed},
		{"a host_name with two trailing dots is malformed", frame(clientHello(sni("a.example.."))), tlspeek.ErrMalformed},
		{"a host_name with an empty label is malformed", frame(clientHello(sni("a..example"))), tlspeek.ErrMalformed},
		{"a host_name with a leading dot is malformed", frame(clientHello(sni(".a.example"))), tlspeek.ErrMalformed},
		{"a host_name with a space is malformed", frame(clientHello(sni("a example"))), tlspeek.ErrMalformed},
		{"a host_name with a NUL is malformed", frame(clientHello(sni("allowed.example\x00.evil"))), tlspeek.ErrMalformed},
		{"a host_name with a non-ASCII byte is malformed", frame(clientHello(sni("bücher.example"))), tlspeek.ErrMalformed},
		{"a wildcard host_name is malformed", frame(clientHello(sni("*.example"))), tlspeek.ErrMalformed},
		{"a host_name with a port is malformed", frame(clientHello(sni("a.example:443"))), tlspeek.ErrMalformed},
		{"an IPv6 literal with a zone is malformed", frame(clientHello(sni("fe80::1%eth0"))), tlspeek.ErrMalformed},
		{"a label of 64 bytes is malformed", frame(clientHello(sni(strings.Repeat("a", 64) + ".example"))), tlspeek.ErrMalformed},
		{"a host_name of 254 bytes is malformed", frame(clientHello(sni(longName + "e"))), tlspeek.ErrMalformed},
		{"an empty ALPN list is malformed", frame(clientHello(ext{16, vec16()})), tlspeek.ErrMalformed},
		{"an empty ALPN protocol name is malformed", frame(clientHello(alpn("h2", ""))), tlspeek.ErrMalformed},
		{"an odd supported_versions list is malformed", frame(clientHello(ext{43, vec8([]byte{3, 4, 3})})), tlspeek.ErrMalformed},
		{"an empty supported_versions list is malformed", frame(clientHello(ext{43, vec8()})), tlspeek.ErrMalformed},
		{"a connection closed before its first byte is malformed", nil, tlspeek.ErrMalformed},
	}
	sentinels := []error{tlspeek.ErrNotTLS, tlspeek.ErrMalformed, tlspeek.ErrTooLarge, tlspeek.ErrTimeout}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, rc, err := tlspeek.Peek(newFakeConn(tt.in, 0), 0)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			for _, s := range sentinels {
				if s != tt.want && errors.Is(err, s) {
					t.Errorf("%v is also %v", err, s)
				}
			}
			if !reflect.DeepEqual(h, tlspeek.Hello{}) {
				t.Errorf("an error came with %+v", h)
			}
			if rc == nil {
				t.Fatal("no conn with the error")
			}
			if got, _ := io.ReadAll(rc); !bytes.Equal(got, tt.in) {
				t.Errorf("replayed %q, sent %q", got, tt.in)
			}
		})
	}
}

// TestEveryTruncationOfAHelloIsAnError cuts a real hello, framed in two
// records, after every byte: each cut must be an error that says the
// connection ended early, never a panic or a name.
func TestEveryTruncationOfAHelloIsAnError(t *testing.T) {
	raw := reframe(t, captureHello(t, &tls.Config{ServerName: "api.github.com", NextProtos: []string{"h2", "http/1.1"}}), 300)
	for n := range len(raw) {
		for _, chunk := range []int{0, 1} {
			in := raw[:n]
			h, rc, err := tlspeek.Peek(newFakeConn(in, chunk), 0)
			if !errors.Is(err, tlspeek.ErrMalformed) {
				t.Fatalf("cut after %d bytes: got %v, want ErrMalformed", n, err)
			}
			wantEOF := io.ErrUnexpectedEOF
			if n == 0 {
				wantEOF = io.EOF
			}
			if !errors.Is(err, wantEOF) {
				t.Errorf("cut after %d bytes: %v does not wrap %v", n, err, wantEOF)
			}
			if !reflect.DeepEqual(h, tlspeek.Hello{}) {
				t.Fatalf("cut after %d bytes: got %+v", n, h)
			}
			if got, _ := io.ReadAll(rc); !bytes.Equal(got, in) {
				t.Fatalf("cut after %d bytes: replayed %d bytes", n, len(got))
			}
		}
	}
}

func TestPeekTimesOutOnAHalfSentHelloAndLosesNothing(t *testing.T) {
	raw := captureHello(t, &tls.Config{ServerName: "slow.example"})
	client, server := pipe(t)
	half := len(raw) / 2
	if _, err := client.Write(raw[:half]); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	h, rc, err := tlspeek.Peek(server, 50*time.Millisecond)
	if !errors.Is(err, tlspeek.ErrTimeout) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %v, want ErrTimeout wrapping os.ErrDeadlineExceeded", err)
	}
	if errors.Is(err, tlspeek.ErrMalformed) {
		t.Errorf("%v is also ErrMalformed", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Peek took %v with a 50ms timeout", d)
	}
	if h.ServerName != "" {
		t.Errorf("got a name from half a hello: %q", h.ServerName)
	}
	// The deadline is gone: the rest, sent late, reads through.
	time.Sleep(60 * time.Millisecond)
	if _, err := client.Write(raw[half:]); err != nil {
		t.Fatal(err)
	}
	client.Close()
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("read %d bytes (%v) after the timeout, sent %d", len(got), err, len(raw))
	}
}

func TestATimeoutWithNothingSentReturnsTheConnItself(t *testing.T) {
	_, server := pipe(t)
	_, rc, err := tlspeek.Peek(server, 20*time.Millisecond)
	if !errors.Is(err, tlspeek.ErrTimeout) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
	if rc != server {
		t.Errorf("got a %T, want the conn itself: there is nothing to replay", rc)
	}
}

// The errors say what was wrong, not only which kind.
func TestErrorsSayWhy(t *testing.T) {
	for in, want := range map[string]string{
		"GET /":                                "first byte 0x47",
		string(frame(clientHello(sni("a b")))): `byte 0x20 in server name "a b"`,
		string(frame(clientHello(alpn("x"), alpn("y")))): "extension 16 appears twice",
	} {
		_, _, err := tlspeek.Peek(newFakeConn([]byte(in), 0), 0)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want it to say %q", in, err, want)
		}
	}
	_, _, err := tlspeek.Peek(newFakeConn(frame([]byte{1, 0, 0x40, 0}), 0), 0)
	if want := fmt.Sprintf("16388 bytes, over the %d limit", tlspeek.MaxHelloSize); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want it to say %q", err, want)
	}
}
