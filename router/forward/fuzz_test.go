package forward

import (
	"bufio"
	"bytes"
	"net/http"
	"reflect"
	"testing"
)

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
		got, err := readFields(bufio.NewReader(bytes.NewReader(append(raw.raw.Fields, "\r\n"...))), new(int(1<<20)))
		if err != nil {
			t.Fatalf("%q: the raw fields %q do not read back: %v", b, raw.raw.Fields, err)
		}
		if !reflect.DeepEqual(http.Header(got), want) {
			t.Fatalf("%q: fields differ:\nraw %q\nmap %q", b, got, want)
		}
		if _, date := want["Date"]; raw.raw.Date != date {
			t.Fatalf("%q: raw says date=%v", b, raw.raw.Date)
		}
	})
}
