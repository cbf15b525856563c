package handlers

import (
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/routertest"
)

func TestTheRedactorMasksSecretsSplitAcrossReads(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"a secret in the middle", "key=hunter2;", "key=*******;"},
		{"a secret at the end", "xxhunter2", "xx*******"},
		{"two secrets and a repeat", "hunter2 tok hunter2", "******* *** *******"},
		{"no secret", "nothing to see", "nothing to see"},
		{"a near miss", "hunter hunter3", "hunter hunter3"},
		{"overlapping occurrences", "hunter2hunter2unter2", "**************unter2"},
		{"a secret in another case", "HUNTER2 Tok", "******* ***"},
	}
	s := newScrubber([][]byte{[]byte("hunter2"), []byte("tok")})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// OneByteReader splits every secret across reads.
			got, err := io.ReadAll(newRedactor(io.NopCloser(iotest.OneByteReader(strings.NewReader(tt.in))), s))
			if err != nil || string(got) != tt.want {
				t.Errorf("got %q %v, want %q", got, err, tt.want)
			}
		})
	}
}

// reads is a source that hands out its chunks one Read each.
type reads []string

func (r *reads) Read(p []byte) (int, error) {
	if len(*r) == 0 {
		return 0, io.EOF
	}
	n := copy(p, (*r)[0])
	if n == len((*r)[0]) {
		*r = (*r)[1:]
	} else {
		(*r)[0] = (*r)[0][n:]
	}
	return n, nil
}

const testToken = "s3cr3t+tok/en=v1"

// testForms are the forms of testToken an upstream might reflect.
func testForms() map[string]string {
	q := url.QueryEscape(testToken)
	return map[string]string{
		"as it is":                         testToken,
		"upper-cased":                      strings.ToUpper(testToken),
		"base64":                           base64.StdEncoding.EncodeToString([]byte(testToken)),
		"base64 with the URL alphabet":     base64.RawURLEncoding.EncodeToString([]byte(testToken)),
		"base64 of user:token":             base64.StdEncoding.EncodeToString([]byte("x-access-token:" + testToken)),
		"base64 of the header value":       base64.StdEncoding.EncodeToString([]byte("Bearer " + testToken)),
		"base64 of user:token, URL, raw":   base64.RawURLEncoding.EncodeToString([]byte("u:" + testToken)),
		"URL-encoded":                      q,
		"URL-encoded with lower-case hex":  strings.ToLower(q[:8]) + q[8:],
		"path-escaped":                     url.PathEscape(testToken),
		"hex":                              hex.EncodeToString([]byte(testToken)),
		"hex in upper case":                strings.ToUpper(hex.EncodeToString([]byte(testToken))),
		"JSON-escaped with \\/":            strings.ReplaceAll(testToken, "/", `\/`),
		"inside a longer base64 document":  base64.StdEncoding.EncodeToString([]byte(`{"headers":{"Authorization":"Bearer ` + testToken + `"}}`)),
		"inside a longer hex document":     hex.EncodeToString([]byte("auth=" + testToken + "&x=1")),
		"inside a longer URL-encoded form": url.QueryEscape("a=b&auth=Bearer " + testToken),
	}
}

// leaks reports which forms of testToken (as a whole) are in out.
func leaks(out string) []string {
	var found []string
	for _, f := range []string{
		testToken,
		strings.ToUpper(testToken),
		base64.RawStdEncoding.EncodeToString([]byte(testToken)),
		base64.RawURLEncoding.EncodeToString([]byte(testToken)),
		url.QueryEscape(testToken),
		hex.EncodeToString([]byte(testToken)),
	} {
		if strings.Contains(strings.ToLower(out), strings.ToLower(f)) {
			found = append(found, f)
		}
	}
	return found
}

func TestTheScrubberMasksTheCommonReencodingsOfASecret(t *testing.T) {
	s := newScrubber([][]byte{[]byte(testToken)})
	for name, form := range testForms() {
		t.Run(name, func(t *testing.T) {
			in := "before " + form + " after"
			b := []byte(in)
			s.scan(b, &scratch{}, true)
			got := string(b)
			if !strings.HasPrefix(got, "before ") || !strings.HasSuffix(got, " after") || len(got) != len(in) {
				t.Errorf("the text around the secret changed: %q", got)
			}
			if l := leaks(got); len(l) > 0 {
				t.Errorf("%q still holds %q", got, l)
			}
			// Every form is at least as long as the token: so is
			// what is masked of it.
			if n := strings.Count(got, "*"); n < len(testToken) {
				t.Errorf("only %d characters were masked in %q", n, got)
			}
		})
	}
}

func TestTheScrubberMasksBasicCredentialsDecodedAndThePasswordAlone(t *testing.T) {
	basic := base64.StdEncoding.EncodeToString([]byte("agent:pa55-w0rd!x"))
	s := newScrubber([][]byte{[]byte(basic)})
	for _, in := range []string{
		basic,
		"agent:pa55-w0rd!x",
		"password=pa55-w0rd!x;",
		"PA55-W0RD!X",
		base64.StdEncoding.EncodeToString([]byte("pa55-w0rd!x")),
		hex.EncodeToString([]byte("pa55-w0rd!x")),
		url.QueryEscape("pa55-w0rd!x"),
	} {
		b := []byte(in)
		s.scan(b, &scratch{}, true)
		if strings.Contains(strings.ToLower(string(b)), "pa55") || strings.Count(string(b), "*") < 8 {
			t.Errorf("%q became %q", in, b)
		}
	}
}

func TestTheRedactorFindsEveryFormWhereverAReadSplitsIt(t *testing.T) {
	s := newScrubber([][]byte{[]byte(testToken)})
	for name, form := range testForms() {
		in := "<p>" + form + "</p>"
		want := []byte(in)
		s.scan(want, &scratch{}, true)
		for k := 0; k <= len(in); k++ {
			src := reads{in[:k], in[k:]}
			got, err := io.ReadAll(newRedactor(io.NopCloser(&src), s))
			if err != nil || string(got) != string(want) {
				t.Errorf("%s split at %d: got %q %v, want %q", name, k, got, err, want)
			}
		}
	}
}

func TestTheRedactorHoldsBackOnlyWhatCouldBeginASecret(t *testing.T) {
	s := newScrubber([][]byte{[]byte(testToken)})
	tests := []struct {
		name, first string
		held        int
	}{
		{"plain text is given out whole", "hello, world\n", 0},
		{"the start of the secret is held", "hello s3cr3t", len("s3cr3t")},
		{"the start in another case is held", "hello S3CR", len("s3cr")},
		{"the start of its hex is held", "x=733363", len("733363")},
		{"a whole secret is masked and given out", "x " + testToken, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := reads{tt.first, "...the rest"}
			r := newRedactor(io.NopCloser(&src), s)
			p := make([]byte, 1<<10)
			n, _ := r.Read(p)
			if want := len(tt.first) - tt.held; n != want {
				t.Errorf("the first read gave %d bytes (%q), want %d", n, p[:n], want)
			}
		})
	}
	t.Run("never more than the longest form less one", func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		alphabet := "s3cr3t+tok/en=v1733363cz5N0K"
		for range 2000 {
			b := make([]byte, rng.IntN(200))
			for i := range b {
				b[i] = alphabet[rng.IntN(len(alphabet))]
			}
			if hold := s.scan(b, &scratch{}, false); hold >= s.longest || hold > len(b) {
				t.Fatalf("held %d of %q, the longest form is %d", hold, b, s.longest)
			}
		}
	})
}

func TestTheScrubberMasksHeaderNamesAndValues(t *testing.T) {
	s := newScrubber([][]byte{[]byte(testToken)})
	named := http.CanonicalHeaderKey(hex.EncodeToString([]byte(testToken)))
	h := http.Header{
		"X-Echo":      {"Bearer " + testToken, "fine"},
		named:         {"a field named after the secret"},
		"Link":        {"</a.css>; rel=preload"},
		"Trailer:X-A": {base64.StdEncoding.EncodeToString([]byte(testToken))},
	}
	s.scrubHeader(h)
	var all strings.Builder
	for k, vs := range h {
		all.WriteString(k + ": " + strings.Join(vs, ", ") + "\n")
	}
	if l := leaks(all.String()); len(l) > 0 {
		t.Errorf("the header still holds %q:\n%s", l, all.String())
	}
	if h.Get("Link") != "</a.css>; rel=preload" || h["X-Echo"][1] != "fine" {
		t.Errorf("fields without the secret changed:\n%s", all.String())
	}
	if _, ok := h[named]; ok || len(h) != 4 {
		t.Errorf("the field named after the secret kept its name:\n%s", all.String())
	}
}

func TestAHandlerWithoutSecretsHasNoScrubber(t *testing.T) {
	if s := newScrubber(nil); s != nil {
		t.Errorf("no secrets gave a scrubber %+v", s)
	}
	if s := newScrubber([][]byte{{}}); s != nil {
		t.Errorf("an empty secret gave a scrubber %+v", s)
	}
}

func TestTheProxyScrubsEveryHeaderBlockItWrites(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		auth := r.Header.Get("Authorization")
		h := w.Header()
		h.Set("X-Early", auth)
		w.WriteHeader(http.StatusEarlyHints)
		clear(h)
		h.Set("Trailer", "X-Declared")
		h.Set("X-Final", auth)
		io.WriteString(w, "body "+auth+"\n")
		h.Set("X-Declared", auth)
		h.Set(http.TrailerPrefix+"X-Undeclared", auth)
	}))
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	p := &Proxy{Name: "api", Upstream: u, Logger: slog.New(slog.DiscardHandler), Inject: []Injection{
		{Header: "Authorization", Template: "Bearer {secret}", Secret: &FileSecret{val: []byte(testToken)}},
	}}
	addr, _ := routertest.ServeRoutes(t, nil, map[string]router.Route{"api.test": {Name: "api.test", Handler: p}})
	tests := []struct{ name, req string }{
		{"through the lean loop", "GET / HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n"},
		{"through net/http (a chunked upload)", "POST / HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := routertest.Dial(t, "", addr, 10*time.Second)
			io.WriteString(c, tt.req)
			b, _ := io.ReadAll(c)
			out := string(b)
			for _, want := range []string{"HTTP/1.1 103 Early Hints\r\n", "\r\nX-Early: Bearer ****", "\r\nX-Final: Bearer ****", "body Bearer ****", "\r\nX-Declared: Bearer ****", "\r\nX-Undeclared: Bearer ****"} {
				if !strings.Contains(out, want) {
					t.Errorf("no %q in\n%s", want, out)
				}
			}
			if l := leaks(out); len(l) > 0 {
				t.Errorf("the answer holds %q:\n%s", l, out)
			}
		})
	}
}

func TestTheProxyUndoesGzipAndDeflateAndRefusesOtherCodings(t *testing.T) {
	const text = "Bearer " + testToken + "\n"
	compress := func(w func(io.Writer) io.WriteCloser) string {
		var b strings.Builder
		zw := w(&b)
		io.WriteString(zw, text)
		zw.Close()
		return b.String()
	}
	gz := compress(func(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) })
	zl := compress(func(w io.Writer) io.WriteCloser { return zlib.NewWriter(w) })
	raw := compress(func(w io.Writer) io.WriteCloser { zw, _ := flate.NewWriter(w, 1); return zw })
	tests := []struct {
		name, coding, body, want string
		refused                  bool
	}{
		{"no coding is left alone", "", text, text, false},
		{"identity is left alone", "identity", text, text, false},
		{"gzip is undone", "gzip", gz, text, false},
		{"x-gzip is undone", "x-gzip", gz, text, false},
		{"deflate in zlib is undone", "Deflate", zl, text, false},
		{"raw deflate is undone", "deflate", raw, text, false},
		{"an empty gzip body is empty", "gzip", "", "", false},
		{"brotli is refused", "br", "whatever", "", true},
		{"two codings are refused", "gzip, gzip", gz, "", true},
		{"an unknown coding is refused", testToken, text, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := &http.Response{Header: http.Header{}, Body: io.NopCloser(strings.NewReader(tt.body)), ContentLength: int64(len(tt.body))}
			if tt.coding != "" {
				resp.Header.Set("Content-Encoding", tt.coding)
			}
			err := decodeBody(resp)
			if tt.refused {
				if !errors.Is(err, errEncodedBody) {
					t.Fatalf("got %v, want the body refused", err)
				}
				return
			}
			got, rerr := io.ReadAll(resp.Body)
			if err != nil || rerr != nil || string(got) != tt.want {
				t.Fatalf("got %q (%v, %v), want %q", got, err, rerr, tt.want)
			}
			if tt.coding != "" && tt.coding != "identity" && (resp.Header.Get("Content-Encoding") != "" || resp.ContentLength != -1) {
				t.Errorf("the head still says coding %q, length %d", resp.Header.Get("Content-Encoding"), resp.ContentLength)
			}
		})
	}
}
