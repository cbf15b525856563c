// Package routertest runs the router behind its real transport for tests,
// as net/http/httptest does for net/http: on a loopback listener where
// every loopback address may be a sandbox. It also gives a router.Conn for
// a request dispatched without a transport, and the raw-connection helpers
// the router's, the server's, the forwarder's and the handlers' tests share.
package routertest

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/httpserve"
	"github.com/prometheus/client_golang/prometheus"
)

// Sandbox is the sandbox every loopback address is in ServeRoutes.
const Sandbox = "loop"

// ServeRoutes runs a Router with routes behind the server on a loopback
// listener, to which every loopback address is sandbox "loop" with
// internet on.
func ServeRoutes(t testing.TB, m *router.Metrics, routes map[string]router.Route) (string, *router.Router) {
	t.Helper()
	return Serve(t, router.Config{
		Hosts: routes,
		Identify: func(a netip.Addr) (policy.Caller, bool) {
			return policy.Caller{Sandbox: Sandbox, Policy: policy.MustCompile(policy.Policy{Internet: true})}, a.IsLoopback()
		},
		Metrics: m,
		Logger:  slog.New(slog.DiscardHandler),
	})
}

// Serve serves a router for cfg on a loopback port until the test ends.
func Serve(t testing.TB, cfg router.Config) (string, *router.Router) {
	t.Helper()
	rt := router.New(cfg)
	addr, _ := ServeHandler(t, rt, nil)
	return addr, rt
}

// ServeHandler serves h through the server on a loopback port, with the
// server's metrics m (nil for none), until the test ends; the server is
// shut down then, and a shutdown that fails fails the test.
func ServeHandler(t testing.TB, h httpserve.Handler, m *httpserve.Metrics) (string, *httpserve.Server) {
	t.Helper()
	srv := httpserve.New(h, m, slog.New(slog.DiscardHandler))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return ln.Addr().String(), srv
}

// Dial connects to addr, from the loopback address src unless it is
// empty, with a deadline d away, and closes the connection when the test
// ends.
func Dial(t testing.TB, src, addr string, d time.Duration) net.Conn {
	t.Helper()
	var dl net.Dialer
	if src != "" {
		dl.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := dl.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(d))
	return c
}

// Exchange writes raw and reads responses until the server closes or goes
// quiet, quickly once it has the n expected.
func Exchange(t testing.TB, c net.Conn, raw string, method string, n int) (got []*http.Response, bodies []string, closed bool) {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for {
		quiet := 2 * time.Second
		if len(got) >= n {
			quiet = 200 * time.Millisecond
		}
		c.SetReadDeadline(time.Now().Add(quiet))
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return got, bodies, false
			}
			return got, bodies, true
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			bodies = append(bodies, "ERR "+err.Error())
		} else {
			bodies = append(bodies, string(b))
		}
		got = append(got, resp)
	}
}

// Conn is a router.Conn for a request dispatched without a transport
// (Router.ServeConn called by a test): the addresses are its fields, its
// cache is its own, the client never goes away by itself, and Close
// records that it was called.
type Conn struct {
	Source, Dest netip.AddrPort
	// Smuggled makes Ambiguous report true.
	Smuggled bool

	mu     sync.Mutex
	cache  router.ConnCache
	gone   func()
	closed bool
}

func (c *Conn) Addrs() (source, dest netip.AddrPort) { return c.Source, c.Dest }
func (c *Conn) Cache() *router.ConnCache             { return &c.cache }
func (c *Conn) Ambiguous() bool                      { return c.Smuggled }

func (c *Conn) WhenGone(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gone = f
}

func (c *Conn) StopWhenGone() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	ok := c.gone != nil
	c.gone = nil
	return ok
}

// Close marks the connection closed and runs what WhenGone asked for.
func (c *Conn) Close() error {
	c.mu.Lock()
	f := c.gone
	c.gone, c.closed = nil, true
	c.mu.Unlock()
	if f != nil {
		f()
	}
	return nil
}

// Closed reports whether Close was called.
func (c *Conn) Closed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Do serves r through rt as if it came on a connection from src to dst,
// and returns what rt wrote.
func Do(rt *router.Router, r *http.Request, src, dst netip.AddrPort) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	rt.ServeConn(w, r, &Conn{Source: src, Dest: dst})
	return w
}

// RawUpstream serves each connection to a loopback listener with serve,
// until the test ends: an upstream whose every byte the test writes.
func RawUpstream(t testing.TB, serve func(c net.Conn)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go ServeEach(ln, serve)
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// ServeEach hands every connection ln accepts to serve, on its own
// goroutine, and closes it when serve returns; it returns when ln is
// closed.
func ServeEach(ln net.Listener, serve func(c net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			serve(c)
		}()
	}
}

// AsRouter serves r with h and does with its error what the router does
// (see router.Handler): writes it, or cuts the connection when the
// response was aborted. For tests of a handler without the router.
func AsRouter(h router.Handler, w http.ResponseWriter, r *http.Request, env router.Env) {
	err := h.ServeHTTP(w, r, env)
	if errors.Is(err, router.ErrAborted) {
		panic(http.ErrAbortHandler)
	}
	if err != nil {
		router.WriteError(w, err)
	}
}

// KeptAliveClients sends raw over kept-alive connections to addr, one per
// parallel worker, for b.N requests in all, and reads each answer whole;
// an answer other than 200 fails the benchmark.
func KeptAliveClients(b *testing.B, addr, raw string) {
	b.Helper()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for pb.Next() {
			io.WriteString(c, raw)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

// Counted is the value of the counter name whose series has exactly
// labels, as reg gathers it; 0 when there is no such series.
func Counted(t testing.TB, reg prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; !ok || v != l.GetValue() {
					continue series
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}
