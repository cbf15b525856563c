package handlers

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/routertest"
	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
)

var (
	sbA = netip.MustParseAddr("10.213.0.2")
	sbB = netip.MustParseAddr("10.213.0.6")
)

// handlersRouter routes my.kv, my.kv.private (per sandbox), my.r2 and
// state.do for two sandboxes, a and b.
func handlersRouter(t testing.TB) *router.Router {
	t.Helper()
	db, err := store.Open(t.TempDir(), &store.Options{ChunkSize: 16, Limits: store.Limits{MaxMetadataBytes: 64, MaxObjectBytes: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	l := store.Limits{}.WithDefaults()
	l.MaxMetadataBytes, l.MaxObjectBytes = 64, 1000
	return router.New(router.Config{
		Hosts: map[string]router.Route{
			"my.kv":         {Name: "my.kv", Handler: &KV{Store: backend.Bolt(db), Kind: store.KindKV, Namespace: "default", Limits: l}},
			"my.kv.private": {Name: "my.kv.private", Handler: &KV{Store: backend.Bolt(db), Kind: store.KindKV, Namespace: "p", PerSandbox: true, Limits: l}},
			"my.r2":         {Name: "my.r2", Handler: &Blob{Store: backend.Bolt(db), Bucket: "default", Limits: l}},
			"state.do":      {Name: "state.do", Handler: &KV{Store: backend.Bolt(db), Kind: store.KindState, Namespace: "default", PerSandbox: true, Transactions: true, Limits: l}},
		},
		Identify: func(a netip.Addr) (policy.Caller, bool) {
			open := policy.MustCompile(policy.Policy{Internet: true})
			switch a {
			case sbA:
				return policy.Caller{Sandbox: "a", Policy: open}, true
			case sbB:
				return policy.Caller{Sandbox: "b", Policy: open}, true
			}
			return policy.Caller{}, false
		},
		Fallback: router.HandlerFunc(func(w http.ResponseWriter, r *http.Request, env router.Env) error { return router.Errorf(418, "no") }),
		Logger:   slog.New(slog.DiscardHandler),
	})
}

type call struct {
	from    netip.Addr
	method  string
	url     string // host + path, e.g. my.kv/k
	body    string
	headers map[string]string
}

func do(rt *router.Router, c call) *http.Response {
	host, path, _ := strings.Cut(c.url, "/")
	r := httptest.NewRequest(c.method, "http://"+host+"/"+path, strings.NewReader(c.body))
	if c.body == "" {
		r.ContentLength = 0
	}
	for k, v := range c.headers {
		r.Header.Set(k, v)
	}
	from := c.from
	if !from.IsValid() {
		from = sbA
	}
	return routertest.Do(rt, r, netip.AddrPortFrom(from, 40000), netip.AddrPortFrom(netip.MustParseAddr("198.18.213.1"), 80)).Result()
}

func body(r *http.Response) string { b, _ := io.ReadAll(r.Body); return string(b) }

func bodyOf(r *http.Response) string { return body(r) }

func TestKVHandlerSemantics(t *testing.T) {
	rt := handlersRouter(t)
	steps := []step{
		{"PUT with metadata and a TTL", call{method: "PUT", url: "my.kv/a/é", body: "v1", headers: map[string]string{"X-KV-Metadata": `{"owner":"ü"}`}}, 204, "", nil},
		{"GET returns value and metadata", call{method: "GET", url: "my.kv/a/%C3%A9"}, 200, "v1", map[string]string{"X-KV-Metadata": `{"owner":"\u00fc"}`}},
		{"PUT with ttl sets an expiration", call{method: "PUT", url: "my.kv/t?ttl=3600", body: "x"}, 204, "", nil},
		{"a zero ttl is refused", call{method: "PUT", url: "my.kv/t?ttl=0", body: "x"}, 400, "ttl", nil},
		{"ttl and expiration together are refused", call{method: "PUT", url: "my.kv/t?ttl=5&expiration=9999999999", body: "x"}, 400, "not both", nil},
		{"a past expiration is refused", call{method: "PUT", url: "my.kv/t?expiration=1", body: "x"}, 400, "in the future", nil},
		{"metadata that is not JSON is refused", call{method: "PUT", url: "my.kv/m", body: "x", headers: map[string]string{"X-KV-Metadata": "{nope"}}, 400, "metadata is not valid JSON", nil},
		{"metadata over the limit names it", call{method: "PUT", url: "my.kv/m", body: "x", headers: map[string]string{"X-KV-Metadata": `"` + strings.Repeat("m", 80) + `"`}}, 413, "metadata too large: 82 bytes, limit 64", nil},
		{"a key over the limit names it", call{method: "PUT", url: "my.kv/" + strings.Repeat("k", 513), body: "x"}, 414, "key too large: 513 bytes, limit 512", nil},
		{"the listing is JSON in byte order", call{method: "GET", url: "my.kv/?prefix=a/"}, 200, `"name": "a/é"`, nil},
		{"a bad limit is refused", call{method: "GET", url: "my.kv/?limit=0"}, 400, "limit", nil},
		{"a bad cursor is refused", call{method: "GET", url: "my.kv/?cursor=zzz"}, 400, "invalid cursor", nil},
		{"rewriting without metadata clears it", call{method: "PUT", url: "my.kv/a/é", body: "v2"}, 204, "", nil},
		{"POST to / on kv is not allowed", call{method: "POST", url: "my.kv/", body: "{}"}, 405, "not allowed", nil},
		{"POST to a key writes it, for clients that can only POST", call{method: "POST", url: "my.kv/posted", body: "by wget"}, 204, "", nil},
		{"and it reads back", call{method: "GET", url: "my.kv/posted"}, 200, "by wget", nil},
	}
	runSteps(t, rt, steps)
	if resp := do(rt, call{method: "GET", url: "my.kv/a/é"}); resp.Header.Get("X-KV-Metadata") != "" {
		t.Error("metadata survived a rewrite without it")
	}
	if resp := do(rt, call{method: "GET", url: "my.kv/t"}); resp.Header.Get("X-KV-Expiration") == "" {
		t.Error("no X-KV-Expiration on a key with a TTL")
	}
}

func TestPerSandboxKeysAreInvisibleToOtherSandboxes(t *testing.T) {
	rt := handlersRouter(t)
	for _, host := range []string{"my.kv.private", "state.do"} {
		do(rt, call{from: sbA, method: "PUT", url: host + "/secret", body: "a's"})
		if resp := do(rt, call{from: sbB, method: "GET", url: host + "/secret"}); resp.StatusCode != 404 {
			t.Errorf("%s: b reads a's key: %d %s", host, resp.StatusCode, body(resp))
		}
		if resp := do(rt, call{from: sbA, method: "GET", url: host + "/secret"}); body(resp) != "a's" {
			t.Errorf("%s: a cannot read its own key", host)
		}
		if resp := do(rt, call{from: sbB, method: "GET", url: host + "/"}); !strings.Contains(body(resp), `"keys": []`) {
			t.Errorf("%s: b's listing is not empty", host)
		}
	}
}

func TestStateTransactions(t *testing.T) {
	rt := handlersRouter(t)
	do(rt, call{method: "PUT", url: "state.do/counter", body: "1"})
	tests := []struct {
		name       string
		txn        string
		wantStatus int
		wantBody   string
	}{
		{"a holding compare applies", `{"conditions":[{"key":"counter","value":"1"}],"reads":["counter","none"],"writes":[{"key":"counter","value":"2"},{"key":"bin","value_base64":"AAE="}]}`, 200, `"counter": {`},
		{"a failing compare is a 409 naming it", `{"conditions":[{"key":"counter","value":"1"}],"writes":[{"key":"counter","value":"9"}]}`, 409, `condition failed: \"counter\" equals the given value`},
		{"absent fails on an existing key", `{"conditions":[{"key":"bin","absent":true}],"deletes":["counter"]}`, 409, `"index": 0`},
		{"an unknown field is a 400", `{"conditons":[]}`, 400, "unknown field"},
		{"a condition with two tests is a 400", `{"conditions":[{"key":"x","absent":true,"exists":true}]}`, 400, "exactly one"},
		{"an empty transaction is a 400", `{}`, 400, "empty transaction"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := do(rt, call{method: "POST", url: "state.do/", body: tt.txn})
			b := body(resp)
			if resp.StatusCode != tt.wantStatus || !strings.Contains(b, tt.wantBody) {
				t.Fatalf("%d %s, want %d containing %s", resp.StatusCode, b, tt.wantStatus, tt.wantBody)
			}
		})
	}
	if got := body(do(rt, call{method: "GET", url: "state.do/counter"})); got != "2" {
		t.Errorf("counter = %q after one applied and two failed transactions", got)
	}
	if got := body(do(rt, call{method: "GET", url: "state.do/bin"})); got != "\x00\x01" {
		t.Errorf("binary value = %q", got)
	}
}

func TestBlobHandlerSemantics(t *testing.T) {
	rt := handlersRouter(t)
	content := "0123456789abcdefghijklmnopqrstuvwxyz" // crosses 16-byte chunks
	sum := md5.Sum([]byte(content))
	etag := `"` + hex.EncodeToString(sum[:]) + `"`
	goodMD5 := base64.StdEncoding.EncodeToString(sum[:])
	put := do(rt, call{method: "PUT", url: "my.r2/dir/file.txt", body: content, headers: map[string]string{
		"Content-Type": "text/plain", "Cache-Control": "max-age=60", "X-Meta-Owner": "alice", "Content-MD5": goodMD5,
	}})
	if put.StatusCode != 200 || put.Header.Get("ETag") != etag {
		t.Fatalf("PUT: %d %s etag %s", put.StatusCode, body(put), put.Header.Get("ETag"))
	}
	lastMod := do(rt, call{method: "HEAD", url: "my.r2/dir/file.txt"}).Header.Get("Last-Modified")
	steps := []step{
		{"GET returns the content and stored headers", call{method: "GET", url: "my.r2/dir/file.txt"}, 200, content,
			map[string]string{"ETag": etag, "Content-Type": "text/plain", "Cache-Control": "max-age=60", "X-Meta-Owner": "alice", "Content-Length": "36"}},
		{"HEAD has headers and no body", call{method: "HEAD", url: "my.r2/dir/file.txt"}, 200, "", map[string]string{"Content-Length": "36"}},
		{"a closed range", call{method: "GET", url: "my.r2/dir/file.txt", headers: map[string]string{"Range": "bytes=10-19"}}, 206, "abcdefghij", map[string]string{"Content-Range": "bytes 10-19/36"}},
		{"an open range", call{method: "GET", url: "my.r2/dir/file.txt", headers: map[string]string{"Range": "bytes=30-"}}, 206, "uvwxyz", map[string]string{"Content-Range": "bytes 30-35/36"}},
		{"a suffix range", call{method: "GET", url: "my.r2/dir/file.txt", headers: map[string]string{"Range": "bytes=-4"}}, 206, "wxyz", map[string]string{"Content-Range": "bytes 32-35/36"}},
		{"an unsatisfiable range is a 416", call{method: "GET", url: "my.r2/dir/file.txt", headers: map[string]string{"Range": "bytes=100-200"}}, 416, "range not satisfiable", map[string]string{"Content-Range": "bytes */36"}},
		{"If-None-Match with the etag is a 304", call{method: "GET", url: "my.r2/dir/file.txt", headers: map[string]string{"If-None-Match": etag}}, 304, "", nil},
		{"If-Match with another etag is a 412", call{method: "GET", url: "my.r2/dir/file.txt", headers: map[string]string{"If-Match": `"nope"`}}, 412, "precondition failed: If-Match", nil},
		{"If-Modified-Since the upload is a 304", call{method: "GET", url: "my.r2/dir/file.txt", headers: map[string]string{"If-Modified-Since": lastMod}}, 304, "", nil},
		{"If-Unmodified-Since long ago is a 412", call{method: "GET", url: "my.r2/dir/file.txt", headers: map[string]string{"If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}}, 412, "precondition failed: If-Unmodified-Since", nil},
		{"POST to a key uploads it, for clients that can only POST", call{method: "POST", url: "my.r2/posted", body: "by wget"}, 200, `"key": "posted"`, nil},
		{"and it reads back", call{method: "GET", url: "my.r2/posted"}, 200, "by wget", nil},
		{"and goes", call{method: "DELETE", url: "my.r2/posted"}, 204, "", nil},
		{"a wrong Content-MD5 rejects the upload", call{method: "PUT", url: "my.r2/bad", body: "abc", headers: map[string]string{"Content-MD5": goodMD5}}, 400, "does not match Content-MD5", nil},
		{"a malformed Content-MD5 is a 400", call{method: "PUT", url: "my.r2/bad", body: "abc", headers: map[string]string{"Content-MD5": "zz"}}, 400, "not a base64 MD5", nil},
		{"If-None-Match * on an existing object is a 412", call{method: "PUT", url: "my.r2/dir/file.txt", body: "x", headers: map[string]string{"If-None-Match": "*"}}, 412, "If-None-Match", nil},
		{"If-Match with a stale etag is a 412", call{method: "PUT", url: "my.r2/dir/file.txt", body: "x", headers: map[string]string{"If-Match": `"stale"`}}, 412, "If-Match", nil},
		{"an object over the size limit is a 413", call{method: "PUT", url: "my.r2/big", body: strings.Repeat("x", 1001)}, 413, "value too large", nil},
		{"listing folds a delimiter", call{method: "GET", url: "my.r2/?delimiter=/"}, 200, `"dir/"`, nil},
		{"a missing object is a 404", call{method: "GET", url: "my.r2/none"}, 404, "not found", nil},
		{"DELETE is 204", call{method: "DELETE", url: "my.r2/dir/file.txt"}, 204, "", nil},
		{"and the object is gone", call{method: "GET", url: "my.r2/dir/file.txt"}, 404, "not found", nil},
	}
	runSteps(t, rt, steps)
	var list struct {
		Objects []any `json:"objects"`
	}
	resp := do(rt, call{method: "GET", url: "my.r2/"})
	b := body(resp)
	if resp.StatusCode != 200 {
		t.Fatalf("listing after DELETE: %d %q", resp.StatusCode, b)
	}
	if err := json.Unmarshal([]byte(b), &list); err != nil {
		t.Fatalf("listing after DELETE is not JSON: %v: %q", err, b)
	}
	if list.Objects == nil || len(list.Objects) != 0 {
		t.Errorf("listing after DELETE = %q, want an empty objects array", b)
	}
}

// step is one request of a table test and what its answer must be.
type step struct {
	name       string
	c          call
	wantStatus int
	wantBody   string // a substring; "" means the body must be empty
	wantHeader map[string]string
}

func runSteps(t *testing.T, rt *router.Router, steps []step) {
	t.Helper()
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			resp := do(rt, s.c)
			b := body(resp)
			if s.wantBody == "" && (resp.StatusCode != s.wantStatus || b != "") {
				t.Fatalf("%d %q, want %d with an empty body", resp.StatusCode, b, s.wantStatus)
			}
			if resp.StatusCode != s.wantStatus || !strings.Contains(b, s.wantBody) {
				t.Fatalf("%d %q, want %d containing %q", resp.StatusCode, b, s.wantStatus, s.wantBody)
			}
			for k, v := range s.wantHeader {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestAKVAnswerCarriesItsValuesLengthOnBothSidesOfTheSharedTable(t *testing.T) {
	for _, n := range []int{0, 1, 511, 512, 100000} {
		if got := lengthField(n); len(got) != 1 || got[0] != strconv.Itoa(n) {
			t.Errorf("lengthField(%d) = %q", n, got)
		}
	}
}
