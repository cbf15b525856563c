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

// FuzzNormalizeHost: normalising is idempotent and yields no uppercase, no
// port and no trailing dot for names.
func FuzzNormalizeHost(f *testing.F) {
	for _, s := range []string{"my.kv", "MY.KV:8080", "my.kv.", "[::1]:80", "", "a:b:c", "[", "::1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		n := NormalizeHost(h)
		if n2 := NormalizeHost(n); n2 != n {
			t.Fatalf("NormalizeHost not idempotent: %q -> %q -> %q", h, n, n2)
		}
		if n != strings.ToLower(n) {
			t.Fatalf("%q normalises to %q, not lowercase", h, n)
		}
	})
}

var methodRE = regexp.MustCompile(`^[A-Z]{1,16}$`)

// FuzzKVPath sends arbitrary paths, methods and bodies through the router to
// the KV, state and blob handlers: every request gets a status, a 5xx never
// comes from the client's input, and a key stored is read back the same.
func FuzzKVPath(f *testing.F) {
	for _, s := range []string{"/a", "/a%2Fb", "/%zz", "/" + strings.Repeat("k", 600), "/%00", "/é", "/?prefix=%ff", "/a?ttl=-1", "/a?expiration=abc"} {
		f.Add("PUT", s, "v")
		f.Add("GET", s, "")
	}
	f.Add("POST", "/", `{"writes":[{"key":"k","value":"v"}]}`)
	f.Add("POST", "/", `{"conditions":[{"key":"","absent":true}]}`)
	rt := handlersRouter(f)
	f.Fuzz(func(t *testing.T, method, target, body string) {
		if len(target) == 0 || target[0] != '/' || strings.ContainsAny(target, " \r\n\t#") || !methodRE.MatchString(method) {
			return // not a request line a client can send
		}
		if _, err := url.ParseRequestURI(target); err != nil {
			return // net/http answers 400 before any handler
		}
		for _, host := range []string{"my.kv", "state.do", "my.r2"} {
			resp := do(rt, call{method: method, url: host + target, body: body})
			if resp.StatusCode >= 500 {
				t.Fatalf("%s %s%s: %d %s", method, host, target, resp.StatusCode, bodyOf(resp))
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
