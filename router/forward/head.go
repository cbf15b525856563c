package forward

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"

	"github.com/interceptd/interceptd/router/wire"
	"golang.org/x/net/http/httpguts"
)

// This file reads an upstream's response head for the forwarder. Behind the
// lean loop the fields go to the sandbox as checked lines, without a header
// map between (a map, its keys and values would be built on every forward
// only to be written out again); behind net/http they go through the map
// its ResponseWriter needs.
// Both read the same bytes under the same limits and checks, and both give
// the forwarder the framing fields on their own.

// respHead is an upstream response head.
type respHead struct {
	code  int
	proto int // the minor version: HTTP/1.proto

	hdr textproto.MIMEHeader // the map path: every field
	raw wire.RawHead         // the raw path: the fields to pass on

	te        bool  // a Transfer-Encoding field came
	teChunked bool  // the last coding of the last one is chunked
	cl        bool  // a Content-Length field came
	length    int64 // its value, when clErr is nil
	clErr     error
	// The Connection field lists close, keep-alive.
	connClose, connKeepAlive bool
	trailer                  []string // the Trailer field's values
}

// readHead reads a final response's status line and header, skipping
// informational responses. With raw, the fields are read into h.raw,
// reusing buf's memory; else into h.hdr.
func readHead(br *bufio.Reader, h *respHead, raw bool, buf []byte) error {
	budget := maxResponseHeaderBytes
	for interim := 0; ; interim++ {
		if interim > maxInterimResponses {
			return errors.New("too many informational responses")
		}
		*h = respHead{}
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		budget -= len(line)
		line = bytes.TrimRight(line, "\r\n")
		// "HTTP/1.x NNN reason"
		if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' ||
			line[7] < '0' || line[7] > '9' || (len(line) > 12 && line[12] != ' ') {
			return fmt.Errorf("malformed status line %q", truncate(line))
		}
		code, ok := wire.ParseDecimal(line[9:12])
		if !ok || code < 100 {
			return fmt.Errorf("malformed status code %q", truncate(line))
		}
		h.code, h.proto = int(code), int(line[7]-'0')
		if raw {
			err = readRawFields(br, &budget, h, buf[:0])
		} else {
			err = h.readMap(br, &budget)
		}
		if err != nil {
			return fmt.Errorf("reading response header: %w", err)
		}
		if h.code >= 200 {
			return nil
		}
		if h.code == http.StatusSwitchingProtocols {
			return errors.New("101 Switching Protocols to a request that asked for no upgrade")
		}
		// 100 Continue, 103 Early Hints: not the answer; read on.
	}
}

// readMap reads the fields into h.hdr, and the framing fields from it.
func (h *respHead) readMap(br *bufio.Reader, budget *int) error {
	hdr, err := readFields(br, budget)
	if err != nil {
		return err
	}
	h.hdr = hdr
	if te := hdr["Transfer-Encoding"]; len(te) > 0 {
		h.te = true
		h.teChunked = lastCodingIsChunked(te[len(te)-1])
	}
	if cl := hdr["Content-Length"]; len(cl) > 0 {
		h.cl, h.length = true, -1
		for _, v := range cl {
			addLength(h, v)
		}
	}
	h.connClose = wire.HeaderHas(hdr, "Connection", "close")
	h.connKeepAlive = wire.HeaderHas(hdr, "Connection", "keep-alive")
	h.trailer = hdr["Trailer"]
	return nil
}

// lastCodingIsChunked reports whether the last coding a Transfer-Encoding
// value lists is chunked (in any ASCII case), for either path.
func lastCodingIsChunked[T string | []byte](te T) bool {
	i := len(te) - 1
	for i >= 0 && te[i] != ',' {
		i--
	}
	t := trimOWS(te[i+1:])
	const chunked = "chunked"
	if len(t) != len(chunked) {
		return false
	}
	for i := range len(t) {
		if t[i]|0x20 != chunked[i] {
			return false
		}
	}
	return true
}

// readRawFields reads header fields up to the empty line, as readFields
// does and under its checks, into h: the lines to pass on go to
// h.raw.Fields (appended to buf) as "Name: value\r\n", names as the
// upstream spelled them; hop-by-hop fields, those the Connection field
// names, and the framing fields are left out, the framing fields read into
// h.
func readRawFields(br *bufio.Reader, budget *int, h *respHead, buf []byte) error {
	var drop [][]byte // what the Connection field names, copied out of br
	h.length = -1     // for addLength: no value yet
	for n := 0; ; n++ {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return errors.New("header line too long")
			}
			return err
		}
		if *budget -= len(line); *budget < 0 {
			return errors.New("header too large")
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		if n >= maxHeaderFields {
			return errors.New("too many header fields")
		}
		if line[0] == ' ' || line[0] == '\t' {
			return errors.New("folded header line")
		}
		i := bytes.IndexByte(line, ':')
		if i <= 0 {
			return fmt.Errorf("malformed header line %q", truncate(line))
		}
		name, value := line[:i], bytes.Trim(line[i+1:], " \t")
		if !validFieldName(name) || !validFieldValue(value) {
			return fmt.Errorf("invalid header field %q", truncate(line))
		}
		switch fieldKindOf(name) {
		case fieldHop:
			continue
		case fieldConnection:
			for rest, more := value, true; more; {
				var t []byte
				t, rest, more = bytes.Cut(rest, []byte(","))
				switch t = bytes.Trim(t, " \t"); {
				case len(t) == 0:
				case bytes.EqualFold(t, []byte("close")):
					h.connClose = true
				case bytes.EqualFold(t, []byte("keep-alive")):
					h.connKeepAlive = true
				default:
					drop = append(drop, bytes.Clone(t))
				}
			}
			continue
		case fieldLength:
			h.cl = true
			addLength(h, value)
			continue
		case fieldTE:
			h.te = true
			h.teChunked = lastCodingIsChunked(value)
			continue
		case fieldTrailer:
			h.trailer = append(h.trailer, string(value))
			continue
		case fieldDate:
			h.raw.Date = true
		}
		buf = append(buf, name...)
		buf = append(buf, ": "...)
		buf = append(buf, value...)
		buf = append(buf, "\r\n"...)
	}
	if len(drop) > 0 {
		buf = h.dropFields(buf, drop)
	}
	h.raw.Fields = buf
	return nil
}

// addLength takes one Content-Length field's value into h (whose length
// is -1 before the first): repeated identical values (RFC 9110 §8.6) and
// nothing else.
func addLength[T string | []byte](h *respHead, v T) {
	if h.clErr != nil {
		return
	}
	for rest := v; ; {
		i := 0
		for i < len(rest) && rest[i] != ',' {
			i++
		}
		m, ok := wire.ParseDecimal(trimOWS(rest[:i]))
		if !ok || (h.length >= 0 && m != h.length) {
			h.clErr = fmt.Errorf("invalid Content-Length %q from upstream", truncate([]byte(v)))
			return
		}
		h.length = m
		if i == len(rest) {
			return
		}
		rest = rest[i+1:]
	}
}

// trimOWS trims spaces and tabs at both ends.
func trimOWS[T string | []byte](t T) T {
	for len(t) > 0 && (t[0] == ' ' || t[0] == '\t') {
		t = t[1:]
	}
	for len(t) > 0 && (t[len(t)-1] == ' ' || t[len(t)-1] == '\t') {
		t = t[:len(t)-1]
	}
	return t
}

// dropFields removes from fields the lines whose names are in names, as the
// Connection field asks.
func (h *respHead) dropFields(fields []byte, names [][]byte) []byte {
	kept := fields[:0]
	h.raw.Date = false
	for rest := fields; len(rest) > 0; {
		end := bytes.IndexByte(rest, '\n') + 1
		line := rest[:end]
		rest = rest[end:]
		name := line[:bytes.IndexByte(line, ':')]
		dropped := false
		for _, d := range names {
			if asciiEqualFold(name, d) {
				dropped = true
				break
			}
		}
		if !dropped {
			// Before the copy, which may overwrite what name points to
			// (kept is never ahead of line, so the line itself is whole).
			h.raw.Date = h.raw.Date || fieldKindOf(name) == fieldDate
			kept = append(kept, line...)
		}
	}
	return kept
}

// asciiEqualFold is bytes.EqualFold without Unicode folding: a field name
// is ASCII, and a Connection token that is not names no field (as in the
// map, whose keys are canonical).
func asciiEqualFold(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

type fieldKind uint8

const (
	fieldPlain fieldKind = iota
	fieldHop
	fieldConnection
	fieldLength
	fieldTE
	fieldTrailer
	fieldDate
)

// fieldKinds classifies the field names the forwarder treats apart, in
// canonical form; the hop-by-hop ones are hopHeaders.
var fieldKinds = func() map[string]fieldKind {
	m := map[string]fieldKind{}
	for k := range hopHeaders {
		m[k] = fieldHop
	}
	m["Connection"] = fieldConnection
	m["Content-Length"] = fieldLength
	m["Transfer-Encoding"] = fieldTE
	m["Trailer"] = fieldTrailer
	m["Date"] = fieldDate
	return m
}()

// maxKindName is the longest name in fieldKinds: longer ones are plain.
const maxKindName = len("Proxy-Authorization")

func fieldKindOf(name []byte) fieldKind {
	if len(name) > maxKindName {
		return fieldPlain
	}
	var b [maxKindName]byte
	upper := true
	for i, c := range name {
		switch {
		case upper && 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		case !upper && 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		b[i] = c
		upper = c == '-'
	}
	return fieldKinds[string(b[:len(name)])] // no allocation
}

// validFieldName and validFieldValue are httpguts' checks, on bytes.
func validFieldName(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !httpguts.IsTokenRune(rune(c)) {
			return false
		}
	}
	return true
}

func validFieldValue(b []byte) bool {
	for _, c := range b {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
