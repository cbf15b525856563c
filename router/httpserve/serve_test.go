package httpserve_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/interceptd/interceptd/metrics"
	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/handlers"
	"github.com/interceptd/interceptd/router/httpserve"
	"github.com/interceptd/interceptd/router/routertest"
	"github.com/interceptd/interceptd/router/wire"
	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
	"github.com/prometheus/client_golang/prometheus"
)

// echoHandler serves the behaviours the lean loop has to get right, by path.
func echoHandler(cancelled chan<- error) router.Handler {
	return router.HandlerFunc(func(w http.ResponseWriter, r *http.Request, env router.Env) error {
		switch r.URL.Path {
		case "/echo": // the body back, with its length
			b, err := io.ReadAll(r.Body)
			if err != nil {
				return err
			}
			w.Header().Set("Content-Length", fmt.Sprint(len(b)))
			w.Header().Set("X-Method", r.Method)
			w.Write(b)
		case "/small": // no length given, small: sent with one
			io.WriteString(w, "small body\n")
		case "/large": // no length given, large: chunked
			io.WriteString(w, strings.Repeat("x", 10000))
		case "/stream": // flushed as it goes
			for i := range 3 {
				fmt.Fprintf(w, "part %d\n", i)
				w.(http.Flusher).Flush()
			}
		case "/trailer":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "body")
			w.Header().Set("X-Sum", "42")
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
		case "/short": // promises more than it writes
			w.Header().Set("Content-Length", "100")
			io.WriteString(w, "only this")
		case "/abort":
			w.Header().Set("Content-Length", "100")
			io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		case "/wait": // until the sandbox goes away
			select {
			case <-r.Context().Done():
				cancelled <- r.Context().Err()
			case <-time.After(5 * time.Second):
				cancelled <- nil
			}
		case "/slow":
			time.Sleep(300 * time.Millisecond)
			io.WriteString(w, "slow")
		case "/big": // a large answer, the upload left unread
			w.Header().Set("Content-Length", fmt.Sprint(4<<20))
			w.Write(make([]byte, 4<<20))
		case "/abort-reading": // aborts with a reader of the body left behind
			started := make(chan struct{})
			go func() {
				close(started)
				b := make([]byte, 100)
				for {
					if _, err := r.Body.Read(b); err != nil {
						return
					}
				}
			}()
			<-started
			time.Sleep(10 * time.Millisecond)
			panic(http.ErrAbortHandler)
		case "/info":
			fmt.Fprintf(w, "%s %s host=%s len=%d close=%v q=%s", r.Method, r.Proto, r.Host, r.ContentLength, r.Close, r.URL.RawQuery)
		default:
			return router.Errorf(http.StatusNotFound, "no such path")
		}
		return nil
	})
}

type leanServer struct {
	addr      string
	srv       *httpserve.Server
	reg       *prometheus.Registry // the router's and the server's metrics
	cancelled chan error
}

func startLean(t *testing.T) *leanServer {
	t.Helper()
	ls := &leanServer{cancelled: make(chan error, 1), reg: prometheus.NewRegistry()}
	rm := router.NewMetrics(ls.reg, metrics.NewSandboxLabels(10))
	ls.addr, ls.srv = serveLean(t, rm, httpserve.NewMetrics(ls.reg), map[string]router.Route{"echo": {Name: "echo", Handler: echoHandler(ls.cancelled)}})
	return ls
}

// serveLean is routertest.ServeRoutes with the server and its metrics in
// hand: the tests below look at the server's state and count its handoffs.
func serveLean(t testing.TB, rm *router.Metrics, sm *httpserve.Metrics, routes map[string]router.Route) (string, *httpserve.Server) {
	t.Helper()
	rt := router.New(router.Config{
		Hosts: routes,
		Identify: func(a netip.Addr) (policy.Caller, bool) {
			return policy.Caller{Sandbox: routertest.Sandbox, Policy: policy.MustCompile(policy.Policy{Internet: true})}, a.IsLoopback()
		},
		Metrics: rm,
		Logger:  slog.New(slog.DiscardHandler),
	})
	return routertest.ServeHandler(t, rt, sm)
}

func (ls *leanServer) dial(t *testing.T) net.Conn {
	t.Helper()
	return routertest.Dial(t, "", ls.addr, 10*time.Second)
}

func TestTheLeanLoopServesPlainRequests(t *testing.T) {
	ls := startLean(t)
	for _, tc := range []struct {
		name, raw, method string
		want              []string // "status body"
		closed            bool
		check             func(t *testing.T, rs []*http.Response)
	}{
		{name: "two keep-alive GETs on one connection get two answers with length and date",
			raw:  "GET /small HTTP/1.1\r\nHost: echo\r\n\r\nGET /info?a=1 HTTP/1.1\r\nHost: echo\r\n\r\n",
			want: []string{"200 small body\n", "200 GET HTTP/1.1 host=echo len=0 close=false q=a=1"},
			check: func(t *testing.T, rs []*http.Response) {
				if rs[0].ContentLength != 11 || rs[0].Header.Get("Date") == "" || rs[0].Header.Get("Content-Type") == "" {
					t.Errorf("head %v: want a length, a date and a sniffed type", rs[0].Header)
				}
				if rs[0].Header.Get(wire.RequestIDHeader) == "" {
					t.Errorf("no request id")
				}
			}},
		{name: "a PUT's body reaches the handler",
			raw:  "PUT /echo HTTP/1.1\r\nHost: echo\r\nContent-Length: 5\r\n\r\nhello",
			want: []string{"200 hello"}},
		{name: "HTTP/1.0 without keep-alive is answered and closed",
			raw:  "GET /info HTTP/1.0\r\nHost: echo\r\n\r\n",
			want: []string{"200 GET HTTP/1.0 host=echo len=0 close=true q="}, closed: true},
		{name: "HTTP/1.0 with keep-alive stays open",
			raw:  "GET /small HTTP/1.0\r\nConnection: keep-alive\r\nHost: echo\r\n\r\n",
			want: []string{"200 small body\n"},
			check: func(t *testing.T, rs []*http.Response) {
				if rs[0].Header.Get("Connection") != "keep-alive" {
					t.Errorf("Connection %q, want keep-alive", rs[0].Header.Get("Connection"))
				}
			}},
		{name: "Connection close is answered with close",
			raw:  "GET /small HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n",
			want: []string{"200 small body\n"}, closed: true},
		{name: "HEAD gets the head and no body",
			raw: "HEAD /echo HTTP/1.1\r\nHost: echo\r\n\r\n", method: "HEAD",
			want: []string{"200 "}},
		{name: "pipelined requests are answered in order",
			raw:  strings.Repeat("GET /small HTTP/1.1\r\nHost: echo\r\n\r\n", 3) + "PUT /echo HTTP/1.1\r\nHost: echo\r\nContent-Length: 2\r\n\r\nok",
			want: []string{"200 small body\n", "200 small body\n", "200 small body\n", "200 ok"}},
		{name: "a large body without a length is chunked",
			raw:  "GET /large HTTP/1.1\r\nHost: echo\r\n\r\n",
			want: []string{"200 " + strings.Repeat("x", 10000)},
			check: func(t *testing.T, rs []*http.Response) {
				if len(rs[0].TransferEncoding) != 1 || rs[0].TransferEncoding[0] != "chunked" {
					t.Errorf("transfer encoding %v, want chunked", rs[0].TransferEncoding)
				}
			}},
		{name: "a large body to HTTP/1.0 ends with the connection",
			raw:  "GET /large HTTP/1.0\r\nHost: echo\r\nConnection: keep-alive\r\n\r\n",
			want: []string{"200 " + strings.Repeat("x", 10000)}, closed: true},
		{name: "a flushed stream arrives whole",
			raw:  "GET /stream HTTP/1.1\r\nHost: echo\r\n\r\n",
			want: []string{"200 part 0\npart 1\npart 2\n"}},
		{name: "declared trailers follow the body",
			raw:  "GET /trailer HTTP/1.1\r\nHost: echo\r\n\r\n",
			want: []string{"200 body"},
			check: func(t *testing.T, rs []*http.Response) {
				if rs[0].Trailer.Get("X-Sum") != "42" {
					t.Errorf("trailer %v, want X-Sum: 42", rs[0].Trailer)
				}
			}},
		{name: "204 has no body and no length",
			raw:  "GET /nocontent HTTP/1.1\r\nHost: echo\r\n\r\nGET /small HTTP/1.1\r\nHost: echo\r\n\r\n",
			want: []string{"204 ", "200 small body\n"}},
		{name: "a handler that writes less than its length has the connection cut",
			raw:  "GET /short HTTP/1.1\r\nHost: echo\r\n\r\nGET /small HTTP/1.1\r\nHost: echo\r\n\r\n",
			want: []string{"200 ERR unexpected EOF"}, closed: true},
		{name: "an aborting handler's connection is cut after what it wrote",
			raw:  "GET /abort HTTP/1.1\r\nHost: echo\r\n\r\n",
			want: []string{"200 ERR unexpected EOF"}, closed: true},
		{name: "an unread body is read away and the connection kept",
			raw:  "POST /small HTTP/1.1\r\nHost: echo\r\nContent-Length: 3\r\n\r\nabcGET /small HTTP/1.1\r\nHost: echo\r\n\r\n",
			want: []string{"200 small body\n", "200 small body\n"}},
		{name: "a router error is answered with its status",
			raw:  "GET /nowhere HTTP/1.1\r\nHost: echo\r\n\r\n",
			want: []string{"404 interceptd: no such path\n"}},

		// What the lean loop hands to net/http, with the connection.
		{name: "a chunked upload after a plain request is served by net/http on the same connection",
			raw: "GET /small HTTP/1.1\r\nHost: echo\r\n\r\n" +
				"PUT /echo HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" +
				"GET /small HTTP/1.1\r\nHost: echo\r\n\r\n",
			want: []string{"200 small body\n", "200 abc", "200 small body\n"}},
		{name: "an Expect upload gets its 100 Continue from net/http",
			raw:  "PUT /echo HTTP/1.1\r\nHost: echo\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
			want: []string{"100 ", "200 hi"}},
		{name: "a bare-LF head is net/http's to judge",
			raw:  "GET /small HTTP/1.1\nHost: echo\n\n",
			want: []string{"200 small body\n"}},
		{name: "a head over the lean buffer is served by net/http",
			raw:  "GET /small HTTP/1.1\r\nHost: echo\r\nX-Big: " + strings.Repeat("b", 9000) + "\r\n\r\n",
			want: []string{"200 small body\n"}},
		{name: "two Host fields are refused by net/http",
			raw:  "GET /small HTTP/1.1\r\nHost: echo\r\nHost: other\r\n\r\n",
			want: []string{"400 400 Bad Request"}, closed: true},
		{name: "two lengths are refused by net/http",
			raw:  "PUT /echo HTTP/1.1\r\nHost: echo\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
			want: []string{"400 400 Bad Request"}, closed: true},
		{name: "both lengths are refused by the smuggling watcher after the handoff",
			raw:  "POST /echo HTTP/1.1\r\nHost: echo\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: echo\r\n\r\n",
			want: []string{"400 interceptd: both Content-Length and Transfer-Encoding: refused as request smuggling\n"}, closed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs, bodies, closed := routertest.Exchange(t, ls.dial(t), tc.raw, tc.method, len(tc.want))
			var got []string
			for i, r := range rs {
				got = append(got, fmt.Sprintf("%d %s", r.StatusCode, bodies[i]))
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %q\nwant %q", got, tc.want)
			}
			if closed != tc.closed {
				t.Errorf("connection closed: %v, want %v", closed, tc.closed)
			}
			if tc.check != nil {
				tc.check(t, rs)
			}
		})
	}
	if n := routertest.Counted(t, ls.reg, "interceptd_router_connections_handed_off_total", nil); n != 7 {
		t.Errorf("%v connections handed off, want the 7 cases above", n)
	}
}

func TestAHeadThatTricklesInIsStillServed(t *testing.T) {
	ls := startLean(t)
	c := ls.dial(t)
	for _, part := range []string{"GET /sm", "all HTTP/1.1\r\nHo", "st: echo\r\n", "\r\n"} {
		io.WriteString(c, part)
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("response %v, %v", resp, err)
	}
}

// leaveDuringWait sends a request whose handler waits for the sandbox to
// go away, goes away once the request is watched, and checks that the
// handler's context was cancelled.
func (ls *leanServer) leaveDuringWait(t *testing.T) {
	t.Helper()
	c := ls.dial(t)
	io.WriteString(c, "GET /wait HTTP/1.1\r\nHost: echo\r\n\r\n")
	time.Sleep(2 * httpserve.WatchAfter)
	c.Close()
	select {
	case err := <-ls.cancelled:
		if err == nil {
			t.Fatal("the handler's context was not cancelled")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler never ended")
	}
}

func TestASandboxThatGoesAwayCancelsItsRequest(t *testing.T) {
	ls := startLean(t)
	ls.leaveDuringWait(t)
}

func TestARequestThatOutlivesTheWatchKeepsItsConnection(t *testing.T) {
	// The watcher reads ahead while the handler runs; what it reads is the
	// next request's start, and must not be lost.
	ls := startLean(t)
	c := ls.dial(t)
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: echo\r\n\r\n")
	time.Sleep(2 * httpserve.WatchAfter)
	rs, bodies, closed := routertest.Exchange(t, c, "GET /small HTTP/1.1\r\nHost: echo\r\n\r\n", "", 2)
	if len(rs) != 2 || bodies[0] != "slow" || bodies[1] != "small body\n" || closed {
		t.Fatalf("bodies %q closed %v: want slow, then small body, and the connection open", bodies, closed)
	}
}

func TestShutdownFinishesWhatRunsAndClosesWhatIdles(t *testing.T) {
	// The running request is held until Shutdown has begun: events, not
	// sleeps, so a busy machine cannot make it idle (not yet read) or done
	// (already answered) when Shutdown comes.
	started, release := make(chan struct{}), make(chan struct{})
	hold := router.HandlerFunc(func(w http.ResponseWriter, r *http.Request, env router.Env) error {
		close(started)
		<-release
		io.WriteString(w, "slow")
		return nil
	})
	addr, srv := serveLean(t, nil, nil, map[string]router.Route{
		"echo": {Name: "echo", Handler: echoHandler(make(chan error, 1))},
		"hold": {Name: "hold", Handler: hold},
	})
	ls := &leanServer{addr: addr, srv: srv}
	idle := ls.dial(t)
	rs, _, _ := routertest.Exchange(t, idle, "GET /small HTTP/1.1\r\nHost: echo\r\n\r\n", "", 1)
	if len(rs) != 1 {
		t.Fatal("no answer")
	}
	busy := ls.dial(t)
	io.WriteString(busy, "GET /slow HTTP/1.1\r\nHost: hold\r\n\r\n")
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not reach its handler within 10 s")
	}
	done := make(chan error, 1)
	go func() { done <- ls.srv.Shutdown(context.Background()) }()
	for !ls.srv.Closing() {
		time.Sleep(time.Millisecond)
	}
	close(release)
	resp, err := http.ReadResponse(bufio.NewReader(busy), nil)
	if err != nil {
		t.Fatalf("the running request was cut: %v", err)
	}
	if b, _ := io.ReadAll(resp.Body); string(b) != "slow" || !resp.Close {
		t.Errorf("body %q close %v: want slow, with Connection: close", b, resp.Close)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	idle.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("idle connection read: %v, want EOF", err)
	}
	if _, err := net.Dial("tcp", ls.addr); err == nil {
		t.Error("still accepting after Shutdown")
	}
}

func TestAnUnreadUploadDoesNotCostTheSandboxItsAnswer(t *testing.T) {
	// Closing with the upload unread must not reset the connection while
	// the answer is still on its way.
	ls := startLean(t)
	for i := range 3 {
		c := ls.dial(t)
		go func() {
			io.WriteString(c, "PUT /big HTTP/1.1\r\nHost: echo\r\nContent-Length: 2000000\r\n\r\n")
			c.Write(make([]byte, 1000000))
		}()
		time.Sleep(50 * time.Millisecond)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if n, err := io.Copy(io.Discard, resp.Body); n != 4<<20 {
			t.Fatalf("run %d: %d of %d bytes: %v", i, n, 4<<20, err)
		}
	}
}

func TestABodyReaderLeftBehindByAnAbortTouchesNoOtherConnection(t *testing.T) {
	// Run with -race: the reader the handler left must be stopped before
	// the connection's buffer goes back to the pool for another sandbox.
	ls := startLean(t)
	c := ls.dial(t)
	io.WriteString(c, "PUT /abort-reading HTTP/1.1\r\nHost: echo\r\nContent-Length: 100000\r\n\r\nab")
	for range 10 {
		rs, _, _ := routertest.Exchange(t, ls.dial(t), "GET /small HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n", "", 1)
		if len(rs) != 1 {
			t.Fatal("no answer")
		}
	}
	io.WriteString(c, "more of the body")
	if _, err := io.ReadAll(c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the aborted connection: %v", err)
	}
}

func TestAProxiedAnswerCutMidBodyIsCutForTheSandboxToo(t *testing.T) {
	up := routertest.RawUpstream(t, func(c net.Conn) {
		http.ReadRequest(bufio.NewReader(c))
		io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
		time.Sleep(20 * time.Millisecond) // then cut, before the last chunk
	})
	c := dialProxied(t, up)
	io.WriteString(c, "GET /x HTTP/1.1\r\nHost: p\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(resp.Body); err == nil {
		t.Fatalf("the sandbox got %q as a complete answer", b)
	}
}

// BenchmarkIdleConnections reports the heap a kept-alive connection holds
// while it waits for its next request (the lean loop gives its buffers
// back), and the cost of one small request on such a connection.
func BenchmarkIdleConnections(b *testing.B) {
	addr, _ := routertest.ServeRoutes(b, nil, map[string]router.Route{"echo": {Name: "echo", Handler: echoHandler(make(chan error, 1))}})
	const n = 500
	req := []byte("GET /small HTTP/1.1\r\nHost: echo\r\n\r\n")
	round := func(c net.Conn, br *bufio.Reader) {
		c.Write(req)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	conns := make([]net.Conn, n)
	readers := make([]*bufio.Reader, n)
	for i := range conns {
		var err error
		if conns[i], err = net.Dial("tcp", addr); err != nil {
			b.Fatal(err)
		}
		defer conns[i].Close()
		readers[i] = bufio.NewReader(conns[i])
		round(conns[i], readers[i])
	}
	time.Sleep(100 * time.Millisecond)
	runtime.GC()
	runtime.ReadMemStats(&after)
	// The client's side is in the same heap: subtract its readers.
	perConn := (float64(after.HeapInuse+after.StackInuse) - float64(before.HeapInuse+before.StackInuse)) / n
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		round(conns[i%n], readers[i%n])
	}
	b.ReportMetric(perConn/1024, "KiB/idle-conn")
}

func TestKeptAliveRequestsAreNotHeldBackBetweenEachOther(t *testing.T) {
	// A connection waiting for its next request must see it at once: a
	// wait that missed data already there held each request until the
	// next ACK (about 40 ms). 200 requests take milliseconds; the bound
	// is far from both.
	ls := startLean(t)
	c := ls.dial(t)
	br := bufio.NewReader(c)
	start := time.Now()
	for i := range 200 {
		io.WriteString(c, "GET /small HTTP/1.1\r\nHost: echo\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("200 kept-alive requests took %v", d)
	}
}

func TestAConnectionThatIdledReadsItsNextRequestWhole(t *testing.T) {
	// Between requests a connection holds no buffers: what comes first is
	// read into a small one of its own (preSize), the rest from the socket.
	long := "X-Long: " + strings.Repeat("a", 3000) + "\r\n"
	body := strings.Repeat("b", 2*httpserve.PreSize)
	tests := []struct {
		name  string
		parts []string // sent with a pause between
		want  string   // the body of the answer
	}{
		{"a head shorter than the first read", []string{"GET /info HTTP/1.1\r\nHost: echo\r\n\r\n"}, "GET HTTP/1.1 host=echo len=0 close=false q="},
		{"a head longer than the first read", []string{"GET /info?x=1 HTTP/1.1\r\nHost: echo\r\n" + long + "\r\n"}, "GET HTTP/1.1 host=echo len=0 close=false q=x=1"},
		{"a head and a body longer than the first read", []string{"PUT /echo HTTP/1.1\r\nHost: echo\r\nContent-Length: " + fmt.Sprint(len(body)) + "\r\n\r\n" + body}, body},
		{"a head that comes in pieces after the first read", []string{"GET /info?y=2 HT", "TP/1.1\r\nHo", "st: echo\r\n\r\n"}, "GET HTTP/1.1 host=echo len=0 close=false q=y=2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ls := startLean(t)
			c := ls.dial(t)
			br := bufio.NewReader(c)
			for i := range 2 { // the second after the connection idled
				time.Sleep(20 * time.Millisecond)
				for _, p := range tt.parts {
					io.WriteString(c, p)
					time.Sleep(10 * time.Millisecond)
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				b, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || string(b) != tt.want {
					t.Fatalf("request %d: %s %.80q, want 200 %.80q", i, resp.Status, b, tt.want)
				}
			}
		})
	}
}

func TestAnEarlyAnswerReachesASandboxStallingItsUpload(t *testing.T) {
	// The upstream answers 413 before reading the body; the sandbox has
	// sent part of it and waits. The answer must not wait for the rest.
	up := routertest.RawUpstream(t, func(c net.Conn) {
		http.ReadRequest(bufio.NewReader(c))
		io.WriteString(c, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig")
		time.Sleep(time.Second)
	})
	c := dialProxied(t, up)
	io.WriteString(c, "PUT /x HTTP/1.1\r\nHost: p\r\nContent-Length: 100000\r\n\r\npart of it")
	start := time.Now()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestEntityTooLarge || time.Since(start) > 3*time.Second {
		t.Fatalf("%d after %v: want the 413 at once", resp.StatusCode, time.Since(start))
	}
}

// dialProxied connects, as a sandbox, to a router whose host "p" is a
// Proxy to up.
func dialProxied(t *testing.T, up netip.AddrPort) net.Conn {
	t.Helper()
	p := &handlers.Proxy{Name: "p", Upstream: &url.URL{Scheme: "http", Host: up.String()}, Logger: slog.New(slog.DiscardHandler)}
	addr, _ := routertest.ServeRoutes(t, nil, map[string]router.Route{"p": {Name: "p", Handler: p}})
	return routertest.Dial(t, "", addr, 5*time.Second)
}

func TestAKeptAliveConnectionCountsEachRequestUnderItsOwnOutcome(t *testing.T) {
	// The requests counter's series is cached per connection: a change of
	// outcome (or handler) on the same connection must still be counted
	// under its own labels.
	ls := startLean(t)
	c := ls.dial(t)
	raw := ""
	for _, p := range []string{"/small", "/nope", "/small", "/nocontent", "/small"} {
		raw += "GET " + p + " HTTP/1.1\r\nHost: echo\r\n\r\n"
	}
	rs, _, _ := routertest.Exchange(t, c, raw, "", 5)
	if len(rs) != 5 {
		t.Fatalf("%d answers, want 5", len(rs))
	}
	for code, want := range map[string]float64{"200": 3, "404": 1, "204": 1} {
		got := routertest.Counted(t, ls.reg, "interceptd_router_requests_total", map[string]string{"handler": "echo", "code": code, "sandbox": routertest.Sandbox})
		if got != want {
			t.Errorf("code %s counted %v times, want %v", code, got, want)
		}
	}
}

func TestTheWatchSweeperRestsWhileNothingIsServedAndWakesForTheNextRequest(t *testing.T) {
	ls := startLean(t)
	idle := ls.dial(t)
	if rs, _, _ := routertest.Exchange(t, idle, "GET /small HTTP/1.1\r\nHost: echo\r\n\r\n", "", 1); len(rs) != 1 {
		t.Fatal("no answer")
	}
	// The connection stays open, idle: the sweeper must stop ticking.
	for deadline := time.Now().Add(2 * time.Second); ls.srv.Sweeping(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("still sweeping 2 s after the last request, with only an idle connection")
		}
	}
	// A long request starts it again: its sandbox going away is noticed.
	ls.leaveDuringWait(t)
}

// The lean loop keeps a per-sandbox handler's store space for the
// connection's next request; each sandbox and each handler must still see
// only its own keys.
func TestAKeptAliveConnectionKeepsEachSandboxsAndEachHandlersStateApart(t *testing.T) {
	db, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	perSandbox := func(ns string) *handlers.KV {
		return &handlers.KV{Store: backend.Bolt(db), Kind: store.KindState, Namespace: ns, PerSandbox: true, Limits: store.Limits{}.WithDefaults()}
	}
	addr, _ := routertest.Serve(t, router.Config{
		Hosts: map[string]router.Route{
			"state.do": {Name: "state.do", Handler: perSandbox("state")},
			"notes.do": {Name: "notes.do", Handler: perSandbox("notes")},
		},
		// The sandbox is the loopback address a connection comes from.
		Identify: func(a netip.Addr) (policy.Caller, bool) {
			return policy.Caller{Sandbox: "sb-" + a.String(), Policy: policy.MustCompile(policy.Policy{})}, a.IsLoopback()
		},
		Logger: slog.New(slog.DiscardHandler),
	})
	put := func(host, v string) string {
		return fmt.Sprintf("PUT /k HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n%s", host, len(v), v)
	}
	get := func(host string) string { return "GET /k HTTP/1.1\r\nHost: " + host + "\r\n\r\n" }
	a, b := routertest.Dial(t, "127.0.0.1", addr, 10*time.Second), routertest.Dial(t, "127.0.0.2", addr, 10*time.Second)
	for _, step := range []struct {
		name string
		c    net.Conn
		raw  string
		want []string
	}{
		{"one sandbox writes to both handlers and reads each back in turn", a,
			put("state.do", "a-state") + put("notes.do", "a-notes") + get("state.do") + get("notes.do") + get("state.do"),
			[]string{"204 ", "204 ", "200 a-state", "200 a-notes", "200 a-state"}},
		{"another sandbox does not see them and keeps its own", b,
			get("state.do") + put("state.do", "b-state") + get("state.do"),
			[]string{"404 interceptd: key not found\n", "204 ", "200 b-state"}},
		{"the first sandbox still reads its own", a,
			get("state.do") + get("notes.do"),
			[]string{"200 a-state", "200 a-notes"}},
	} {
		t.Run(step.name, func(t *testing.T) {
			rs, bodies, _ := routertest.Exchange(t, step.c, step.raw, "", len(step.want))
			var got []string
			for i, r := range rs {
				got = append(got, fmt.Sprintf("%d %s", r.StatusCode, bodies[i]))
			}
			if fmt.Sprint(got) != fmt.Sprint(step.want) {
				t.Fatalf("got %q\nwant %q", got, step.want)
			}
		})
	}
}

func TestARequestWithBothLengthsIsRefusedAndItsConnectionClosed(t *testing.T) {
	addr, _ := routertest.ServeRoutes(t, nil, map[string]router.Route{"stub": {Name: "stub", Handler: &handlers.Respond{Body: "ok"}}})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	// A good request, then the smuggling shape, pipelined on one connection.
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: stub\r\n\r\n"+
		"POST / HTTP/1.1\r\nHost: stub\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: stub\r\n\r\n")
	br := bufio.NewReader(c)
	var got []string
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			break
		}
		b, _ := io.ReadAll(resp.Body)
		got = append(got, fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b))))
	}
	if len(got) != 2 || got[0] != "200 ok" || !strings.HasPrefix(got[1], "400 ") || !strings.Contains(got[1], "Transfer-Encoding") {
		t.Fatalf("responses %q: want 200 ok, then a 400 naming the reason and nothing more", got)
	}
}
