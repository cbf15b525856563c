package e2e

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// curlAnswer is what curl -i printed: the final status, its headers and body.
type curlAnswer struct {
	status int
	header http.Header
	body   string
}

// curlI runs curl -i in the sandbox and splits its output.
func (e *Env) curlI(sb Sandbox, args ...string) curlAnswer {
	e.t.Helper()
	out := e.MustIn(sb, append([]string{"curl", "-sS", "-i"}, args...)...)
	head, body, _ := strings.Cut(out, "\r\n\r\n")
	lines := strings.Split(head, "\r\n")
	a := curlAnswer{header: http.Header{}, body: body}
	if f := strings.Fields(lines[0]); len(f) >= 2 {
		for _, c := range f[1] {
			a.status = a.status*10 + int(c-'0')
		}
	}
	for _, l := range lines[1:] {
		if k, v, ok := strings.Cut(l, ":"); ok {
			a.header.Add(k, strings.TrimSpace(v))
		}
	}
	return a
}

// TestConditionalWritesAndRangesFromASandbox is issue 16 items 4 to 8 as a
// container sees them: a write whose precondition fails answers 412 and
// leaves the object alone; a zero-length suffix range is a 416; a range in
// a unit the server does not know is ignored. Errors take interceptd's shape.
func TestConditionalWritesAndRangesFromASandbox(t *testing.T) {
	e := NewEnv(t, Options{})
	sb := e.Create("cond")
	// seed stores "hello world" under a key of its own, so that a case that
	// fails (and overwrites) does not spoil the next.
	seed := func(t *testing.T, key string) (url, etag string, lastMod time.Time) {
		t.Helper()
		url = "http://my.r2/" + key
		put := e.curlI(sb, "-X", "PUT", "--data-binary", "hello world", url)
		etag = put.header.Get("ETag")
		if put.status != 200 || !strings.HasPrefix(etag, `"`) {
			t.Fatalf("PUT: %d %s", put.status, put.body)
		}
		lastMod, err := http.ParseTime(e.curlI(sb, "-I", url).header.Get("Last-Modified"))
		if err != nil {
			t.Fatalf("Last-Modified: %v", err)
		}
		return url, etag, lastMod
	}
	future := time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)

	writes := []struct {
		name    string
		method  string
		headers func(etag string, lastMod time.Time) []string
	}{
		{"item 4: PUT with If-Match and the weak form of the current etag", "PUT",
			func(etag string, _ time.Time) []string { return []string{"If-Match: W/" + etag} }},
		{"item 5: PUT with If-Match and the current etag unquoted", "PUT",
			func(etag string, _ time.Time) []string { return []string{"If-Match: " + strings.Trim(etag, `"`)} }},
		{"item 6: PUT with If-Unmodified-Since before the upload (and If-Modified-Since in the future)", "PUT",
			func(_ string, lm time.Time) []string {
				return []string{"If-Unmodified-Since: " + lm.Add(-time.Hour).Format(http.TimeFormat), "If-Modified-Since: " + future}
			}},
		{"item 6: DELETE with If-Unmodified-Since before the upload", "DELETE",
			func(_ string, lm time.Time) []string {
				return []string{"If-Unmodified-Since: " + lm.Add(-time.Hour).Format(http.TimeFormat)}
			}},
	}
	for i, w := range writes {
		t.Run(w.name, func(t *testing.T) {
			url, etag, lastMod := seed(t, "w"+strconv.Itoa(i))
			hs := w.headers(etag, lastMod)
			args := []string{"-X", w.method}
			if w.method == "PUT" {
				args = append(args, "--data-binary", "overwritten")
			}
			for _, h := range hs {
				args = append(args, "-H", h)
			}
			a := e.curlI(sb, append(args, url)...)
			t.Logf("%s %q → %d %q X-Interceptd-Error=%q", w.method, hs, a.status, a.body, a.header.Get("X-Interceptd-Error"))
			if a.status != 412 || !strings.HasPrefix(a.body, "interceptd: precondition failed") || a.header.Get("X-Interceptd-Error") == "" {
				t.Errorf("answered %d %q, want a 412 in interceptd's error shape", a.status, a.body)
			}
			if got := e.curlI(sb, url); got.status != 200 || got.body != "hello world" {
				t.Errorf("the object is now %d %q: the failed precondition wrote anyway", got.status, got.body)
			}
		})
	}
	t.Run("item 5: GET with the same unquoted If-Match answers as PUT does", func(t *testing.T) {
		url, etag, _ := seed(t, "g5")
		a := e.curlI(sb, "-H", "If-Match: "+strings.Trim(etag, `"`), url)
		t.Logf("GET If-Match: %s → %d %q", strings.Trim(etag, `"`), a.status, a.body)
		if a.status != 412 || !strings.HasPrefix(a.body, "interceptd: ") || a.header.Get("X-Interceptd-Error") == "" {
			t.Errorf("answered %d %q, want a 412 in interceptd's error shape", a.status, a.body)
		}
	})
	t.Run("a HEAD whose precondition fails and a GET that is not modified end cleanly", func(t *testing.T) {
		url, etag, _ := seed(t, "h")
		a := e.curlI(sb, "-m", "5", "-I", "-H", `If-Match: "other"`, url)
		if a.status != 412 || a.header.Get("X-Interceptd-Error") != "precondition failed: If-Match" {
			t.Errorf("HEAD If-Match other: %d %v", a.status, a.header)
		}
		a = e.curlI(sb, "-m", "5", "-H", "If-None-Match: W/"+etag, url)
		if a.status != 304 || a.body != "" || a.header.Get("ETag") != etag {
			t.Errorf("GET If-None-Match weak etag: %d %q %v", a.status, a.body, a.header)
		}
	})
	t.Run("item 7: a zero-length suffix range is unsatisfiable", func(t *testing.T) {
		url, _, _ := seed(t, "r7")
		a := e.curlI(sb, "-H", "Range: bytes=-0", url)
		t.Logf("Range: bytes=-0 → %d Content-Range=%q %q", a.status, a.header.Get("Content-Range"), a.body)
		if a.status != 416 || a.header.Get("Content-Range") != "bytes */11" {
			t.Errorf("answered %d with Content-Range %q, want 416 with bytes */11", a.status, a.header.Get("Content-Range"))
		}
		if !strings.HasPrefix(a.body, "interceptd: ") || a.header.Get("X-Interceptd-Error") == "" {
			t.Errorf("the 416 is not in interceptd's error shape: %q", a.body)
		}
	})
	t.Run("item 8: a range in an unknown unit is ignored", func(t *testing.T) {
		url, _, _ := seed(t, "r8")
		a := e.curlI(sb, "-H", "Range: items=0-1", url)
		t.Logf("Range: items=0-1 → %d %q", a.status, a.body)
		if a.status != 200 || a.body != "hello world" {
			t.Errorf("answered %d %q, want 200 with the whole object", a.status, a.body)
		}
	})
	t.Run("and a write whose precondition holds still writes", func(t *testing.T) {
		url, etag, _ := seed(t, "ok")
		a := e.curlI(sb, "-X", "PUT", "-H", "If-Match: "+etag, "--data-binary", "replaced", url)
		if a.status != 200 {
			t.Fatalf("PUT If-Match: %s → %d %q", etag, a.status, a.body)
		}
		if got := e.curlI(sb, url); got.body != "replaced" {
			t.Errorf("the object is %q", got.body)
		}
	})
}
