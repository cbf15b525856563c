package forward

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/routertest"
)

// scripted is an upstream on 127.0.0.1 that reads each request with
// net/http's parser, hands it to answer, and writes answer's raw bytes. It
// counts the connections it accepted.
type scripted struct {
	addr    netip.AddrPort
	accepts atomic.Int32
	got     chan *http.Request
	bodies  chan string
}

// answer returns the raw response and whether to close the connection
// after it.
type answer func(r *http.Request, body string) (raw string, closeAfter bool)

func newScripted(t *testing.T, ans answer) *scripted {
	t.Helper()
	ln := loopbackListener(t)
	s := &scripted{addr: ln.Addr().(*net.TCPAddr).AddrPort(), got: make(chan *http.Request, 16), bodies: make(chan string, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepts.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					r, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					b, _ := io.ReadAll(r.Body)
					s.got <- r
					s.bodies <- string(b)
					raw, closeAfter := ans(r, string(b))
					io.WriteString(c, raw)
					if closeAfter {
						return
					}
				}
			}()
		}
	}()
	return s
}

// frontFor serves the forwarder on 127.0.0.1, sending everything to dest
// as the router would for an intercepted connection to it.
func frontFor(t *testing.T, f *Forwarder, dest netip.AddrPort) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			routertest.AsRouter(handler(f), &recorder{ResponseWriter: w}, r, router.Env{Dest: dest})
		}),
		ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelError),
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func newForward() *Forwarder { return &Forwarder{Logger: slog.New(slog.DiscardHandler)} }

// handler is f as the router's _forward handler (handlers.Forward, which
// this package's tests cannot import: it imports this package) serves it:
// the target from env, and f's errors turned into the router's.
func handler(f *Forwarder) router.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, env router.Env) error {
		t := Target{Sandbox: env.Sandbox, Dest: env.Dest}
		if env.Conn != nil {
			t.Client = env.Conn
		}
		return upstreamError(f.Forward(w, r, t))
	}
}

// upstreamError is handlers.upstreamError: a failure before the response
// becomes the router's 502 naming its kind, a response cut short an error
// the router cuts the connection for.
func upstreamError(err error) error {
	if err == nil {
		return nil
	}
	var fail *Failure
	switch {
	case errors.Is(err, ErrAborted):
		return fmt.Errorf("%w: %w", router.ErrAborted, err)
	case errors.As(err, &fail):
		return &router.Error{Status: http.StatusBadGateway, Reason: "upstream " + fail.Kind, Err: fail.Err, Logged: true}
	}
	return err
}

// recorder wraps net/http's ResponseWriter as the router's own recorder
// does, so that the forwarder behind net/http meets what it meets behind
// the router: a writer that flushes and unwraps (for
// http.ResponseController), and nothing else (no io.ReaderFrom, no
// raw heads).
type recorder struct{ http.ResponseWriter }

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// rawExchange writes req on a fresh connection to addr and returns what
// came back until the response ends (the server closes: requests carry
// Connection: close) or a read fails.
func rawExchange(t *testing.T, addr, req string) (string, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, req)
	b, err := io.ReadAll(c)
	return string(b), err
}

func TestTheLeanForwarderRelaysResponsesAsTheUpstreamFramedThem(t *testing.T) {
	tests := []struct {
		name     string
		req      string // a plain GET if empty
		upstream string
		want     []string // substrings of what the sandbox receives
		notWant  []string
	}{
		{
			name:     "a content-length response arrives byte for byte with its headers",
			req:      "GET /a?b=c HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n",
			upstream: "HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-Up: 1\r\nX-Up: 2\r\nContent-Type: text/x-up\r\n\r\nhello",
			want:     []string{"HTTP/1.1 201 Created\r\n", "Content-Length: 5\r\n", "X-Up: 1\r\nX-Up: 2\r\n", "Content-Type: text/x-up\r\n", "\r\n\r\nhello"},
		},
		{
			name:     "a body larger than the connection's buffer arrives whole",
			upstream: "HTTP/1.1 200 OK\r\nContent-Length: 100006\r\n\r\nSTART-" + strings.Repeat("x", 99997) + "END",
			want:     []string{"Content-Length: 100006\r\n", "\r\n\r\nSTART-" + strings.Repeat("x", 99997) + "END"},
		},
		{
			name:     "a chunked response keeps its trailers",
			req:      "GET / HTTP/1.1\r\nHost: example.test\r\nTE: trailers\r\nConnection: close\r\n\r\n",
			upstream: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 42\r\n\r\n",
			want:     []string{"Transfer-Encoding: chunked", "abc", "de", "X-Sum: 42"},
		},
		{
			name:     "a close-delimited response is relayed until the upstream closes",
			upstream: "HTTP/1.0 200 OK\r\n\r\nuntil the end",
			want:     []string{"HTTP/1.1 200 OK", "until the end"},
		},
		{
			name:     "HEAD keeps the upstream's Content-Length and carries no body",
			req:      "HEAD / HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n",
			upstream: "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
			want:     []string{"Content-Length: 1234\r\n"},
		},
		{
			name:     "an informational 100 Continue before the answer is skipped",
			upstream: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
			want:     []string{"HTTP/1.1 200 OK", "\r\n\r\nok"},
			notWant:  []string{"100 Continue"},
		},
		{
			name:     "no Content-Type is invented for a body without one",
			upstream: "HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n<html></html>\n",
			notWant:  []string{"Content-Type"},
		},
		{
			name:     "hop-by-hop response headers stay on the upstream's connection",
			upstream: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nKeep-Alive: timeout=5\r\nConnection: X-Private\r\nX-Private: 1\r\nX-Public: 1\r\n\r\n",
			want:     []string{"X-Public: 1"},
			notWant:  []string{"Keep-Alive", "X-Private"},
		},
		{
			name:     "a field the Connection header names is dropped, also one that came before it",
			upstream: "HTTP/1.1 200 OK\r\nX-Early: 1\r\nContent-Length: 2\r\nConnection: x-early\r\nX-Late: 1\r\n\r\nok",
			want:     []string{"X-Late: 1\r\n", "\r\n\r\nok"},
			notWant:  []string{"X-Early"},
		},
		{
			name:     "the upstream's Date is kept",
			upstream: "HTTP/1.1 200 OK\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\nContent-Length: 2\r\n\r\nok",
			want:     []string{"Date: Mon, 02 Jan 2006 15:04:05 GMT\r\n"},
		},
		{
			name:     "a Date the Connection header names gives way to the hop's own",
			upstream: "HTTP/1.1 200 OK\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\nConnection: date\r\nContent-Length: 2\r\n\r\nok",
			want:     []string{"Date: "},
			notWant:  []string{"2006"},
		},
		{
			name:     "repeated identical Content-Length values are sent as one",
			upstream: "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\ncontent-length: 2\r\n\r\nok",
			want:     []string{"Content-Length: 2\r\n", "\r\n\r\nok"},
			notWant:  []string{"2, 2", "content-length"},
		},
		{
			name:     "Transfer-Encoding beside Content-Length: the body is read by the first, the second is dropped",
			upstream: "HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
			want:     []string{"abc"},
			notWant:  []string{"Content-Length: 99"},
		},
		{
			name:     "an informational head's fields do not reach the answer",
			upstream: "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\nContent-Length: 9\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
			want:     []string{"HTTP/1.1 200 OK", "Content-Length: 2\r\n", "\r\n\r\nok"},
			notWant:  []string{"Link", "103"},
		},
		{
			name:     "a control character in a field is a 502",
			upstream: "HTTP/1.1 200 OK\r\nX-Bad: a\x01b\r\nContent-Length: 2\r\n\r\nok",
			want:     []string{"HTTP/1.1 502 Bad Gateway"},
			notWant:  []string{"X-Bad"},
		},
		{
			name:     "a folded field is a 502",
			upstream: "HTTP/1.1 200 OK\r\nX-Fold: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
			want:     []string{"HTTP/1.1 502 Bad Gateway"},
			notWant:  []string{"X-Fold"},
		},
		{
			name:     "a 304 carries no body however its header reads",
			upstream: "HTTP/1.1 304 Not Modified\r\nEtag: \"x\"\r\n\r\n",
			want:     []string{"HTTP/1.1 304 Not Modified", "Etag: \"x\""},
		},
		{
			name:     "a malformed status line is a 502, not a relay",
			upstream: "SMTP ready\r\n\r\n",
			want:     []string{"HTTP/1.1 502 Bad Gateway"},
		},
		{
			name:     "conflicting Content-Length values from the upstream are a 502",
			upstream: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
			want:     []string{"HTTP/1.1 502 Bad Gateway"},
		},
	}
	for _, front := range fronts {
		for _, tt := range tests {
			t.Run(front.name+"/"+tt.name, func(t *testing.T) {
				up := newScripted(t, func(*http.Request, string) (string, bool) { return tt.upstream, true })
				req := tt.req
				if req == "" {
					req = "GET / HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n"
				}
				got, err := rawExchange(t, front.start(t, newForward(), up.addr), req)
				if err != nil {
					t.Fatalf("reading the response: %v (got %q)", err, got)
				}
				for _, w := range tt.want {
					if !strings.Contains(got, w) {
						t.Errorf("response lacks %q:\n%s", w, got)
					}
				}
				for _, w := range tt.notWant {
					if strings.Contains(got, w) {
						t.Errorf("response has %q:\n%s", w, got)
					}
				}
			})
		}
	}
}

func TestTheLeanLoopRelaysAnUpstreamsFieldsInTheirOrderAndSpelling(t *testing.T) {
	up := newScripted(t, func(*http.Request, string) (string, bool) {
		return "HTTP/1.1 200 OK\r\nx-b: 1\r\nContent-Length: 2\r\nX-Interceptd-Request-Id: up\r\nWWW-Authenticate: Basic\r\nx-a: 2\r\n\r\nok", true
	})
	got, err := rawExchange(t, fronts[1].start(t, newForward(), up.addr), "GET / HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n")
	if err != nil {
		t.Fatalf("reading the response: %v (got %q)", err, got)
	}
	ours := strings.Index(got, "X-Interceptd-Request-Id: ")
	if want := "x-b: 1\r\nX-Interceptd-Request-Id: up\r\nWWW-Authenticate: Basic\r\nx-a: 2\r\n"; !strings.Contains(got, want) || ours < 0 || ours > strings.Index(got, want) {
		t.Errorf("want our request id, then %q, in the response:\n%s", want, got)
	}
}

// fronts serve the forwarder as a sandbox meets it: through net/http (the
// path of handed-off connections) and through the lean loop and the
// router, for requests to example.test.
var fronts = []struct {
	name  string
	start func(t *testing.T, f *Forwarder, dest netip.AddrPort) string
}{
	{"net/http", frontFor},
	{"lean loop", func(t *testing.T, f *Forwarder, dest netip.AddrPort) string {
		addr, _ := routertest.ServeRoutes(t, nil, map[string]router.Route{"example.test": forwardTo(f, dest)})
		return addr
	}},
}

func TestTheLeanForwarderPassesTheRequestOnAsTheSandboxSentIt(t *testing.T) {
	tests := []struct {
		name, req  string
		check      func(t *testing.T, r *http.Request, body string)
		wantStatus string
	}{
		{
			name: "end-to-end headers, the target and the Host are kept",
			req:  "GET /p/a%20th?q=1 HTTP/1.1\r\nHost: Example.test:80\r\nX-Forwarded-For: 203.0.113.9\r\nUser-Agent: agent/1\r\nX-Two: a\r\nX-Two: b\r\nConnection: close\r\n\r\n",
			check: func(t *testing.T, r *http.Request, _ string) {
				if r.RequestURI != "/p/a%20th?q=1" || r.Host != "Example.test:80" || r.Header.Get("X-Forwarded-For") != "203.0.113.9" ||
					r.UserAgent() != "agent/1" || strings.Join(r.Header["X-Two"], ",") != "a,b" {
					t.Errorf("upstream saw %s %s Host=%s headers=%v", r.Method, r.RequestURI, r.Host, r.Header)
				}
			},
		},
		{
			name: "hop-by-hop headers and those the Connection header names are dropped",
			req:  "GET / HTTP/1.1\r\nHost: example.test\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nProxy-Authorization: Basic eA==\r\nTE: gzip\r\n\r\n",
			check: func(t *testing.T, r *http.Request, _ string) {
				for _, h := range []string{"X-Hop", "Keep-Alive", "Proxy-Authorization", "Te"} {
					if _, ok := r.Header[h]; ok {
						t.Errorf("upstream saw %s: %v", h, r.Header)
					}
				}
				if r.Close {
					t.Error("the sandbox's Connection: close reached the upstream connection")
				}
			},
		},
		{
			name: "a body with a length arrives with that length",
			req:  "PUT /k HTTP/1.1\r\nHost: example.test\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world",
			check: func(t *testing.T, r *http.Request, body string) {
				if r.ContentLength != 11 || body != "hello world" {
					t.Errorf("upstream got length %d body %q", r.ContentLength, body)
				}
			},
		},
		{
			name: "a chunked body arrives chunked and whole",
			req:  "POST /k HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
			check: func(t *testing.T, r *http.Request, body string) {
				if len(r.TransferEncoding) != 1 || r.TransferEncoding[0] != "chunked" || body != "hello world" {
					t.Errorf("upstream got encoding %v body %q", r.TransferEncoding, body)
				}
			},
		},
		{
			name: "an empty POST says Content-Length: 0",
			req:  "POST /k HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n",
			check: func(t *testing.T, r *http.Request, body string) {
				if r.Header.Get("Content-Length") != "0" {
					t.Errorf("upstream headers %v", r.Header)
				}
			},
		},
	}
	for _, front := range fronts {
		for _, tt := range tests {
			t.Run(front.name+"/"+tt.name, func(t *testing.T) {
				up := newScripted(t, func(*http.Request, string) (string, bool) {
					return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
				})
				got, err := rawExchange(t, front.start(t, newForward(), up.addr), tt.req)
				if err != nil || !strings.HasPrefix(got, "HTTP/1.1 200 OK") {
					t.Fatalf("response %q, %v", got, err)
				}
				tt.check(t, <-up.got, <-up.bodies)
			})
		}
	}
}

func TestTheLeanForwarderKeepsUpstreamConnectionsAlive(t *testing.T) {
	t.Run("requests on one sandbox connection share one upstream connection", func(t *testing.T) {
		up := newScripted(t, func(*http.Request, string) (string, bool) {
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
		})
		c := &http.Client{}
		front := "http://" + frontFor(t, newForward(), up.addr) + "/"
		for i := 0; i < 5; i++ {
			mustGet(t, c, front, "ok")
		}
		if n := up.accepts.Load(); n != 1 {
			t.Errorf("upstream accepted %d connections for 5 requests, want 1", n)
		}
	})
	t.Run("an upstream that closes idle connections costs the sandbox no error", func(t *testing.T) {
		up := newScripted(t, func(*http.Request, string) (string, bool) {
			// Keep-alive in the header, but the upstream hangs up anyway,
			// as servers with short idle timeouts do.
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true
		})
		c := &http.Client{}
		front := "http://" + frontFor(t, newForward(), up.addr) + "/"
		for i := 0; i < 5; i++ {
			mustGet(t, c, front, "ok")        // sent again on a new connection when need be
			time.Sleep(10 * time.Millisecond) // let the FIN arrive
		}
		for i := 0; i < 5; i++ {
			// Not sendable twice: the idle connection is checked first.
			resp, err := c.Post(front, "text/plain", strings.NewReader("body"))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "ok" {
				t.Fatalf("POST %d: %d %q", i, resp.StatusCode, b)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	t.Run("Connection: close from the upstream is not pooled", func(t *testing.T) {
		up := newScripted(t, func(*http.Request, string) (string, bool) {
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", false
		})
		c := &http.Client{}
		front := "http://" + frontFor(t, newForward(), up.addr) + "/"
		for i := 0; i < 3; i++ {
			mustGet(t, c, front, "ok")
		}
		if n := up.accepts.Load(); n != 3 {
			t.Errorf("upstream accepted %d connections, want 3", n)
		}
	})
}

func mustGet(t *testing.T, c *http.Client, url, want string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != want {
		t.Fatalf("GET %s: %d %q", url, resp.StatusCode, b)
	}
}

func TestTheLeanForwarderFailsVisibly(t *testing.T) {
	t.Run("a response cut short cuts the sandbox's connection", func(t *testing.T) {
		up := newScripted(t, func(*http.Request, string) (string, bool) {
			return "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b", true
		})
		resp, err := http.Get("http://" + frontFor(t, newForward(), up.addr) + "/")
		if err != nil {
			return // cut before the header went out: also not complete-looking
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Fatalf("read %d bytes and no error: a truncated body looked complete", len(b))
		}
	})
	t.Run("an upstream that answers before reading a large body still gets its answer through", func(t *testing.T) {
		dest := oneConnUpstream(t, func(c net.Conn) {
			defer c.Close()
			http.ReadRequest(bufio.NewReader(c)) // the header only
			io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig")
			time.Sleep(200 * time.Millisecond)
		})
		front := frontFor(t, newForward(), dest)
		// The sandbox reads while it still sends, as a browser does: its
		// upload may be cut once the answer is out (so a write error is
		// no failure), but the answer must reach it.
		c, err := net.Dial("tcp", front)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		const size = 8 << 20
		go func() {
			fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: up.test\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", size)
			c.Write(bytes.Repeat([]byte("x"), size))
		}()
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("the answer did not reach the sandbox: %v", err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if resp.StatusCode != 413 || string(b) != "big" || err != nil {
			t.Errorf("got %d %q (%v), want the upstream's 413 %q", resp.StatusCode, b, err, "big")
		}
	})
	t.Run("nothing listening is a 502 naming the refusal", func(t *testing.T) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		dest := ln.Addr().(*net.TCPAddr).AddrPort()
		ln.Close()
		resp, err := http.Get("http://" + frontFor(t, newForward(), dest) + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 502 || resp.Header.Get("X-Interceptd-Error") != "upstream refused" {
			t.Errorf("got %d %q", resp.StatusCode, resp.Header.Get("X-Interceptd-Error"))
		}
	})
}

// The forwarder's own client carries no upgrade: it goes through its
// httputil.ReverseProxy. This tests that path alone; the proxy handler's
// upgrades (with injection) are tested in router/upgrade_test.go, and both
// from a sandbox with a real WebSocket client in e2e/websocket_test.go.
func TestAnUpgradeGoesThroughTheForwardersReverseProxy(t *testing.T) {
	up := newScripted(t, func(r *http.Request, _ string) (string, bool) {
		if r.Header.Get("Upgrade") != "echo" {
			return "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", true
		}
		return "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nswitched", true
	})
	got, _ := rawExchange(t, frontFor(t, newForward(), up.addr),
		"GET / HTTP/1.1\r\nHost: example.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	if !strings.HasPrefix(got, "HTTP/1.1 101") || !strings.HasSuffix(got, "switched") {
		t.Errorf("got %q", got)
	}
}

// BenchmarkForwardLean is the forwarder's own cost per request over
// loopback (both sides kept alive), for comparing with ReverseProxy.
func BenchmarkForwardLean(b *testing.B) {
	for _, lean := range []bool{true, false} {
		b.Run(fmt.Sprintf("lean=%v", lean), func(b *testing.B) {
			upSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })}
			uln, _ := net.Listen("tcp", "127.0.0.1:0")
			go upSrv.Serve(uln)
			defer upSrv.Close()
			f := newForward()
			dest := uln.Addr().(*net.TCPAddr).AddrPort()
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if lean {
					if err := f.Forward(&recorder{ResponseWriter: w}, r, Target{Dest: dest}); err != nil {
						b.Error(err)
					}
					return
				}
				f.once.Do(f.init)
				f.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), targetKey{}, Target{Dest: dest})))
			})
			fln, _ := net.Listen("tcp", "127.0.0.1:0")
			fs := &http.Server{Handler: h}
			go fs.Serve(fln)
			defer fs.Close()
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
			url := "http://" + fln.Addr().String() + "/"
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := c.Get(url)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		})
	}
}

func TestAnEndlessResponseHeaderIsRefusedNotBuffered(t *testing.T) {
	dest := oneConnUpstream(t, func(c net.Conn) {
		defer c.Close()
		http.ReadRequest(bufio.NewReader(c))
		io.WriteString(c, "HTTP/1.1 200 OK\r\n")
		line := "X-Pad: " + strings.Repeat("a", 1000) + "\r\n"
		for i := 0; i < 10000; i++ { // 10 MB of header fields
			if _, err := io.WriteString(c, line); err != nil {
				return
			}
		}
	})
	resp, err := http.Get("http://" + frontFor(t, newForward(), dest) + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 502 {
		t.Errorf("got %d, want 502", resp.StatusCode)
	}
}

func TestIdleUpstreamConnectionsAreClosedWithoutFurtherTraffic(t *testing.T) {
	up := newScripted(t, func(*http.Request, string) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
	})
	f := newForward()
	front := "http://" + frontFor(t, f, up.addr) + "/"
	mustGet(t, &http.Client{}, front, "ok")
	f.pool.mu.Lock()
	f.pool.idleTimeout = 50 * time.Millisecond
	f.pool.janitor.Reset(50 * time.Millisecond)
	f.pool.mu.Unlock()
	waitForEmptyPool(t, f.pool)
}

// waitForEmptyPool waits until p holds no connection, no list (not even an
// empty one) and no running sweep.
func waitForEmptyPool(t *testing.T, p *upstreamPool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		p.mu.Lock()
		n, lists, sweeping := p.n, len(p.idle), p.janitor != nil
		p.mu.Unlock()
		if n == 0 && lists == 0 && !sweeping {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d idle connections, %d lists, sweeping %v: want none", n, lists, sweeping)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestADestinationWhoseConnectionsAllClosedLeavesNothingInThePool(t *testing.T) {
	var calls atomic.Int32
	up := newScripted(t, func(*http.Request, string) (string, bool) {
		if calls.Add(1) == 1 {
			return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false // kept alive: pooled
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", true // taken, then closed
	})
	f := newForward()
	front := "http://" + frontFor(t, f, up.addr) + "/"
	mustGet(t, &http.Client{}, front, "ok")
	f.pool.mu.Lock()
	f.pool.idleTimeout = 50 * time.Millisecond
	f.pool.janitor.Reset(50 * time.Millisecond)
	f.pool.mu.Unlock()
	mustGet(t, &http.Client{}, front, "ok")
	waitForEmptyPool(t, f.pool)
}

func TestSandboxesDoNotShareUpstreamConnections(t *testing.T) {
	up := newScripted(t, func(*http.Request, string) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
	})
	f := newForward()
	f.once.Do(f.init)
	for _, sb := range []string{"a", "b", "a"} {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			routertest.AsRouter(handler(f), &recorder{ResponseWriter: w}, r, router.Env{Sandbox: sb, Dest: up.addr})
		})}
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		go srv.Serve(ln)
		mustGet(t, &http.Client{}, "http://"+ln.Addr().String()+"/", "ok")
		srv.Close()
	}
	if n := up.accepts.Load(); n != 2 {
		t.Errorf("upstream accepted %d connections for sandboxes a, b, a: want 2 (one each, a's reused)", n)
	}
}

func TestASandboxStallingItsUploadGetsTheUpstreamsAnswerAtOnce(t *testing.T) {
	tests := []struct {
		name     string
		upstream func(c net.Conn)
		want     int
	}{
		{"an upstream that answers before reading the body", func(c net.Conn) {
			defer c.Close()
			http.ReadRequest(bufio.NewReader(c)) // the header only
			io.WriteString(c, "HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\nno")
			time.Sleep(5 * time.Second) // and never reads the body
		}, 401},
		{"an upstream that fails mid-upload", func(c net.Conn) {
			http.ReadRequest(bufio.NewReader(c))
			c.Close() // no answer at all
		}, 502},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", frontFor(t, newForward(), oneConnUpstream(t, tt.upstream)))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// The sandbox announces a large body and sends only a little of it.
			io.WriteString(c, "PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nsome")
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			start := time.Now()
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("no answer after %v: %v", time.Since(start), err)
			}
			if resp.StatusCode != tt.want || time.Since(start) > time.Second {
				t.Errorf("got %d after %v, want %d at once", resp.StatusCode, time.Since(start), tt.want)
			}
		})
	}
}

// loopbackListener listens on 127.0.0.1 until the test ends.
func loopbackListener(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// oneConnUpstream listens on 127.0.0.1, hands the first connection to
// serve, and returns the address.
func oneConnUpstream(t *testing.T, serve func(c net.Conn)) netip.AddrPort {
	ln := loopbackListener(t)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		serve(c)
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

func TestAnUpstreams408OnAnIdleConnectionIsNotTheAnswer(t *testing.T) {
	// Some servers send an unasked-for 408 on an idle kept-alive
	// connection before closing it; it must not answer the next request.
	up := routertest.RawUpstream(t, func(c net.Conn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		time.Sleep(20 * time.Millisecond)
		io.WriteString(c, "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
		time.Sleep(200 * time.Millisecond)
	})
	front := "http://" + frontFor(t, newForward(), up) + "/"
	c := &http.Client{}
	for i, method := range []string{"GET", "GET", "POST", "GET", "POST"} {
		req, _ := http.NewRequest(method, front, strings.NewReader("x"))
		if method == "GET" {
			req.Body, req.ContentLength = nil, 0
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Errorf("%s %d: %d %q, want the upstream's 200", method, i, resp.StatusCode, b)
		}
		time.Sleep(60 * time.Millisecond)
	}
}

// forwardTo is a route that forwards as the router does for an
// intercepted connection to dest (in tests, the router's own listener is
// the destination the sandbox dialled).
func forwardTo(f *Forwarder, dest netip.AddrPort) router.Route {
	return router.Route{Name: "up", Handler: router.HandlerFunc(func(w http.ResponseWriter, r *http.Request, env router.Env) error {
		env.Dest = dest
		return handler(f).ServeHTTP(w, r, env)
	})}
}

// watchAfter is the server's (router/httpserve): a handler running this
// long has its connection watched, so that a sandbox going away is seen.
const watchAfter = 100 * time.Millisecond

func TestASandboxThatGoesAwayCutsItsForwardedRequestsUpstreamWait(t *testing.T) {
	tests := []struct {
		name, raw string
	}{
		{"served by the lean loop", "GET /hang HTTP/1.1\r\nHost: up\r\n\r\n"},
		{"served by net/http (a chunked upload)", "POST /hang HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			upstreamGone := make(chan struct{})
			up := routertest.RawUpstream(t, func(c net.Conn) {
				// Reads the request and never answers; its read ends when
				// the daemon closes the connection.
				io.Copy(io.Discard, c)
				close(upstreamGone)
			})
			addr, _ := routertest.ServeRoutes(t, nil, map[string]router.Route{"up": forwardTo(newForward(), up)})
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(c, tt.raw)
			time.Sleep(2 * watchAfter) // the handler is waiting, and watched
			c.Close()
			select {
			case <-upstreamGone:
			case <-time.After(5 * time.Second):
				t.Fatal("the upstream connection outlived the sandbox's by 5 s")
			}
		})
	}
}
