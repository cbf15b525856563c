package tlsfront

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestCloseWhileTheFirstInterceptedConnectionsComeIn(t *testing.T) {
	ca, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := &Server{Decide: handlerDecider{}, CA: ca, Handler: echoRouter{}, Metrics: NewMetrics(prometheus.NewRegistry()), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
		done := make(chan error, 1)
		go func() { done <- s.Serve(ln) }()
		var wg sync.WaitGroup
		for _, proto := range []string{"h2", "http/1.1", "h2", "http/1.1"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: "api.test", InsecureSkipVerify: true, NextProtos: []string{proto}})
				if err == nil {
					c.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
					c.Close()
				}
			}()
		}
		wg.Wait()
		s.Close()
		<-done
	}
}
