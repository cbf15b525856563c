package router

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/interceptd/interceptd/store"
)

// Secret yields a credential for a request. Values never come from the
// config file: a file, a systemd credential, or a per-sandbox KV entry.
type Secret interface {
	Value(env Env) ([]byte, error)
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
	if strings.ContainsAny(name, "/\\x00") {
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
func (s *FileSecret) Value(Env) ([]byte, error) {
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
	KV *store.KV
}

// Value implements Secret.
func (s *KVSecret) Value(env Env) ([]byte, error) {
	if env.Sandbox == "" {
		return nil, errors.New("no sandbox to look a secret up for")
	}
	e, err := s.KV.Get(env.Sandbox)
	if err != nil {
		return nil, fmt.Errorf("secret for sandbox %s: %w", env.Sandbox, err)
	}
	return e.Value, nil
}

// redactor masks every occurrence of the secrets in a stream with '*' of the
// same length (so Content-Length stays right), holding back just enough bytes
// to catch a secret split across reads.
type redactor struct {
	src     io.ReadCloser
	secrets [][]byte
	keep    int
	buf     []byte
	out     []byte
	err     error
}

func newRedactor(src io.ReadCloser, secrets [][]byte) io.ReadCloser {
	keep := 0
	for _, s := range secrets {
		keep = max(keep, len(s)-1)
	}
	return &redactor{src: src, secrets: secrets, keep: keep}
}

func mask(b []byte, secrets [][]byte) {
	for _, s := range secrets {
		if len(s) == 0 {
			continue
		}
		for i := 0; ; {
			j := bytes.Index(b[i:], s)
			if j < 0 {
				break
			}
			for k := i + j; k < i+j+len(s); k++ {
				b[k] = '*'
			}
			i += j + len(s)
		}
	}
}

func (r *redactor) Read(p []byte) (int, error) {
	for len(r.out) == 0 {
		if r.err != nil {
			if len(r.buf) > 0 {
				r.out, r.buf = r.buf, nil
				break
			}
			return 0, r.err
		}
		chunk := make([]byte, 32<<10)
		n, err := r.src.Read(chunk)
		r.buf = append(r.buf, chunk[:n]...)
		r.err = err
		mask(r.buf, r.secrets)
		if err == nil && len(r.buf) > r.keep {
			cut := len(r.buf) - r.keep
			r.out = append([]byte(nil), r.buf[:cut]...)
			r.buf = append(r.buf[:0:0], r.buf[cut:]...)
		}
	}
	n := copy(p, r.out)
	r.out = r.out[n:]
	return n, nil
}

func (r *redactor) Close() error { return r.src.Close() }
