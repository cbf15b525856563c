package jsrt

import (
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/dop251/goja"
	"golang.org/x/net/idna"
)

//go:embed webapi.js
var webapiSource string

var (
	webapiOnce sync.Once
	webapiProg *goja.Program
	webapiErr  error
)

// boundary holds the functions webapi.js hands back to Go.
type boundary struct {
	NewRequest    goja.Callable
	LazyRequest   goja.Callable
	NewResponse   goja.Callable
	ResponseParts goja.Callable
	RequestParts  goja.Callable
	BodyOf        goja.Callable
	Stream        goja.Callable
	IsRequest     goja.Callable
	uint8Array    goja.Value
}

// installWebAPI runs webapi.js with the Go natives it is written over.
func (rt *Runtime) installWebAPI() error {
	webapiOnce.Do(func() { webapiProg, webapiErr = goja.Compile("webapi.js", webapiSource, true) })
	if webapiErr != nil {
		return webapiErr
	}
	vm := rt.vm
	host := vm.NewObject()
	rt.fns = &boundary{uint8Array: vm.Get("Uint8Array")}
	natives := map[string]any{
		"exports": func(o *goja.Object) {
			for name, dst := range map[string]*goja.Callable{"newRequest": &rt.fns.NewRequest, "lazyRequest": &rt.fns.LazyRequest, "newResponse": &rt.fns.NewResponse,
				"responseParts": &rt.fns.ResponseParts, "requestParts": &rt.fns.RequestParts, "bodyOf": &rt.fns.BodyOf, "stream": &rt.fns.Stream, "isRequest": &rt.fns.IsRequest} {
				*dst, _ = goja.AssertFunction(o.Get(name))
			}
		},
		"utf8Encode": func(c goja.FunctionCall) goja.Value {
			return vm.ToValue(vm.NewArrayBuffer([]byte(c.Argument(0).String())))
		},
		"utf8Decode":    rt.utf8Decode,
		"atob":          rt.atob,
		"btoa":          rt.btoa,
		"digest":        rt.digest,
		"randomUUID":    randomUUID,
		"randomBytes":   func(n int) goja.ArrayBuffer { b := make([]byte, n); rand.Read(b); return vm.NewArrayBuffer(b) },
		"log":           rt.log,
		"setTimeout":    rt.setTimeout,
		"clearTimeout":  rt.clearTimeout,
		"percentDecode": func(s string) string { return percentDecode(s) },
		"parseURL":      rt.parseURL,
		"specialPort":   func(scheme string) bool { _, ok := defaultPorts[strings.TrimSuffix(scheme, ":")]; return ok },
		"isHandle":      func(v goja.Value) bool { _, ok := v.Export().(*stream); return ok },
		"headerList": func(c goja.FunctionCall) goja.Value {
			lh, _ := c.Argument(0).Export().(*lazyHeaders)
			if lh == nil {
				return rt.vm.NewArray()
			}
			return rt.flat(decodePairs(lh.pairs()))
		},
		"read":  rt.read,
		"close": func(s *stream) { s.close() },
		"fetch": rt.fetch,
	}
	for k, f := range natives {
		if err := host.Set(k, f); err != nil {
			return err
		}
	}
	fn, err := vm.RunProgram(webapiProg)
	if err != nil {
		return err
	}
	f, _ := goja.AssertFunction(fn)
	_, err = f(goja.Undefined(), host, vm.GlobalObject())
	return err
}

func (rt *Runtime) throw(name, format string, args ...any) {
	v, err := rt.vm.New(rt.vm.Get("DOMException"), rt.vm.ToValue(fmt.Sprintf(format, args...)), rt.vm.ToValue(name))
	if err != nil {
		panic(err)
	}
	panic(v)
}

func (rt *Runtime) bytes(b []byte) goja.Value {
	v, err := rt.vm.New(rt.fns.uint8Array, rt.vm.ToValue(rt.vm.NewArrayBuffer(b)))
	if err != nil {
		panic(err)
	}
	return v
}

// utf8Decode decodes b; with stream, an incomplete sequence at the end is left for the
// next call (rest says how many bytes). Invalid bytes become U+FFFD, or an error if fatal.
func (rt *Runtime) utf8Decode(c goja.FunctionCall) goja.Value {
	var b []byte
	switch v := c.Argument(0).Export().(type) {
	case []byte: // a Uint8Array: TextDecoder's view of its input
		b = v
	case goja.ArrayBuffer:
		b = v.Bytes()
	}
	stream, fatal := c.Argument(1).ToBoolean(), c.Argument(2).ToBoolean()
	rest := 0
	if stream {
		for k := 1; k <= 3 && k <= len(b); k++ {
			if ch := b[len(b)-k]; ch >= 0xC0 {
				if !utf8.FullRune(b[len(b)-k:]) {
					rest = k
				}
				break
			} else if ch < 0x80 {
				break
			}
		}
	}
	b = b[:len(b)-rest]
	if !utf8.Valid(b) {
		if fatal {
			return rt.vm.ToValue(map[string]any{"error": true})
		}
		b = []byte(strings.ToValidUTF8(string(b), "\uFFFD"))
	}
	return rt.vm.ToValue(map[string]any{"text": string(b), "rest": rest})
}

// DecodeText is what new TextDecoder().decode(b) returns: UTF-8, invalid bytes as
// U+FFFD, a leading byte order mark dropped. For bindings that answer text directly.
func DecodeText(b []byte) string {
	s := string(b)
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return strings.TrimPrefix(s, "\uFEFF")
}

// btoa base64-encodes a binary string (code units 0..255), per the HTML standard.
func (rt *Runtime) btoa(s string) string {
	b := make([]byte, 0, len(s))
	for _, r := range s {
		if r > 0xFF {
			rt.throw("InvalidCharacterError", "btoa: the string has characters outside of Latin1")
		}
		b = append(b, byte(r))
	}
	return base64.StdEncoding.EncodeToString(b)
}

// atob decodes forgiving-base64 (ASCII whitespace ignored, padding optional) to a binary string.
func (rt *Runtime) atob(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\n' || r == '\f' || r == '\r' {
			return -1
		}
		return r
	}, s)
	if len(s)%4 == 0 {
		s = strings.TrimSuffix(strings.TrimSuffix(s, "="), "=")
	}
	b, err := base64.RawStdEncoding.Strict().DecodeString(s)
	if err != nil || len(s)%4 == 1 {
		// Strict rejects non-zero trailing bits, which the forgiving algorithm accepts.
		if b, err = base64.RawStdEncoding.DecodeString(s); err != nil || len(s)%4 == 1 {
			rt.throw("InvalidCharacterError", "atob: the string is not valid base64")
		}
	}
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = rune(c)
	}
	return string(r)
}

func (rt *Runtime) digest(alg string, data goja.ArrayBuffer) goja.ArrayBuffer {
	var h hash.Hash
	switch strings.ToUpper(alg) {
	case "SHA-1":
		h = sha1.New()
	case "SHA-256":
		h = sha256.New()
	case "SHA-384":
		h = sha512.New384()
	case "SHA-512":
		h = sha512.New()
	default:
		rt.throw("NotSupportedError", "digest: unsupported algorithm %q", alg)
	}
	h.Write(data.Bytes())
	return rt.vm.NewArrayBuffer(h.Sum(nil))
}

func randomUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func (rt *Runtime) log(level, msg string) {
	l := map[string]slog.Level{"debug": slog.LevelDebug, "warn": slog.LevelWarn, "error": slog.LevelError}[level]
	attrs, _ := rt.ctx.Value(logAttrsKey{}).([]slog.Attr)
	rt.opts.Logger.LogAttrs(rt.ctx, l, msg, append([]slog.Attr{slog.String("source", "console")}, attrs...)...)
}

// setTimeout arms a timer for the current Call; it dies with the Call.
func (rt *Runtime) setTimeout(fn goja.Callable, ms float64) int64 {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.timerID++
	id, gen := rt.timerID, rt.gen
	rt.pending++
	d := time.Duration(max(ms, 0) * float64(time.Millisecond))
	rt.timers[id] = time.AfterFunc(d, func() {
		rt.post(gen, func() error {
			rt.mu.Lock()
			_, live := rt.timers[id]
			if live {
				delete(rt.timers, id)
				rt.pending--
			}
			rt.mu.Unlock()
			if !live {
				return nil
			}
			_, err := fn(goja.Undefined())
			return err
		})
	})
	return id
}

func (rt *Runtime) clearTimeout(id int64) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if t, ok := rt.timers[id]; ok {
		t.Stop()
		delete(rt.timers, id)
		rt.pending--
	}
}

var defaultPorts = map[string]string{"http": "80", "https": "443", "ws": "80", "wss": "443", "ftp": "21", "file": ""}

// parseURL parses like the WHATWG URL parser for the common cases, on net/url: special
// schemes get a lower-case (IDNA) host, no default port, a non-empty path without dot
// segments, and a percent-encoded query. It returns the parts, or a string saying why not.
func (rt *Runtime) parseURL(c goja.FunctionCall) goja.Value {
	var parts map[string]any
	var err error
	if base := c.Argument(1); goja.IsUndefined(base) {
		parts, err = rt.parseAbsURL(c.Argument(0).String())
	} else {
		parts, err = parseURL(c.Argument(0).String(), base)
	}
	if err != nil {
		return rt.vm.ToValue(err.Error())
	}
	// A plain object, made afresh: the parts may be the cache's, and a plain object is
	// cheaper for the URL constructor to copy than a wrapped Go map.
	o := rt.vm.NewObject()
	for _, k := range urlPartNames {
		o.Set(k, parts[k])
	}
	return o
}

// urlPartNames are the keys of parseURL's parts.
var urlPartNames = [...]string{"protocol", "username", "password", "hostname", "port", "pathname", "search", "hash", "opaque"}

// parseAbsURL is parseURL without a base, remembering its last answer: a request's URL
// is parsed by NewRequest, and then by the script's new URL(request.url).
func (rt *Runtime) parseAbsURL(s string) (map[string]any, error) {
	if rt.lastURL.parts != nil && rt.lastURL.in == s {
		return rt.lastURL.parts, nil
	}
	parts, err := parseURL(s, nil)
	if err == nil {
		rt.lastURL.in, rt.lastURL.parts = s, parts
	}
	return parts, err
}

// urlControls drops the tabs and newlines the URL parser ignores.
var urlControls = strings.NewReplacer("\t", "", "\n", "", "\r", "")

func parseURL(s string, base goja.Value) (map[string]any, error) {
	clean := func(s string) string {
		s = strings.TrimFunc(s, func(r rune) bool { return r <= ' ' })
		if !strings.ContainsAny(s, "\t\n\r") {
			return s
		}
		return urlControls.Replace(s)
	}
	u, err := url.Parse(clean(s))
	if err != nil {
		return nil, fmt.Errorf("%q: %w", s, err)
	}
	if base != nil && !goja.IsUndefined(base) {
		b, err := url.Parse(clean(base.String()))
		if err != nil || !b.IsAbs() {
			return nil, fmt.Errorf("invalid base %q", base.String())
		}
		u = b.ResolveReference(u)
	}
	if !u.IsAbs() {
		return nil, fmt.Errorf("%q is relative and there is no base", s)
	}
	scheme := strings.ToLower(u.Scheme)
	defPort, special := defaultPorts[scheme]
	if special && u.Opaque != "" {
		if u, err = url.Parse(scheme + "://" + strings.TrimLeft(u.Opaque, "/") + "?" + u.RawQuery); err != nil {
			return nil, err
		}
	}
	p := map[string]any{"protocol": scheme + ":", "username": "", "password": "", "hostname": "", "port": "",
		"pathname": u.Opaque, "search": "", "hash": "", "opaque": u.Opaque != ""}
	if u.User != nil {
		p["username"], _, _ = strings.Cut(u.User.String(), ":")
		if pw, ok := u.User.Password(); ok {
			p["password"] = url.PathEscape(pw)
		}
	}
	host, port := u.Hostname(), u.Port()
	if special && scheme != "file" && host == "" {
		return nil, fmt.Errorf("%q has no host", s)
	}
	if host != "" && !strings.Contains(host, ":") {
		// A JS string cannot hold bytes that are not UTF-8, but a Go caller's can;
		// idna maps them to xn-- labels it then refuses to read back, so a URL
		// would not survive its own href (the WHATWG parser would see U+FFFD,
		// which is disallowed in a host, and fail).
		if !utf8.ValidString(host) {
			return nil, fmt.Errorf("invalid host in %q: not UTF-8", s)
		}
		if host, err = idna.Lookup.ToASCII(host); err != nil {
			return nil, fmt.Errorf("invalid host in %q: %w", s, err)
		}
		if strings.ContainsAny(host, " #%/<>?@[\\]^|") {
			return nil, fmt.Errorf("invalid host in %q", s)
		}
	} else if host != "" {
		host = "[" + strings.ToLower(host) + "]"
	}
	if special && port == defPort {
		port = ""
	}
	p["hostname"], p["port"] = host, port
	if u.Opaque == "" {
		path := u.EscapedPath()
		if special {
			path = removeDots(path)
		}
		p["pathname"] = path
	}
	if u.RawQuery != "" {
		p["search"] = "?" + encodeQuery(u.RawQuery, special)
	}
	if u.Fragment != "" {
		p["hash"] = "#" + u.EscapedFragment()
	}
	return p, nil
}

// removeDots resolves "." and ".." segments (and their %2e spellings), keeping a leading "/".
func removeDots(p string) string {
	var out []string
	segs := strings.Split(p, "/")
	for i, s := range segs {
		switch strings.ToLower(s) {
		case ".", "%2e":
			if i == len(segs)-1 {
				out = append(out, "")
			}
		case "..", ".%2e", "%2e.", "%2e%2e":
			if len(out) > 1 {
				out = out[:len(out)-1]
			}
			if i == len(segs)-1 {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	if r := strings.Join(out, "/"); strings.HasPrefix(r, "/") {
		return r
	} else {
		return "/" + r
	}
}

func encodeQuery(q string, special bool) string {
	var b strings.Builder
	for i := 0; i < len(q); i++ {
		c := q[i]
		if c <= ' ' || c > '~' || c == '"' || c == '#' || c == '<' || c == '>' || (special && c == '\'') {
			fmt.Fprintf(&b, "%%%02X", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// percentDecode decodes %XX sequences, leaving malformed ones as they are.
func percentDecode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := hex.DecodeString(s[i+1 : i+3]); err == nil {
				b.WriteByte(v[0])
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return strings.ToValidUTF8(b.String(), "\uFFFD")
}
