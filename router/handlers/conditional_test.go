package handlers

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A precondition row: one header in one form, against an existing object or
// a missing one, and the status RFC 9110 §13 gives for each method.
type precondRow struct {
	name    string
	headers map[string]string // values may hold {etag} (quoted), {bare} (unquoted), {older}, {lastmod}, {future}
	missing bool              // the request names an object that does not exist
	want    [4]int            // GET, HEAD, PUT, DELETE
}

var precondMethods = [4]string{"GET", "HEAD", "PUT", "DELETE"}

// The statuses and why, per RFC 9110:
//   - §13.1.1 If-Match uses the strong comparison: a weak tag never matches;
//     "*" matches any current representation; a missing object matches nothing.
//   - §13.1.2 If-None-Match uses the weak comparison; when it fails a GET or
//     HEAD is a 304 and any other method a 412.
//   - §13.1.3 If-Modified-Since applies to GET and HEAD only, and is ignored
//     when If-None-Match is present or the date is not a valid HTTP-date.
//   - §13.1.4 If-Unmodified-Since is ignored when If-Match is present, when
//     the date is not valid, or when there is no current representation
//     (no modification date).
//   - §13.2.1 every precondition is ignored when the answer without it would
//     not be 2xx or 412: a GET of a missing object is a 404 whatever it says.
//   - §13.2.2 the order: If-Match, else If-Unmodified-Since; then
//     If-None-Match, else If-Modified-Since.
//
// A malformed entity-tag list (an unquoted tag) matches nothing, for every
// method: If-Match fails, If-None-Match holds.
var precondRows = []precondRow{
	{"If-Match with the strong etag holds", h("If-Match", "{etag}"), false, [4]int{200, 200, 200, 204}},
	{"If-Match with the weak form of the etag fails (strong comparison)", h("If-Match", "W/{etag}"), false, [4]int{412, 412, 412, 412}},
	{"If-Match with the etag unquoted fails (malformed, no match)", h("If-Match", "{bare}"), false, [4]int{412, 412, 412, 412}},
	{"If-Match * holds on an existing object", h("If-Match", "*"), false, [4]int{200, 200, 200, 204}},
	{"If-Match with a list holding the etag holds", h("If-Match", `"other", {etag}`), false, [4]int{200, 200, 200, 204}},
	{"If-Match with a list holding only the weak etag fails", h("If-Match", `"other", W/{etag}`), false, [4]int{412, 412, 412, 412}},
	{"If-Match with another etag fails", h("If-Match", `"other"`), false, [4]int{412, 412, 412, 412}},
	{"If-Match on a missing object fails a write; a read is a 404", h("If-Match", `"other"`), true, [4]int{404, 404, 412, 412}},
	{"If-Match * on a missing object fails a write; a read is a 404", h("If-Match", "*"), true, [4]int{404, 404, 412, 412}},

	{"If-None-Match with the strong etag fails: 304 for reads, 412 for writes", h("If-None-Match", "{etag}"), false, [4]int{304, 304, 412, 412}},
	{"If-None-Match with the weak form of the etag fails too (weak comparison)", h("If-None-Match", "W/{etag}"), false, [4]int{304, 304, 412, 412}},
	{"If-None-Match with the etag unquoted holds (malformed, no match)", h("If-None-Match", "{bare}"), false, [4]int{200, 200, 200, 204}},
	{"If-None-Match * fails on an existing object", h("If-None-Match", "*"), false, [4]int{304, 304, 412, 412}},
	{"If-None-Match with a list holding the etag fails", h("If-None-Match", `"other", {etag}`), false, [4]int{304, 304, 412, 412}},
	{"If-None-Match with another etag holds", h("If-None-Match", `"other"`), false, [4]int{200, 200, 200, 204}},
	{"If-None-Match * on a missing object holds: create only", h("If-None-Match", "*"), true, [4]int{404, 404, 200, 204}},
	{"If-None-Match with an etag on a missing object holds", h("If-None-Match", "{etag}"), true, [4]int{404, 404, 200, 204}},

	{"If-Modified-Since before the upload holds", h("If-Modified-Since", "{older}"), false, [4]int{200, 200, 200, 204}},
	{"If-Modified-Since the upload fails a read and is ignored by writes", h("If-Modified-Since", "{lastmod}"), false, [4]int{304, 304, 200, 204}},
	{"If-Modified-Since in the future fails a read and is ignored by writes", h("If-Modified-Since", "{future}"), false, [4]int{304, 304, 200, 204}},
	{"If-Modified-Since that is not a date is ignored", h("If-Modified-Since", "yesterday"), false, [4]int{200, 200, 200, 204}},
	{"If-Modified-Since on a missing object", h("If-Modified-Since", "{older}"), true, [4]int{404, 404, 200, 204}},

	{"If-Unmodified-Since before the upload fails", h("If-Unmodified-Since", "{older}"), false, [4]int{412, 412, 412, 412}},
	{"If-Unmodified-Since the upload holds", h("If-Unmodified-Since", "{lastmod}"), false, [4]int{200, 200, 200, 204}},
	{"If-Unmodified-Since in the future holds", h("If-Unmodified-Since", "{future}"), false, [4]int{200, 200, 200, 204}},
	{"If-Unmodified-Since that is not a date is ignored", h("If-Unmodified-Since", "yesterday"), false, [4]int{200, 200, 200, 204}},
	{"If-Unmodified-Since on a missing object is ignored (no modification date)", h("If-Unmodified-Since", "{older}"), true, [4]int{404, 404, 200, 204}},

	{"If-Match that holds makes If-Unmodified-Since ignored", h("If-Match", "{etag}", "If-Unmodified-Since", "{older}"), false, [4]int{200, 200, 200, 204}},
	{"If-Match is evaluated before If-None-Match", h("If-Match", `"other"`, "If-None-Match", "{etag}"), false, [4]int{412, 412, 412, 412}},
	{"If-Unmodified-Since is evaluated before If-None-Match", h("If-Unmodified-Since", "{older}", "If-None-Match", "{etag}"), false, [4]int{412, 412, 412, 412}},
	{"If-None-Match that holds makes If-Modified-Since ignored", h("If-None-Match", `"other"`, "If-Modified-Since", "{future}"), false, [4]int{200, 200, 200, 204}},
	{"a failing If-Unmodified-Since with a future If-Modified-Since still fails a write", h("If-Unmodified-Since", "{older}", "If-Modified-Since", "{future}"), false, [4]int{412, 412, 412, 412}},
}

func h(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

const precondContent = "hello world"

func TestBlobPreconditionsFollowRFC9110ForEveryMethod(t *testing.T) {
	rt := handlersRouter(t)
	future := time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)
	for i, row := range precondRows {
		for m, method := range precondMethods {
			t.Run(fmt.Sprintf("%s/%s", row.name, method), func(t *testing.T) {
				url := fmt.Sprintf("my.r2/pre/%d/%s", i, method)
				etag, lastMod := `"5eb63bbbe01eeed093cb22bb8f5acdc3"`, time.Now().UTC()
				if !row.missing {
					put := do(rt, call{method: "PUT", url: url, body: precondContent})
					etag = put.Header.Get("ETag")
					lm, err := http.ParseTime(do(rt, call{method: "HEAD", url: url}).Header.Get("Last-Modified"))
					if put.StatusCode != 200 || err != nil {
						t.Fatalf("seeding: %d %v", put.StatusCode, err)
					}
					lastMod = lm
				}
				r := strings.NewReplacer("{etag}", etag, "{bare}", strings.Trim(etag, `"`),
					"{older}", lastMod.Add(-time.Hour).Format(http.TimeFormat),
					"{lastmod}", lastMod.Format(http.TimeFormat), "{future}", future)
				c := call{method: method, url: url, headers: map[string]string{}}
				for k, v := range row.headers {
					c.headers[k] = r.Replace(v)
				}
				if method == "PUT" {
					c.body = "replaced"
				}
				resp := do(rt, c)
				b := body(resp)
				want := row.want[m]
				if resp.StatusCode != want {
					t.Errorf("%s %v: %d %q, want %d", method, c.headers, resp.StatusCode, b, want)
				}
				// What the object is now: untouched unless the write went through.
				after := do(rt, call{method: "GET", url: url})
				now := body(after)
				switch {
				case method == "PUT" && want == 200:
					if now != "replaced" {
						t.Errorf("after a PUT that holds the object is %d %q", after.StatusCode, now)
					}
				case method == "DELETE" && want == 204:
					if after.StatusCode != 404 {
						t.Errorf("after a DELETE that holds the object is %d %q", after.StatusCode, now)
					}
				case row.missing:
					if after.StatusCode != 404 {
						t.Errorf("a refused %s created the object: %d %q", method, after.StatusCode, now)
					}
				default:
					if now != precondContent {
						t.Errorf("a refused %s changed the object: %d %q", method, after.StatusCode, now)
					}
				}
			})
		}
	}
}

func TestBlobRangesFollowRFC9110(t *testing.T) {
	rt := handlersRouter(t)
	put := do(rt, call{method: "PUT", url: "my.r2/r", body: precondContent}) // 11 bytes
	etag := put.Header.Get("ETag")
	do(rt, call{method: "PUT", url: "my.r2/empty"})
	lastMod := do(rt, call{method: "HEAD", url: "my.r2/r"}).Header.Get("Last-Modified")
	tests := []struct {
		name         string
		c            call
		wantStatus   int
		wantBody     string // exact, for 200 and single-range 206
		contentRange string
	}{
		{"a zero-length suffix is unsatisfiable", call{method: "GET", url: "my.r2/r", headers: h("Range", "bytes=-0")}, 416, "", "bytes */11"},
		{"a range starting past the end is unsatisfiable", call{method: "GET", url: "my.r2/r", headers: h("Range", "bytes=11-")}, 416, "", "bytes */11"},
		{"a range in an unknown unit is ignored", call{method: "GET", url: "my.r2/r", headers: h("Range", "items=0-1")}, 200, precondContent, ""},
		{"the unit is case-insensitive", call{method: "GET", url: "my.r2/r", headers: h("Range", "Bytes=0-1")}, 206, "he", "bytes 0-1/11"},
		{"a suffix range", call{method: "GET", url: "my.r2/r", headers: h("Range", "bytes=-5")}, 206, "world", "bytes 6-10/11"},
		{"a suffix longer than the object is the whole object", call{method: "GET", url: "my.r2/r", headers: h("Range", "bytes=-50")}, 206, precondContent, "bytes 0-10/11"},
		{"a last position past the end is clamped", call{method: "GET", url: "my.r2/r", headers: h("Range", "bytes=6-99")}, 206, "world", "bytes 6-10/11"},
		{"an unsatisfiable member of a set is dropped", call{method: "GET", url: "my.r2/r", headers: h("Range", "bytes=0-1,-0,20-30")}, 206, "he", "bytes 0-1/11"},
		{"a malformed byte range is a 416", call{method: "GET", url: "my.r2/r", headers: h("Range", "bytes=5-2")}, 416, "", "bytes */11"},
		{"ranges adding up to more than the object are the whole object", call{method: "GET", url: "my.r2/r", headers: h("Range", "bytes=0-9,0-9")}, 200, precondContent, ""},
		{"HEAD ignores Range (only GET has ranges)", call{method: "HEAD", url: "my.r2/r", headers: h("Range", "bytes=0-1")}, 200, "", ""},
		{"If-Range with the strong etag serves the range", call{method: "GET", url: "my.r2/r", headers: h("Range", "bytes=0-1", "If-Range", etag)}, 206, "he", "bytes 0-1/11"},
		{"If-Range with a weak etag serves the whole object", call{method: "GET", url: "my.r2/r", headers: h("Range", "bytes=0-1", "If-Range", "W/"+etag)}, 200, precondContent, ""},
		{"If-Range with another etag serves the whole object", call{method: "GET", url: "my.r2/r", headers: h("Range", "bytes=0-1", "If-Range", `"other"`)}, 200, precondContent, ""},
		{"If-Range with the Last-Modified date serves the range", call{method: "GET", url: "my.r2/r", headers: h("Range", "bytes=0-1", "If-Range", lastMod)}, 206, "he", "bytes 0-1/11"},
		{"If-Range that fails makes even an unsatisfiable range the whole object", call{method: "GET", url: "my.r2/r", headers: h("Range", "bytes=-0", "If-Range", `"other"`)}, 200, precondContent, ""},
		{"a range of an empty object is ignored", call{method: "GET", url: "my.r2/empty", headers: h("Range", "bytes=-5")}, 200, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := do(rt, tt.c)
			b := body(resp)
			if resp.StatusCode != tt.wantStatus || resp.Header.Get("Content-Range") != tt.contentRange {
				t.Fatalf("%v: %d Content-Range %q %q, want %d Content-Range %q", tt.c.headers, resp.StatusCode, resp.Header.Get("Content-Range"), b, tt.wantStatus, tt.contentRange)
			}
			if tt.wantStatus != 416 && b != tt.wantBody {
				t.Errorf("body %q, want %q", b, tt.wantBody)
			}
		})
	}
	t.Run("several ranges are multipart/byteranges", func(t *testing.T) {
		resp := do(rt, call{method: "GET", url: "my.r2/r", headers: h("Range", "bytes=0-1,6-7")})
		b := body(resp)
		if resp.StatusCode != 206 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "multipart/byteranges") ||
			!strings.Contains(b, "Content-Range: bytes 0-1/11") || !strings.Contains(b, "Content-Range: bytes 6-7/11") {
			t.Errorf("%d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
		}
	})
}

// TestEveryHandlerErrorTakesTheDocumentedShape walks the errors the KV, state
// and blob handlers answer: each is a text/plain "interceptd: <reason>" body
// with the same reason in X-Interceptd-Error (docs/handlers.md). The one
// exception the document names, a transaction's 409, is JSON.
func TestEveryHandlerErrorTakesTheDocumentedShape(t *testing.T) {
	rt := handlersRouter(t)
	put := do(rt, call{method: "PUT", url: "my.r2/o", body: precondContent})
	etag := put.Header.Get("ETag")
	do(rt, call{method: "PUT", url: "my.kv/k", body: "v"})
	calls := []struct {
		name string
		c    call
		want int
	}{
		{"kv: a missing key", call{method: "GET", url: "my.kv/none"}, 404},
		{"kv: HEAD of a missing key", call{method: "HEAD", url: "my.kv/none"}, 404},
		{"kv: a key over the limit", call{method: "PUT", url: "my.kv/" + strings.Repeat("k", 513), body: "x"}, 414},
		{"kv: a value over the limit", call{method: "PUT", url: "my.kv/big", body: strings.Repeat("x", 26<<20)}, 413},
		{"kv: metadata that is not JSON", call{method: "PUT", url: "my.kv/m", body: "x", headers: h("X-KV-Metadata", "{nope")}, 400},
		{"kv: a bad ttl", call{method: "PUT", url: "my.kv/t?ttl=0", body: "x"}, 400},
		{"kv: a bad limit", call{method: "GET", url: "my.kv/?limit=0"}, 400},
		{"kv: a bad cursor", call{method: "GET", url: "my.kv/?cursor=zzz"}, 400},
		{"kv: a method a key does not take", call{method: "PATCH", url: "my.kv/k"}, 405},
		{"kv: POST to the listing", call{method: "POST", url: "my.kv/", body: "{}"}, 405},
		{"state: a transaction that is not JSON", call{method: "POST", url: "state.do/", body: "nope"}, 400},
		{"state: an empty transaction", call{method: "POST", url: "state.do/", body: "{}"}, 400},
		{"state: a missing key", call{method: "GET", url: "state.do/none"}, 404},
		{"blob: a missing object", call{method: "GET", url: "my.r2/none"}, 404},
		{"blob: a method the listing does not take", call{method: "PUT", url: "my.r2/", body: "x"}, 405},
		{"blob: a method an object does not take", call{method: "PATCH", url: "my.r2/o", body: "x"}, 405},
		{"blob: a malformed Content-MD5", call{method: "PUT", url: "my.r2/o2", body: "x", headers: h("Content-MD5", "zz")}, 400},
		{"blob: a Content-MD5 that does not match", call{method: "PUT", url: "my.r2/o2", body: "x", headers: h("Content-MD5", "XrY7u+Ae7tCTyyK7j1rNww==")}, 400},
		{"blob: an object over the limit", call{method: "PUT", url: "my.r2/big", body: strings.Repeat("x", 1001)}, 413},
		{"blob: a bad listing cursor", call{method: "GET", url: "my.r2/?cursor=zzz"}, 400},
		{"blob: a GET whose If-Match fails", call{method: "GET", url: "my.r2/o", headers: h("If-Match", `"other"`)}, 412},
		{"blob: a HEAD whose If-Unmodified-Since fails", call{method: "HEAD", url: "my.r2/o", headers: h("If-Unmodified-Since", "Mon, 01 Jan 2001 00:00:00 GMT")}, 412},
		{"blob: an unsatisfiable range", call{method: "GET", url: "my.r2/o", headers: h("Range", "bytes=100-")}, 416},
		{"blob: a malformed byte range", call{method: "GET", url: "my.r2/o", headers: h("Range", "bytes=x-y")}, 416},
		{"blob: a zero-length suffix range", call{method: "GET", url: "my.r2/o", headers: h("Range", "bytes=-0", "If-Range", etag)}, 416},
		{"blob: a PUT whose If-Match fails", call{method: "PUT", url: "my.r2/o", body: "x", headers: h("If-Match", `"other"`)}, 412},
		{"blob: a DELETE whose If-Match fails", call{method: "DELETE", url: "my.r2/o", headers: h("If-Match", `"other"`)}, 412},
	}
	t.Run("state: a transaction whose condition fails is JSON, with the header", func(t *testing.T) {
		resp := do(rt, call{method: "POST", url: "state.do/", body: `{"conditions":[{"key":"none","exists":true}],"deletes":["x"]}`})
		b := body(resp)
		if resp.StatusCode != 409 || resp.Header.Get("Content-Type") != "application/json" || !strings.Contains(b, `"error": "condition failed`) {
			t.Errorf("%d %s %q", resp.StatusCode, resp.Header.Get("Content-Type"), b)
		}
		if got := resp.Header.Get("X-Interceptd-Error"); got != "condition failed: condition 0" {
			t.Errorf("X-Interceptd-Error %q", got)
		}
	})
	for _, tt := range calls {
		t.Run(tt.name, func(t *testing.T) {
			resp := do(rt, tt.c)
			b := body(resp)
			reason := resp.Header.Get("X-Interceptd-Error")
			if resp.StatusCode != tt.want {
				t.Errorf("status %d, want %d (%q)", resp.StatusCode, tt.want, b)
			}
			if reason == "" {
				t.Errorf("no X-Interceptd-Error header (body %q)", b)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			if tt.c.method == "HEAD" {
				return // no body to check; the recorder keeps what a server would drop
			}
			if b != "interceptd: "+reason+"\n" {
				t.Errorf("body %q, want %q", b, "interceptd: "+reason+"\n")
			}
		})
	}
}
