package tlspeek

import (
	"fmt"
	"net/netip"
	"slices"
)

// Hello is what Peek learned from a ClientHello. It is read, not verified:
// a client may put anything here, and the server it reaches decides what
// the handshake really is.
type Hello struct {
	// ServerName is the server_name extension's host_name, lowercased and
	// without a trailing dot, or "" when the client sent none. An IP
	// literal is reported as it came (RFC 6066 forbids one, some clients
	// send one anyway); what it means is the caller's to decide. With ECH
	// this is the outer, public name: the real one is encrypted.
	ServerName string
	// ALPN is the application_layer_protocol_negotiation list in the
	// client's order ("h2", "http/1.1"), nil when absent.
	ALPN []string
	// Versions is the supported_versions list in the client's order,
	// GREASE values included, nil when absent (an older client offering TLS
	// 1.2 or less; crypto/tls sends [0x0303] even then).
	Versions []uint16
	// ECH is true when an encrypted_client_hello extension is present. A
	// client that sends GREASE ECH (Chrome does) looks the same from
	// outside; either way ServerName is the outer name.
	ECH bool
}

// Extension numbers from the IANA TLS ExtensionType registry.
const (
	extServerName        = 0
	extALPN              = 16
	extSupportedVersions = 43
	extECH               = 0xfe0d
)

// maxHostName is the longest DNS name in text form, without its trailing dot.
const maxHostName = 253

// malformed wraps ErrMalformed with what was wrong.
func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// cursor reads the TLS presentation language's fields from a byte slice;
// every read says whether the bytes were there.
type cursor []byte

func (c *cursor) u8() (uint8, bool) {
	if len(*c) < 1 {
		return 0, false
	}
	v := (*c)[0]
	*c = (*c)[1:]
	return v, true
}

func (c *cursor) u16() (uint16, bool) {
	if len(*c) < 2 {
		return 0, false
	}
	v := uint16((*c)[0])<<8 | uint16((*c)[1])
	*c = (*c)[2:]
	return v, true
}

func (c *cursor) skip(n int) bool {
	if len(*c) < n {
		return false
	}
	*c = (*c)[n:]
	return true
}

// vec8 and vec16 read a vector with a one- or two-byte length prefix.
func (c *cursor) vec8() (cursor, bool) {
	n, ok := c.u8()
	if !ok || len(*c) < int(n) {
		return nil, false
	}
	v := (*c)[:n]
	*c = (*c)[n:]
	return v, true
}

func (c *cursor) vec16() (cursor, bool) {
	n, ok := c.u16()
	if !ok || len(*c) < int(n) {
		return nil, false
	}
	v := (*c)[:n]
	*c = (*c)[n:]
	return v, true
}

// parseHello reads a ClientHello's body (RFC 8446 section 4.1.2, which also
// covers the TLS 1.0 to 1.2 shape): the handshake header is already gone.
func parseHello(body []byte) (Hello, error) {
	var h Hello
	s := cursor(body)
	if !s.skip(2 + 32) { // legacy_version, random
		return Hello{}, malformed("truncated before the session id")
	}
	sid, ok := s.vec8()
	if !ok || len(sid) > 32 {
		return Hello{}, malformed("bad session id")
	}
	suites, ok := s.vec16()
	if !ok || len(suites) < 2 || len(suites)%2 != 0 {
		return Hello{}, malformed("bad cipher suite list")
	}
	comp, ok := s.vec8()
	if !ok || len(comp) < 1 {
		return Hello{}, malformed("bad compression method list")
	}
	if len(s) == 0 {
		return h, nil // no extensions: allowed before TLS 1.3
	}
	exts, ok := s.vec16()
	if !ok || len(s) != 0 {
		return Hello{}, malformed("bad extension block")
	}
	// A second copy of an extension is refused (RFC 8446 section 4.2): with
	// two server_name extensions, a reader taking the first and a server
	// taking the second would disagree about the name.
	var seenArr [32]uint16
	seen := seenArr[:0]
	for len(exts) > 0 {
		typ, ok := exts.u16()
		if !ok {
			return Hello{}, malformed("truncated extension")
		}
		data, ok := exts.vec16()
		if !ok {
			return Hello{}, malformed("extension %d overruns the extension block", typ)
		}
		seen = append(seen, typ)
		var err error
		switch typ {
		case extServerName:
			h.ServerName, err = parseServerName(data)
		case extALPN:
			h.ALPN, err = parseALPN(data)
		case extSupportedVersions:
			h.Versions, err = parseVersions(data)
		case extECH:
			h.ECH = true
		}
		if err != nil {
			return Hello{}, err
		}
	}
	slices.Sort(seen)
	for i := 1; i < len(seen); i++ {
		if seen[i] == seen[i-1] {
			return Hello{}, malformed("extension %d appears twice", seen[i])
		}
	}
	return h, nil
}

// parseServerName reads a server_name extension (RFC 6066 section 3): a
// non-empty list in which a host_name may appear once; other name types
// are skipped, as crypto/tls does.
func parseServerName(data cursor) (string, error) {
	list, ok := data.vec16()
	if !ok || len(list) == 0 || len(data) != 0 {
		return "", malformed("bad server_name list")
	}
	var name []byte
	for len(list) > 0 {
		typ, ok := list.u8()
		if !ok {
			return "", malformed("truncated server_name entry")
		}
		n, ok := list.vec16()
		if !ok || len(n) == 0 {
			return "", malformed("bad server_name entry")
		}
		if typ != 0 {
			continue
		}
		if name != nil {
			return "", malformed("two host_name entries in server_name")
		}
		name = n
	}
	if name == nil {
		return "", nil
	}
	return hostName(name)
}

// hostName checks and normalises an SNI host_name: letters, digits, '-' and
// '_' in non-empty labels of at most 63 bytes, at most 253 bytes in all,
// lowercased, one trailing dot dropped; or an IP literal, kept as it came.
// Anything else (a space, a NUL, a non-ASCII byte, "a..b") is malformed: a
// name that no policy could have been written for is not guessed at.
func hostName(b []byte) (string, error) {
	if a, err := netip.ParseAddr(string(b)); err == nil && a.Zone() == "" {
		return string(b), nil
	}
	if len(b) > 0 && b[len(b)-1] == '.' {
		b = b[:len(b)-1]
	}
	if len(b) == 0 || len(b) > maxHostName {
		return "", malformed("server name of %d bytes", len(b))
	}
	upper := false
	label := 0
	for _, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		case c >= 'A' && c <= 'Z':
			upper = true
		case c == '.':
			if label == 0 {
				return "", malformed("empty label in server name %q", b)
			}
			label = 0
			continue
		default:
			return "", malformed("byte %#02x in server name %q", c, b)
		}
		label++
		if label > 63 {
			return "", malformed("label over 63 bytes in server name %q", b)
		}
	}
	if label == 0 {
		return "", malformed("empty label in server name %q", b)
	}
	if !upper {
		return string(b), nil
	}
	out := make([]byte, len(b))
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		out[i] = c
	}
	return string(out), nil
}

// parseALPN reads a ProtocolNameList (RFC 7301 section 3.1).
func parseALPN(data cursor) ([]string, error) {
	list, ok := data.vec16()
	if !ok || len(list) == 0 || len(data) != 0 {
		return nil, malformed("bad ALPN list")
	}
	var protos []string
	for len(list) > 0 {
		p, ok := list.vec8()
		if !ok || len(p) == 0 {
			return nil, malformed("bad ALPN protocol name")
		}
		protos = append(protos, string(p))
	}
	return protos, nil
}

// parseVersions reads a ClientHello's supported_versions (RFC 8446 section
// 4.2.1).
func parseVersions(data cursor) ([]uint16, error) {
	list, ok := data.vec8()
	if !ok || len(list) < 2 || len(list)%2 != 0 || len(data) != 0 {
		return nil, malformed("bad supported_versions list")
	}
	vs := make([]uint16, 0, len(list)/2)
	for len(list) > 0 {
		v, _ := list.u16()
		vs = append(vs, v)
	}
	return vs, nil
}
