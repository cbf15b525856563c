package router

import (
	"bufio"
	"bytes"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

var methodRE = regexp.MustCompile(`^[A-Z]{1,16}$`)

// FuzzKVPath sends arbitrary paths, methods and bodies through the router to
// the KV, state and blob handlers: every request gets a status, a 5xx never
// comes from the client's input, and a key stored is read back the same: a
// PUT that answers 2xx is followed by a GET of its path, which must answer
// 200 with the bytes put.
func FuzzKVPath(f *testing.F) {
	for _, s := range []string{"/a", "/a%2Fb", "/%zz", "/" + strings.Repeat("k", 600), "/%00", "/é", "/?prefix=%ff", "/a?ttl=-1", "/a?expiration=abc", "/Key/With%20Space", "/a?ttl=60"} {
		f.Add("PUT", s, "v")
		f.Add("GET", s, "")
	}
	f.Add("PUT", "/A/b", "Value\x00\xff")
	f.Add("PUT", "/k", "")
	f.Add("POST", "/", `{"writes":[{"key":"k","value":"v"}]}`)
	f.Add("POST", "/", `{"conditions":[{"key":"","absent":true}]}`)
	rt := handlersRouter(f)
	f.Fuzz(func(t *testing.T, method, target, body string) {
		if len(target) == 0 || target[0] != '/' || strings.ContainsAny(target, " \r\n\t#") || !methodRE.MatchString(method) {
			return // not a request line a client can send
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return // net/http answers 400 before any handler
		}
		path, _, _ := strings.Cut(target, "?")
		for _, host := range []string{"my.kv", "state.do", "my.r2"} {
			resp := do(rt, call{method: method, url: host + target, body: body})
			if resp.StatusCode >= 500 {
				t.Fatalf("%s %s%s: %d %s", method, host, target, resp.StatusCode, bodyOf(resp))
			}
			if method != "PUT" || resp.StatusCode/100 != 2 {
				continue
			}
			if host != "my.r2" && u.Query().Has("expiration") {
				continue // a unix time in seconds: it may be past by the GET
			}
			got := do(rt, call{method: "GET", url: host + path})
			if b := bodyOf(got); got.StatusCode != 200 || b != body {
				t.Fatalf("PUT %s%s answered %d, but GET %s%s answers %d with %q, want 200 with %q", host, target, resp.StatusCode, host, path, got.StatusCode, b, body)
			}
		}
	})
}

// FuzzLeanHead holds the lean loop's head parser to net/http's: whatever it
// accepts, http.ReadRequest accepts and reads the same, so the lean loop
// only ever takes a strict subset of what net/http would serve.
func FuzzLeanHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"PUT /k?x=1 HTTP/1.1\r\nHost: my.kv\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
		"GET /a%20b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 01\r\nConnection: close, x\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost:\r\nhost: b\r\n\r\n",
		"GET /\x00 HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
		"get //x/../y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET /a-b_c.d~e/F0?x=%20&y=#z HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /? HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET //x?a?b HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	proto := new(http.Request)
	f.Fuzz(func(t *testing.T, b []byte) {
		n, complete := headEnd(b)
		if !complete {
			return
		}
		lean, ok := parseHead(b[:n], proto)
		if !ok {
			return
		}
		std, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b[:n])))
		if err != nil {
			t.Fatalf("lean accepted %q, net/http refuses it: %v", b[:n], err)
		}
		if lean.Method != std.Method || lean.RequestURI != std.RequestURI || lean.Proto != std.Proto ||
			lean.ProtoMinor != std.ProtoMinor || lean.Host != std.Host || lean.ContentLength != std.ContentLength ||
			lean.Close != std.Close || !reflect.DeepEqual(*lean.URL, *std.URL) || std.TransferEncoding != nil {
			t.Fatalf("%q:\nlean %s %s %s host=%q len=%d close=%v url=%s\nstd  %s %s %s host=%q len=%d close=%v url=%s te=%v", b[:n],
				lean.Method, lean.RequestURI, lean.Proto, lean.Host, lean.ContentLength, lean.Close, lean.URL,
				std.Method, std.RequestURI, std.Proto, std.Host, std.ContentLength, std.Close, std.URL, std.TransferEncoding)
		}
		if !reflect.DeepEqual(lean.Header, std.Header) {
			t.Fatalf("%q: headers differ:\nlean %q\nstd  %q", b[:n], lean.Header, std.Header)
		}
	})
}

// FuzzRawHeadMatchesTheMap holds the two ways of reading an upstream's
// response head to each other: the raw fields the lean loop relays are
// the map's fields less those a hop drops, and both read the same framing,
// or both refuse the head.
func FuzzRawHeadMatchesTheMap(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nDate: x\r\n\r\n",
		"HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
		"HTTP/1.1 100 Continue\r\nContent-Length: 9\r\n\r\nHTTP/1.0 204 No Content\r\nConnection: keep-alive\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-Early: 1\r\nConnection: x-early, Date, close\r\nDate: y\r\nKeep-Alive: 5\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 1\r\nTrailer: X-Sum\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX-Bad: a\x01b\r\n\r\n",
		"HTTP/1.1 200 OK\r\n folded: 1\r\n\r\n",
		"HTTP/1.1 502 x\r\nContent-Length: +1\r\nConnection: \u212aeep-alive, x-\u212a\r\nX-K: 1\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var raw, mapped respHead
		errRaw := readHead(bufio.NewReaderSize(bytes.NewReader(b), 16<<10), &raw, true, nil)
		errMap := readHead(bufio.NewReaderSize(bytes.NewReader(b), 16<<10), &mapped, false, nil)
		if (errRaw == nil) != (errMap == nil) {
			t.Fatalf("%q: raw says %v, the map %v", b, errRaw, errMap)
		}
		if errRaw != nil {
			return
		}
		type framing struct {
			code, proto                                   int
			te, teChunked, cl, clOK, connClose, keepAlive bool
			length                                        int64
			trailer                                       []string
		}
		of := func(h *respHead) framing {
			fr := framing{h.code, h.proto, h.te, h.teChunked, h.cl, h.clErr == nil, h.connClose, h.connKeepAlive, 0, h.trailer}
			if h.cl && h.clErr == nil {
				fr.length = h.length
			}
			return fr
		}
		if fr, fm := of(&raw), of(&mapped); !reflect.DeepEqual(fr, fm) {
			t.Fatalf("%q: framing differs:\nraw %+v\nmap %+v", b, fr, fm)
		}
		want := http.Header{}
		drop := connectionTokens(mapped.hdr)
		for k, vs := range mapped.hdr {
			if !hopHeaders[k] && !drop[k] {
				want[k] = vs
			}
		}
		got, err := readFields(bufio.NewReader(bytes.NewReader(append(raw.raw.fields, "\r\n"...))), new(int(1<<20)))
		if err != nil {
			t.Fatalf("%q: the raw fields %q do not read back: %v", b, raw.raw.fields, err)
		}
		if !reflect.DeepEqual(http.Header(got), want) {
			t.Fatalf("%q: fields differ:\nraw %q\nmap %q", b, got, want)
		}
		if _, date := want["Date"]; raw.raw.date != date {
			t.Fatalf("%q: raw says date=%v", b, raw.raw.date)
		}
	})
}
