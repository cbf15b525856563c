package httpserve

import (
	"reflect"
	"strings"
	"testing"
)

var sniffCases = []struct {
	name   string
	stream string
	want   []bool
}{
	{"a plain GET is not flagged", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", []bool{false}},
	{"Content-Length with Transfer-Encoding is flagged",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", []bool{true}},
	{"in either order and any case",
		"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 4\r\n\r\n0\r\n\r\n", []bool{true}},
	{"with bare LF line endings",
		"POST / HTTP/1.1\nContent-Length: 4\nTransfer-Encoding: chunked\n\n0\n\n", []bool{true}},
	{"a body that looks like a header block is skipped by its length",
		"POST / HTTP/1.1\r\nContent-Length: 62\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n" +
			"GET /next HTTP/1.1\r\nHost: a\r\n\r\n", []bool{false, false}},
	{"chunks, extensions and trailers are skipped",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"1d;ext=1\r\nContent-Length: 1\r\nTransfer-E\r\n3\r\nabc\r\n0\r\nX-Trailer: Content-Length: 5\r\n\r\n" +
			"GET /next HTTP/1.1\r\nContent-Length: 0\r\n\r\n", []bool{false, false}},
	{"pipelined requests each get their entry",
		"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /3 HTTP/1.1\r\n\r\n", []bool{false, true, false}},
	{"OPTIONS * gets no entry, as net/http answers it itself",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n\r\n", []bool{false}},
	{"an empty line before a request is ignored", "\r\nGET / HTTP/1.1\r\n\r\n", []bool{false}},
	{"an Upgrade header does not end the watching",
		"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", []bool{false, true}},
	{"a folded line is not a new field",
		"GET / HTTP/1.1\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", []bool{false}},
	{"a length padded past what is kept is refused, not skipped",
		"POST / HTTP/1.1\r\nContent-Length:" + strings.Repeat(" ", 80) + "5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", []bool{true}},
	{"a length folded onto the next line is refused",
		"POST / HTTP/1.1\r\nContent-Length:\r\n 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", []bool{true}},
	{"HTTP/1.0 bodies are framed by their length, as net/http does",
		"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n" +
			"0 / HTTP/1.1\r\nContent-Length: 30\r\n\r\n" + strings.Repeat("GET / HTTP/1.1\r\n\r\n"[:15], 2) + "GET /3 HTTP/1.1\r\n\r\n",
		[]bool{false, false, false}},
}

func TestTheSnifferFlagsEachRequestWhateverTheReadSizes(t *testing.T) {
	for _, tt := range sniffCases {
		t.Run(tt.name, func(t *testing.T) {
			for _, step := range []int{len(tt.stream), 1, 2, 3, 7, 64} {
				s := newSniffer()
				for i := 0; i < len(tt.stream); i += step {
					s.feed([]byte(tt.stream[i:min(i+step, len(tt.stream))]))
				}
				if !reflect.DeepEqual(s.flags, tt.want) {
					t.Fatalf("reads of %d bytes: flags %v, want %v", step, s.flags, tt.want)
				}
			}
		})
	}
}

func TestASnifferThatLostTheFramingRefusesWhatFollows(t *testing.T) {
	c := &sniffConn{s: newSniffer()}
	c.s.feed([]byte("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"))
	if c.conflicting() {
		t.Fatal("the request before the loss was refused")
	}
	if !c.conflicting() {
		t.Fatal("a request after the sniffer lost the framing was let through")
	}
	d := &sniffConn{s: newSniffer()}
	for range maxQueued + 10 {
		d.s.feed([]byte("GET / HTTP/1.1\r\n\r\n"))
	}
	if len(d.s.flags) > maxQueued {
		t.Fatalf("%d entries queued", len(d.s.flags))
	}
	for range maxQueued {
		d.conflicting()
	}
	if !d.conflicting() {
		t.Fatal("a client pipelining past the queue was not refused")
	}
}
