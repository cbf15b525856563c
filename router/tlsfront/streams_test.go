package tlsfront

import (
	"crypto/x509"
	"io"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/interceptd/interceptd/router"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// holdingRouter holds each request until released, as a handler holds a
// sandbox's trickled upload or a slow upstream's answer.
type holdingRouter struct{ in, release chan struct{} }

func (h holdingRouter) ServeConn(w http.ResponseWriter, r *http.Request, c router.Conn) {
	h.in <- struct{}{}
	<-h.release
	io.WriteString(w, "ok")
}

func TestASandboxsHTTP2RequestsInFlightAreCappedAsItsConnectionsAre(t *testing.T) {
	ca := testCA(t)
	h := holdingRouter{in: make(chan struct{}, 16), release: make(chan struct{})}
	s := &Server{Decide: handlerDecider{}, CA: ca, Handler: h, MaxStreams: func(netip.Addr) int { return 2 }}
	addr := startFront(t, s)
	m := s.Metrics
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	c := clientFor(addr, roots, true)
	type result struct {
		status int
		err    error
	}
	results := make(chan result, 8)
	get := func() {
		resp, err := c.Get("https://api.test/x")
		if err != nil {
			results <- result{0, err}
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		results <- result{resp.StatusCode, nil}
	}
	// Two requests in flight on one HTTP/2 connection: the sandbox's cap.
	go get()
	go get()
	for range 2 {
		select {
		case <-h.in:
		case <-time.After(5 * time.Second):
			t.Fatal("the first two requests never reached the handler")
		}
	}
	// A third stream on the same connection is over it.
	go get()
	select {
	case <-h.in:
		t.Error("a third request in flight reached the handler past a cap of 2")
	case r := <-results:
		if r.err != nil || r.status != http.StatusTooManyRequests {
			t.Errorf("the third request: %d %v, want 429", r.status, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer to the third request")
	}
	close(h.release)
	for range 2 {
		if r := <-results; r.err != nil || r.status != http.StatusOK {
			t.Errorf("a held request: %d %v", r.status, r.err)
		}
	}
	// Their places are given back.
	go get()
	<-h.in
	if r := <-results; r.err != nil || r.status != http.StatusOK {
		t.Errorf("after the held ones ended: %d %v", r.status, r.err)
	}
	if n := testutil.ToFloat64(m.streamsRefused); n != 1 {
		t.Errorf("%v streams counted as refused, want 1", n)
	}
}
