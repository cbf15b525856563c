package handlers

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/store/backend"
)

// Secret yields a credential for a request. Values never come from the
// config file: a file, a systemd credential, or a per-sandbox KV entry.
type Secret interface {
	Value(env router.Env) ([]byte, error)
}

// FileSecret is a secret read from a file (trailing newlines trimmed), read
// at start and again on Reload (SIGHUP).
type FileSecret struct {
	Path string
	mu   sync.RWMutex
	val  []byte
}

// CredentialSecret returns the FileSecret of a systemd credential: the file
// name in $CREDENTIALS_DIRECTORY.
func CredentialSecret(name string) (*FileSecret, error) {
	dir := os.Getenv("CREDENTIALS_DIRECTORY")
	if dir == "" {
		return nil, fmt.Errorf("credential %q: $CREDENTIALS_DIRECTORY is not set (use LoadCredential= in the unit)", name)
	}
	// A file in the directory, never a path out of it nor the directory
	// itself (the config is the admin's, but a typo should not read
	// another file).
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") {
		return nil, fmt.Errorf("credential %q: not a file name", name)
	}
	return &FileSecret{Path: filepath.Join(dir, name)}, nil
}

// Load (re)reads the file.
func (s *FileSecret) Load() error {
	b, err := os.ReadFile(s.Path)
	if err != nil {
		return fmt.Errorf("reading secret: %w", err)
	}
	b = bytes.TrimRight(b, "\r\n")
	if len(b) == 0 {
		return fmt.Errorf("secret file %s is empty", s.Path)
	}
	s.mu.Lock()
	s.val = b
	s.mu.Unlock()
	return nil
}

// Value implements Secret.
func (s *FileSecret) Value(router.Env) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.val == nil {
		return nil, errors.New("secret not loaded")
	}
	return s.val, nil
}

// KVSecret is a per-sandbox secret: the value stored under the calling
// sandbox's name in a KV namespace (operators seed it with
// `interceptd kv put --namespace NS SANDBOX VALUE`).
type KVSecret struct {
	KV backend.KV
}

// Value implements Secret.
func (s *KVSecret) Value(env router.Env) ([]byte, error) {
	if env.Sandbox == "" {
		return nil, errors.New("no sandbox to look a secret up for")
	}
	e, err := s.KV.Get(env.Sandbox)
	if err != nil {
		return nil, fmt.Errorf("secret for sandbox %s: %w", env.Sandbox, err)
	}
	return e.Value, nil
}

// scrubber finds an injected secret, and the forms an upstream most likely
// hands it back in, so that every part of a response the sandbox can see
// (interim heads, the final head, the body, trailers) can be masked. Each
// occurrence becomes '*' of the same length, so lengths hold.
//
// The forms come from each secret and, when the secret is base64 of
// printable text (Basic's "user:password"), from that text and the part after
// its first ':' as well:
//   - the value itself, ignoring ASCII case (hex keys and UUIDs are
//     case-insensitive, and a case-changed token still gives it away);
//   - hex, ignoring case;
//   - URL-encoded (query and path escaping), ignoring case (%2f and %2F);
//   - JSON-escaped (with Go's HTML escapes and with "\/");
//   - base64, standard and URL alphabets, in each of the three alignments
//     the value can have inside a longer encoded string (base64 of
//     "user:token" holds one of them): the characters that depend on the
//     value alone, which leaves at most the bits of its first and last byte
//     that share a character with its neighbours.
//
// Forms other than the value itself shorter than minForm are left out: they
// would mask innocent text for little gain. What a scrubber cannot find is an
// upstream that transforms the secret otherwise (a hash, another encoding, a
// compressed body, pieces of it apart): see docs/security.md.
type scrubber struct {
	exact   [][]byte // matched as they are (base64 is case-significant)
	fold    [][]byte // lower-case, matched ignoring ASCII case
	longest int
}

const minForm = 4

// newScrubber returns the scrubber of secrets, or nil when there is none.
func newScrubber(secrets [][]byte) *scrubber {
	s := &scrubber{}
	seen := map[string]bool{}
	add := func(p []byte, fold bool) {
		if fold {
			p = lowerASCII(nil, p)
		}
		k := string(p)
		if fold {
			k = "f" + k
		} else {
			k = "e" + k
		}
		if len(p) == 0 || seen[k] {
			return
		}
		seen[k] = true
		if fold {
			s.fold = append(s.fold, p)
		} else {
			s.exact = append(s.exact, p)
		}
		s.longest = max(s.longest, len(p))
	}
	forms := func(v []byte) {
		if len(v) < minForm {
			return
		}
		add(v, true)
		add([]byte(hex.EncodeToString(v)), true)
		add([]byte(url.QueryEscape(string(v))), true)
		add([]byte(url.PathEscape(string(v))), true)
		if js, err := json.Marshal(string(v)); err == nil {
			js = js[1 : len(js)-1]
			add(js, true)
			add(bytes.ReplaceAll(js, []byte("/"), []byte(`\/`)), true)
		}
		for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
			for _, core := range base64Cores(enc, v) {
				if len(core) >= minForm {
					add(core, false)
				}
			}
		}
	}
	for _, v := range secrets {
		if len(v) == 0 {
			continue
		}
		add(v, true) // the secret itself, however short
		forms(v)
		if text, ok := base64Text(v); ok {
			forms(text)
			if _, pass, ok := bytes.Cut(text, []byte(":")); ok {
				forms(pass)
			}
		}
	}
	if s.longest == 0 {
		return nil
	}
	// An exact pattern whose lower case is also matched ignoring case is
	// found twice: drop it.
	exact := s.exact[:0]
	for _, p := range s.exact {
		if !seen["f"+string(lowerASCII(nil, p))] {
			exact = append(exact, p)
		}
	}
	s.exact = exact
	return s
}

// base64Cores returns, for each of the three byte offsets v can have in a
// longer string, the characters of that string's encoding that depend on v's
// bytes alone.
func base64Cores(enc *base64.Encoding, v []byte) [][]byte {
	var cores [][]byte
	for off := range 3 {
		e := enc.EncodeToString(append(make([]byte, off), v...))
		from, to := (8*off+5)/6, 8*(off+len(v))/6
		if to > from {
			cores = append(cores, []byte(e[from:to]))
		}
	}
	return cores
}

// base64Text decodes v if it is base64 (any alphabet, padded or not) of
// printable ASCII, as Basic credentials are.
func base64Text(v []byte) ([]byte, bool) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		b, err := enc.DecodeString(string(v))
		if err != nil || len(b) == 0 {
			continue
		}
		printable := true
		for _, c := range b {
			if c < 0x20 || c > 0x7e {
				printable = false
				break
			}
		}
		if printable {
			return b, true
		}
	}
	return nil, false
}

// lowerASCII appends b with ASCII letters lowered to dst: one byte for one
// byte, so offsets in the result are offsets in b.
func lowerASCII(dst, b []byte) []byte {
	n := len(dst)
	dst = append(dst, b...)
	for i, c := range dst[n:] {
		dst[n+i] = lowerTable[c]
	}
	return dst
}

// lowerTable maps a byte to its ASCII lower case; a table, because this
// runs over every byte of a scrubbed body.
var lowerTable = func() (t [256]byte) {
	for i := range t {
		t[i] = byte(i)
		if 'A' <= i && i <= 'Z' {
			t[i] += 'a' - 'A'
		}
	}
	return t
}()

// scratch is what a scan reuses between calls.
type scratch struct {
	low   []byte
	spans [][2]int
}

// scan masks every match wholly inside b and returns how many bytes at its
// end must be held back until more data comes: the longest tail of b that
// is a proper prefix of some pattern, so at most longest-1 bytes. At the end
// of the data (final) nothing is held back.
func (s *scrubber) scan(b []byte, sc *scratch, final bool) (hold int) {
	sc.low = lowerASCII(sc.low[:0], b)
	sc.spans = sc.spans[:0]
	for _, p := range s.exact {
		sc.spans = appendMatches(sc.spans, b, p)
		if !final {
			hold = max(hold, prefixAtEnd(b, p))
		}
	}
	for _, p := range s.fold {
		sc.spans = appendMatches(sc.spans, sc.low, p)
		if !final {
			hold = max(hold, prefixAtEnd(sc.low, p))
		}
	}
	for _, sp := range sc.spans {
		for i := sp[0]; i < sp[1]; i++ {
			b[i] = '*'
		}
	}
	return hold
}

// appendMatches appends where p occurs in b, overlapping occurrences
// included.
func appendMatches(spans [][2]int, b, p []byte) [][2]int {
	for i := 0; i+len(p) <= len(b); {
		j := bytes.Index(b[i:], p)
		if j < 0 {
			break
		}
		spans = append(spans, [2]int{i + j, i + j + len(p)})
		i += j + 1
	}
	return spans
}

// prefixAtEnd returns the length of the longest tail of b that is a proper
// prefix of p, or 0.
func prefixAtEnd(b, p []byte) int {
	for i := max(0, len(b)-len(p)+1); i < len(b); i++ {
		j := bytes.IndexByte(b[i:], p[0])
		if j < 0 {
			return 0
		}
		i += j
		if bytes.HasPrefix(p, b[i:]) {
			return len(b) - i
		}
	}
	return 0
}

// maskString returns v with every match masked; v itself when none.
func (s *scrubber) maskString(v string, sc *scratch) string {
	b := []byte(v)
	s.scan(b, sc, true)
	if string(b) == v {
		return v
	}
	return string(b)
}

// scrubHeader masks the names and values of a header block in place.
func (s *scrubber) scrubHeader(h http.Header) {
	var sc scratch
	for k, vs := range h {
		for i, v := range vs {
			vs[i] = s.maskString(v, &sc)
		}
		if mk := s.maskString(k, &sc); mk != k {
			delete(h, k)
			h[mk] = append(h[mk], vs...)
		}
	}
}

// redactor masks a body as it streams (see scrubber), holding back only the
// bytes at the end of a read that could begin a match, so memory stays at
// one read plus the longest pattern.
type redactor struct {
	src io.ReadCloser
	s   *scrubber
	// buf[off:ready] is masked and may be given out; buf[ready:end] is
	// held back until the next read says whether it begins a match.
	buf             []byte
	off, ready, end int
	err             error
	sc              scratch
}

const redactRead = 32 << 10

func newRedactor(src io.ReadCloser, s *scrubber) io.ReadCloser {
	return &redactor{src: src, s: s, buf: make([]byte, redactRead+s.longest)}
}

func (r *redactor) Read(p []byte) (int, error) {
	for r.off == r.ready {
		if r.err != nil {
			return 0, r.err
		}
		n := copy(r.buf, r.buf[r.ready:r.end]) // the held-back tail goes first
		m, err := r.src.Read(r.buf[n:])
		r.off, r.end, r.err = 0, n+m, err
		r.ready = r.end - r.s.scan(r.buf[:r.end], &r.sc, err != nil)
	}
	n := copy(p, r.buf[r.off:r.ready])
	r.off += n
	return n, nil
}

func (r *redactor) Close() error { return r.src.Close() }
