package httpserve

import (
	"bytes"
	"net"
	"sync"

	"github.com/interceptd/interceptd/router/wire"
)

// A request carrying both Content-Length and Transfer-Encoding is the
// classic request-smuggling shape. RFC 9112 lets a server go by
// Transfer-Encoding, and net/http does, deleting Content-Length before any
// handler can see it; but a message like that "ought to be handled as an
// error", and interceptd refuses it. sniffConn watches the bytes net/http
// reads from an intercepted connection, follows the HTTP/1.1 framing just far
// enough to find each request's header block (skipping bodies by their
// length or chunks), and queues, per request and in order, whether its header
// carried both fields; the router takes one entry per request it serves.
//
// Where it cannot be sure (a Content-Length or Transfer-Encoding field too
// long to read, or folded over lines; a chunk size it cannot read; more
// than maxQueued requests ahead of the handlers) it fails closed: that
// request and every later one on the connection are refused. net/http
// refuses most of those itself; a client has no need of the others.

type sniffState uint8

const (
	sniffHead      sniffState = iota // in a request's header block
	sniffBody                        // skipping a Content-Length body
	sniffChunkSize                   // reading a chunk-size line
	sniffChunkData                   // skipping a chunk and its CRLF
	sniffTrailer                     // in a chunked body's trailer
	sniffOff                         // lost: every request from here is refused
)

// maxQueued bounds the entries waiting for the router: a client that
// pipelines further ahead than this is refused.
const maxQueued = 64

// sniffLineMax is how much of each line is kept: enough for a field name
// and a Content-Length value.
const sniffLineMax = 64

type sniffer struct {
	state sniffState
	skip  int64 // bytes left to skip in sniffBody and sniffChunkData

	line     [sniffLineMax]byte
	lineLen  int  // bytes kept of the current line
	lineLong bool // the line is longer than what was kept
	first    bool // the next line of the head is its request line (or a leading empty line)

	cl, te, chunked bool
	http10          bool  // net/http ignores Transfer-Encoding then
	poison          bool  // this request's framing could not be read
	last            uint8 // the field the previous line was: 1 Content-Length, 2 Transfer-Encoding
	length          int64
	// unqueued: net/http answers "OPTIONS *" itself, without a handler to
	// take the request's entry.
	unqueued bool

	flags []bool
}

func newSniffer() *sniffer { return &sniffer{first: true} }

// feed follows p, the next bytes of the connection.
func (s *sniffer) feed(p []byte) {
	for len(p) > 0 && s.state != sniffOff {
		switch s.state {
		case sniffBody, sniffChunkData:
			n := int64(len(p))
			if n > s.skip {
				n = s.skip
			}
			p = p[n:]
			s.skip -= n
			if s.skip == 0 {
				if s.state == sniffBody {
					s.state = sniffHead
				} else {
					s.state = sniffChunkSize
				}
			}
		default:
			i := bytes.IndexByte(p, '\n')
			end := len(p)
			if i >= 0 {
				end = i
			}
			s.keep(p[:end])
			if i < 0 {
				return
			}
			p = p[i+1:]
			s.endLine()
		}
	}
}

func (s *sniffer) keep(b []byte) {
	n := copy(s.line[s.lineLen:], b)
	s.lineLen += n
	if n < len(b) {
		s.lineLong = true
	}
}

// endLine acts on a complete line.
func (s *sniffer) endLine() {
	line := bytes.TrimSuffix(s.line[:s.lineLen], []byte("\r"))
	long := s.lineLong
	s.lineLen, s.lineLong = 0, false
	switch s.state {
	case sniffHead:
		s.headLine(line, long)
	case sniffChunkSize:
		size, ok := parseHexPrefix(line)
		switch {
		case !ok:
			s.state = sniffOff // net/http fails the body too
		case size == 0:
			s.state = sniffTrailer
		default:
			s.state, s.skip = sniffChunkData, size+2 // the chunk and its CRLF
		}
	case sniffTrailer:
		if len(line) == 0 && !long {
			s.state = sniffHead
		}
	}
}

func (s *sniffer) headLine(line []byte, long bool) {
	if s.first {
		if len(line) == 0 && !long {
			return // an empty line before the request line
		}
		s.first = false
		s.cl, s.te, s.chunked, s.poison, s.last, s.length = false, false, false, false, 0, 0
		s.http10 = bytes.HasSuffix(line, []byte(" HTTP/1.0"))
		s.unqueued = bytes.HasPrefix(line, []byte("OPTIONS * "))
		return
	}
	if len(line) == 0 && !long {
		// The end of the head: one entry for this request, then its body.
		if !s.unqueued {
			if len(s.flags) >= maxQueued {
				s.state = sniffOff
				return
			}
			s.flags = append(s.flags, s.cl && s.te || s.poison)
		}
		s.first = true
		te := s.te && !s.http10
		switch {
		case s.poison:
			s.state = sniffOff
		case te && !s.chunked:
			s.state = sniffOff // net/http refuses it and closes
		case te:
			s.state = sniffChunkSize
		case s.length > 0:
			s.state, s.skip = sniffBody, s.length
		}
		return
	}
	if line[0] == ' ' || line[0] == '\t' {
		// A continuation of the previous field, which net/http joins to
		// it: of a length or a coding, it is one this cannot read.
		if s.last != 0 {
			s.poison = true
		}
		return
	}
	s.last = 0
	colon := bytes.IndexByte(line, ':')
	if colon < 0 {
		return // net/http refuses the request
	}
	name, value := line[:colon], bytes.TrimSpace(line[colon+1:])
	switch {
	case bytes.EqualFold(name, []byte("Content-Length")):
		s.last = 1
		n, ok := wire.ParseDecimal(value)
		if long || !ok || s.cl && n != s.length {
			s.poison = true // unreadable, or two lengths (net/http refuses those too)
			return
		}
		s.cl, s.length = true, n
	case bytes.EqualFold(name, []byte("Transfer-Encoding")):
		s.last = 2
		s.te = true
		s.chunked = !long && bytes.EqualFold(value, []byte("chunked"))
		if long {
			s.poison = true
		}
	}
}

// parseHexPrefix parses a chunk size: hex digits, then optional
// extensions after ';' (or whitespace).
func parseHexPrefix(b []byte) (int64, bool) {
	var n int64
	digits := 0
	for _, c := range b {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return n, digits > 0 && digits <= 15
		}
		n = n<<4 | int64(d)
		digits++
	}
	return n, digits > 0 && digits <= 15
}

// sniffConn is a connection whose reads go through a sniffer.
type sniffConn struct {
	net.Conn
	mu sync.Mutex
	s  *sniffer
}

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		c.s.feed(p[:n])
		c.mu.Unlock()
	}
	return n, err
}

// conflicting takes the entry of the next request: whether its header had
// both Content-Length and Transfer-Encoding.
func (c *sniffConn) conflicting() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.s.flags) == 0 {
		return c.s.state == sniffOff // lost: refuse rather than guess
	}
	f := c.s.flags[0]
	c.s.flags = c.s.flags[1:]
	return f
}

// sniffListener wraps each accepted connection in a sniffConn.
type sniffListener struct{ net.Listener }

func (l sniffListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sniffConn{Conn: c, s: newSniffer()}, nil
}
