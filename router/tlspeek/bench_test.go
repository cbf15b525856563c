package tlspeek_test

import (
	"crypto/tls"
	"testing"

	"github.com/interceptd/interceptd/router/tlspeek"
)

// BenchmarkPeek reads a typical hello (crypto/tls's, with a server name,
// ALPN and its post-quantum key share) that arrives in one read: the work
// Peek adds to every port-443 connection before the splice.
func BenchmarkPeek(b *testing.B) {
	raw := captureHello(b, &tls.Config{ServerName: "api.github.com", NextProtos: []string{"h2", "http/1.1"}})
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		h, _, err := tlspeek.Peek(newFakeConn(raw, 0), 0)
		if err != nil || h.ServerName != "api.github.com" {
			b.Fatal(h, err)
		}
	}
}
