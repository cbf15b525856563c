package httpserve

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"reflect"
	"testing"
)

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

// FuzzSniffer: the sniffer must not panic, and how the bytes are split
// across reads must not change what it finds.
func FuzzSniffer(f *testing.F) {
	for _, tt := range sniffCases {
		f.Add([]byte(tt.stream), uint8(3))
	}
	f.Fuzz(func(t *testing.T, stream []byte, step uint8) {
		whole := newSniffer()
		whole.feed(stream)
		split := newSniffer()
		st := int(step%16) + 1
		for i := 0; i < len(stream); i += st {
			split.feed(stream[i:min(i+st, len(stream))])
		}
		if fmt.Sprint(whole.flags, whole.state) != fmt.Sprint(split.flags, split.state) {
			t.Fatalf("whole: %v %v; in reads of %d: %v %v", whole.flags, whole.state, st, split.flags, split.state)
		}
	})
}
