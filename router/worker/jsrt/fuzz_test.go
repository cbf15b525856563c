package jsrt

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
)

// FuzzRequestConversion drives the script-facing request conversion: a Go request goes
// into JS with NewRequest and back out with ToRequest (the path fetch(request) takes).
// Promises: no panic; a request NewRequest accepts keeps its method, its URL (and the URL
// parser is idempotent on its own output), every header field a server would accept in
// order, its Host, its content length, and its body as the same reader, unread.
func FuzzRequestConversion(f *testing.F) {
	f.Add("GET", "http://a.example/p?q=1#f", "X-A", " v ", "", int64(0))
	f.Add("post", "https://b.example:443/%7Ex/../y?a b", "Content-Type", "text/plain", "body", int64(4))
	f.Add("PURGE", "http://[::1]:8080/", "set-cookie", "a=1", "x", int64(-1))
	f.Add("GET", "http://bücher.example/ä", "Bad Name", "v", "", int64(0))
	f.Add("PUT", "http://a/", "X-B", "line\r\nbreak", "0123456789", int64(10))
	rt := New(Options{})
	f.Fuzz(func(t *testing.T, method, rawURL, name, value, bodyText string, length int64) {
		r, err := http.NewRequest("GET", "http://placeholder/", nil)
		if err != nil {
			t.Fatal(err)
		}
		r.Method = method
		r.Host = "host.example"
		r.Header = http.Header{name: {value}, "X-Second": {"2"}}
		var in io.ReadCloser
		if bodyText != "" {
			in = io.NopCloser(strings.NewReader(bodyText))
			r.Body, r.ContentLength = in, length
		}
		v, err := rt.NewRequest(r, rawURL)
		if err != nil {
			return // a method or URL the Request constructor rejects
		}
		out, err := rt.ToRequest(context.Background(), v)
		if err != nil {
			t.Fatalf("ToRequest after NewRequest(%q, %q): %v", method, rawURL, err)
		}
		if !strings.EqualFold(out.Method, method) || (out.Method != method && out.Method != strings.ToUpper(method)) {
			t.Errorf("method %q became %q", method, out.Method)
		}
		href := v.ToObject(rt.VM()).Get("url").String()
		if out.URL.String() != href {
			if u, err := url.Parse(href); err != nil || u.String() != out.URL.String() {
				t.Errorf("url %q: JS %q, Go %q", rawURL, href, out.URL)
			}
		}
		rt.VM().Set("href", href)
		again, err := eval(t, rt, "return new URL(href).href")
		if want, _ := eval(t, rt, "return href"); err != nil || again != want {
			t.Errorf("new URL(%q).href = %s (%v): the parser is not idempotent", href, again, err)
		}
		if out.Host != "host.example" {
			t.Errorf("host %q", out.Host)
		}
		wantHeaders := http.Header{}
		names := []string{name, "X-Second"}
		sort.Strings(names)
		for _, k := range names {
			if k == "X-Second" {
				wantHeaders.Add(k, "2")
			} else if v := strings.Trim(value, " \t\r\n"); validField(name, v) && !strings.EqualFold(name, "host") && !strings.EqualFold(name, "content-length") {
				// Headers strips HTTP whitespace (CR and LF too) before it checks.
				wantHeaders.Add(name, v)
			}
		}
		for k, vs := range wantHeaders {
			if got := out.Header.Values(k); strings.Join(got, "\x00") != strings.Join(vs, "\x00") {
				t.Errorf("header %q: got %q, want %q", k, got, vs)
			}
		}
		if len(out.Header) != len(wantHeaders) {
			t.Errorf("headers %v, want %v", out.Header, wantHeaders)
		}
		// A GET or HEAD that declares no length has no body, as a server
		// reads it, whatever reader the request holds (NewRequest).
		if in == nil || (length == 0 && (method == http.MethodGet || method == http.MethodHead)) {
			if out.Body != nil && out.Body != http.NoBody {
				t.Errorf("a request without a body got one")
			}
			return
		}
		if out.Body != in {
			t.Fatalf("the body is a %T, not the request's reader", out.Body)
		}
		if want := max(length, -1); length > 0 && out.ContentLength != want {
			t.Errorf("content length %d, want %d", out.ContentLength, want)
		}
		if b, _ := io.ReadAll(out.Body); !bytes.Equal(b, []byte(bodyText)) {
			t.Errorf("body %q, want %q", b, bodyText)
		}
	})
}

func validField(name, value string) bool {
	if name == "" || strings.ContainsAny(value, "\r\n\x00") {
		return false
	}
	for _, c := range []byte(name) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
