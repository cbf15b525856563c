package worker

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/interceptd/interceptd/store/backend"
	"github.com/interceptd/interceptd/store/s3store"
)

// An R2 binding over an S3 store that accepts connections and never
// answers: each call throws a JS error that says store_unavailable once the
// store's request timeout has passed, and the request does not hang into the
// worker's wall limit.
func TestAnR2BindingOverAnUnreachableS3StoreThrowsStoreUnavailable(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // open, never answered
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	}()
	s3, err := s3store.New(s3store.Options{Endpoint: silent.Addr().String(), Bucket: "blobs", Region: "us-east-1",
		PathStyle: true, Insecure: true, AccessKey: "a", SecretKey: "b", RequestTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	src := `export default { outboundByHost: {
  "r2.test": async (request, env) => {
    const op = new URL(request.url).pathname.slice(1);
    try {
      if (op === "put") await env.B.put("k", "v");
      if (op === "get") await env.B.get("k");
      if (op === "head") await env.B.head("k");
      if (op === "list") await env.B.list();
      if (op === "delete") await env.B.delete("k");
      return new Response("no error");
    } catch (e) {
      return new Response(String(e));
    }
  },
} };`
	w, err := New(Config{Name: "app", Script: writeScript(t, src),
		Bindings: map[string]Binding{"B": &R2{Store: backend.Compose(nil, s3, nil), Bucket: "default"}},
		Limits:   Limits{CPU: time.Second, Wall: 20 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{"put", "get", "head", "list", "delete"} {
		t.Run("a "+op, func(t *testing.T) {
			start := time.Now()
			rec := serve(t, w, "GET", "r2.test", "/"+op, "")
			took := time.Since(start)
			if body := rec.Body.String(); rec.Code != 200 || !strings.Contains(body, "store_unavailable") || !strings.Contains(body, "R2 ") {
				t.Errorf("%d %q; want a JS error naming R2 and store_unavailable", rec.Code, body)
			} else if strings.Contains(body, silent.Addr().String()) {
				t.Errorf("the script learns the store's address: %q (it belongs in the log)", body)
			}
			t.Logf("%s: %s", op, rec.Body)
			if took > 5*time.Second {
				t.Errorf("took %v with a 300ms store timeout", took)
			}
		})
	}
}
