package handlers

import (
	"net/url"
	"regexp"
	"strings"
	"testing"
)

var methodRE = regexp.MustCompile(`^[A-Z]{1,16}$`)

// FuzzKVPath sends arbitrary paths, methods and bodies through the router to
// the KV, state and blob handlers: every request gets a status, a 5xx never
// comes from the client's input, and a key stored is read back the same: a
// PUT that answers 2xx is followed by a GET of its path, which must answer
// 200 with the bytes put.
func FuzzKVPath(f *testing.F) {
	for _, s := range []string{"/a", "/a%2Fb", "/%zz", "/" + strings.Repeat("k", 600), "/%00", "/é", "/?prefix=%ff", "/a?ttl=-1", "/a?expiration=abc", "/Key/With%20Space", "/a?ttl=60"} {
		f.Add("PUT", s, "v")
		f.Add("GET", s, "")
	}
	f.Add("PUT", "/A/b", "Value\x00\xff")
	f.Add("PUT", "/k", "")
	f.Add("POST", "/", `{"writes":[{"key":"k","value":"v"}]}`)
	f.Add("POST", "/", `{"conditions":[{"key":"","absent":true}]}`)
	rt := handlersRouter(f)
	f.Fuzz(func(t *testing.T, method, target, body string) {
		if len(target) == 0 || target[0] != '/' || strings.ContainsAny(target, " \r\n\t#") || !methodRE.MatchString(method) {
			return // not a request line a client can send
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return // net/http answers 400 before any handler
		}
		path, _, _ := strings.Cut(target, "?")
		for _, host := range []string{"my.kv", "state.do", "my.r2"} {
			resp := do(rt, call{method: method, url: host + target, body: body})
			if resp.StatusCode >= 500 {
				t.Fatalf("%s %s%s: %d %s", method, host, target, resp.StatusCode, bodyOf(resp))
			}
			if method != "PUT" || resp.StatusCode/100 != 2 {
				continue
			}
			if host != "my.r2" && u.Query().Has("expiration") {
				continue // a unix time in seconds: it may be past by the GET
			}
			got := do(rt, call{method: "GET", url: host + path})
			if b := bodyOf(got); got.StatusCode != 200 || b != body {
				t.Fatalf("PUT %s%s answered %d, but GET %s%s answers %d with %q, want 200 with %q", host, target, resp.StatusCode, host, path, got.StatusCode, b, body)
			}
		}
	})
}
