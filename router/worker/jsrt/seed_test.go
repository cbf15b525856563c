package jsrt

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/dop251/goja"
)

// seedScript is the issue's seed script as examples/workers/seed holds it,
// run here over stand-in bindings: the language features and Web APIs it
// uses must work in one runtime.
func seedScript(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("../../../examples/workers/seed/worker.js")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTheIssuesSeedScriptRuns(t *testing.T) {
	var auth string
	rt := New(Options{Fetch: func(ctx context.Context, req *http.Request) (*http.Response, error) {
		auth = req.Header.Get("Authorization")
		return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader("upstream " + req.Host))}, nil
	}})
	p, err := Compile("worker.js", seedScript(t))
	if err != nil {
		t.Fatal(err)
	}
	ex, err := rt.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	vm := rt.VM()
	// Stand-ins for router/worker's bindings, made with Async and NewStream as it will.
	kv := map[string]string{"hot": "value"}
	blobs := map[string]string{"obj": "blob bytes"}
	env := vm.NewObject()
	kvObj, bucket := vm.NewObject(), vm.NewObject()
	kvObj.Set("get", func(key string) goja.Value {
		return rt.Async(func() (func() goja.Value, error) {
			v, ok := kv[key]
			return func() goja.Value {
				if !ok {
					return goja.Null()
				}
				return vm.ToValue(v)
			}, nil
		})
	})
	bucket.Set("get", func(key string) goja.Value {
		return rt.Async(func() (func() goja.Value, error) {
			v, ok := blobs[key]
			return func() goja.Value {
				if !ok {
					return goja.Null()
				}
				o := vm.NewObject()
				o.Set("body", rt.NewStream(io.NopCloser(strings.NewReader(v))))
				return o
			}, nil
		})
	})
	env.Set("KV", kvObj)
	env.Set("BUCKET", bucket)
	env.Set("GITHUB_TOKEN", "t0ken")
	do, err := vm.RunString(`(cls) => ({ idFromString: (s) => s, get(id) {
  const store = new Map([["k", {n: id}]]); return new cls({ storage: { get: async (k) => structuredClone(store.get(k)) } }, {}) } })`)
	if err != nil {
		t.Fatal(err)
	}
	mk, _ := goja.AssertFunction(do)
	ns, _ := mk(goja.Undefined(), ex.Named["MyContainer"])
	env.Set("MY_CONTAINER", ns)
	ctxObj := vm.NewObject()
	ctxObj.Set("containerId", "web1")

	byHost := ex.Default.ToObject(vm).Get("outboundByHost").ToObject(vm)
	cases := []struct {
		fn, method, url, body string
		status                int
		want                  string
	}{
		{"outbound", "GET", "http://db.internal/x", "", 403, "no"},
		{"outbound", "GET", "http://example.com/x", "", 200, "upstream example.com"},
		{"my.kv", "GET", "http://my.kv/hot", "", 200, "value"},
		{"my.kv", "GET", "http://my.kv/cold", "", 404, ""},
		{"my.r2", "GET", "http://my.r2/obj", "", 200, "blob bytes"},
		{"my.r2", "GET", "http://my.r2/none", "", 404, ""},
		{"get-state.do", "POST", "http://get-state.do/", "k", 200, `{"n":"web1"}`},
		{"get-state.do", "POST", "http://get-state.do/", "other", 200, `null`},
		{"api.github.com", "GET", "https://api.github.com/user", "", 200, "upstream api.github.com"},
	}
	for _, c := range cases {
		t.Run(c.fn+" "+c.url, func(t *testing.T) {
			fn := byHost.Get(c.fn)
			if c.fn == "outbound" {
				fn = ex.Default.ToObject(vm).Get("outbound")
			}
			var body io.Reader
			if c.body != "" {
				body = strings.NewReader(c.body)
			}
			r := httptest.NewRequest(c.method, c.url, body)
			req, err := rt.NewRequest(r, c.url)
			if err != nil {
				t.Fatal(err)
			}
			v, err := rt.Call(context.Background(), fn, req, env, ctxObj)
			if err != nil {
				t.Fatal(err)
			}
			res, err := rt.ToResponse(v)
			if err != nil {
				t.Fatal(err)
			}
			if got := bodyOrEmpty(t, res.Body); res.Status != c.status || got != c.want {
				t.Errorf("got %d %q, want %d %q", res.Status, got, c.status, c.want)
			}
		})
	}
	if auth != "Bearer t0ken" {
		t.Errorf("credential injection sent Authorization %q", auth)
	}
}

func bodyOrEmpty(t *testing.T, r io.Reader) string {
	if r == nil {
		return ""
	}
	return body(t, r)
}
