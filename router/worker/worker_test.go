package worker

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/routertest"
)

const script = `
export default {
  async outbound(request, env, ctx) {
    return new Response("outbound " + new URL(request.url).hostname + " for " + ctx.containerId + " mode=" + env.MODE);
  },
  outboundByHost: {
    "my.test": async (request, env, ctx) => {
      const body = await request.text();
      return Response.json({ method: request.method, path: new URL(request.url).pathname, body, who: ctx.containerId },
        { status: 201, headers: { "x-worker": "yes" } });
    },
    "loop.test": () => { for (;;) {} },
    "throw.test": () => { throw new Error("secret-ish detail " + "abc"); },
    "pass.test": (request, env, ctx) => { ctx.passThroughOnException(); throw new Error("x"); },
    "*.glob.test": () => new Response("glob"),
    "fetch.test": async (request, env) => {
      const r = await fetch(env.UPSTREAM + "/up", { method: "POST", body: "hello" });
      return new Response("upstream said " + (await r.text()), { status: r.status });
    },
    "later.test": (request, env, ctx) => {
      ctx.waitUntil(new Promise((resolve) => setTimeout(() => { globalThis.later = (globalThis.later || 0) + 1; resolve(); }, 10)));
      return new Response("now");
    },
    "count.test": () => new Response(String(globalThis.later || 0)),
  },
};
`

func writeScript(t *testing.T, src string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "w.js")
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func newTestWorker(t *testing.T, src string, f *Fetcher) *Worker {
	t.Helper()
	w, err := New(Config{Name: "app", Script: writeScript(t, src), Bindings: map[string]Binding{"MODE": Var("test"), "UPSTREAM": Var("")},
		Limits: Limits{CPU: 50 * time.Millisecond, Wall: 5 * time.Second, Runtimes: 2}, Fetch: f})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// serve runs a request for host through the worker's route for it, as the
// router would.
func serve(t *testing.T, w *Worker, method, host, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	route, ok := w.Match(host, netip.MustParseAddrPort("198.18.213.9:80"))
	if !ok {
		if route, ok = w.Outbound(); !ok {
			t.Fatalf("no function for %s", host)
		}
	}
	r := httptest.NewRequest(method, "http://"+host+path, strings.NewReader(body))
	rec := httptest.NewRecorder()
	routertest.AsRouter(route.Handler, rec, r, router.Env{Sandbox: "web1", Host: host, RequestID: "rid1",
		Dest: netip.MustParseAddrPort("198.18.213.9:80")})
	return rec
}

func TestAWorkersFunctionsAnswerForTheirHosts(t *testing.T) {
	w := newTestWorker(t, script, nil)
	tests := []struct {
		name, host, method, body string
		code                     int
		want, reason             string
	}{
		{"a per-host function gets the request and the sandbox's name", "my.test", "PUT", "data", 201, `"who":"web1"`, ""},
		{"a glob key matches a name under it", "a.glob.test", "GET", "", 200, "glob", ""},
		{"outbound takes the rest, with env", "other.test", "GET", "", 200, "outbound other.test for web1 mode=test", ""},
		{"an infinite loop is cut at the CPU limit", "loop.test", "GET", "", 503, "", ReasonCPULimit},
		{"after which the worker still serves", "my.test", "GET", "", 201, `"method":"GET"`, ""},
		{"an exception is a 500 without its message", "throw.test", "GET", "", 500, "", ReasonException},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := serve(t, w, tt.method, tt.host, "/p", tt.body)
			if rec.Code != tt.code || !strings.Contains(rec.Body.String(), tt.want) || rec.Header().Get("X-Interceptd-Error") != tt.reason {
				t.Fatalf("%d %q (reason %q), want %d containing %q (reason %q)", rec.Code, rec.Body, rec.Header().Get("X-Interceptd-Error"), tt.code, tt.want, tt.reason)
			}
			if strings.Contains(rec.Body.String(), "secret-ish") {
				t.Fatalf("the exception's message reached the sandbox: %q", rec.Body)
			}
		})
	}
}

func TestFetchGoesToTheNetworkButNeverToAClosedDestination(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, r.Method+" "+r.URL.Path+" "+string(b))
	}))
	defer up.Close()
	src := strings.Replace(script, `env.UPSTREAM + "/up"`, `"`+up.URL+`/up"`, 1)
	open := newTestWorker(t, src, &Fetcher{Closed: func(netip.Addr) string { return "" }})
	if rec := serve(t, open, "GET", "fetch.test", "/", ""); rec.Code != 200 || rec.Body.String() != "upstream said POST /up hello" {
		t.Fatalf("open: %d %q", rec.Code, rec.Body)
	}
	closed := newTestWorker(t, src, &Fetcher{Closed: func(a netip.Addr) string {
		if a.IsLoopback() {
			return "loopback"
		}
		return ""
	}})
	if rec := serve(t, closed, "GET", "fetch.test", "/", ""); rec.Code != 500 || rec.Header().Get("X-Interceptd-Error") != ReasonException {
		t.Fatalf("closed: %d %q, want the fetch to fail", rec.Code, rec.Body)
	}
}

func TestWaitUntilRunsAfterTheResponse(t *testing.T) {
	w := newTestWorker(t, script, nil)
	if rec := serve(t, w, "GET", "later.test", "/", ""); rec.Body.String() != "now" {
		t.Fatalf("got %q", rec.Body)
	}
	// One runtime serves both in turn: the first request's waitUntil work
	// finished before its runtime came back.
	w2 := newTestWorker(t, script, nil)
	w2.cfg.Limits.Runtimes = 1
	serve(t, w2, "GET", "later.test", "/", "")
	if rec := serve(t, w2, "GET", "count.test", "/", ""); rec.Body.String() == "0" {
		t.Errorf("waitUntil's promise had not run when the runtime was reused")
	}
}

func TestAReloadThatFailsKeepsTheOldScript(t *testing.T) {
	w := newTestWorker(t, script, nil)
	if err := os.WriteFile(w.cfg.Script, []byte("export default { outbound( {"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := w.Reload()
	if err == nil || !strings.Contains(err.Error(), "w.js:") {
		t.Fatalf("reload of a broken script: %v, want an error naming the file and line", err)
	}
	if rec := serve(t, w, "GET", "my.test", "/", ""); rec.Code != 201 {
		t.Fatalf("after the failed reload: %d", rec.Code)
	}
	os.WriteFile(w.cfg.Script, []byte(`export default { outbound() { return new Response("v2") } }`), 0o644)
	if err := w.Reload(); err != nil {
		t.Fatal(err)
	}
	if rec := serve(t, w, "GET", "x.test", "/", ""); rec.Body.String() != "v2" {
		t.Fatalf("after the reload: %q", rec.Body)
	}
	if _, ok := w.Match("my.test", netip.AddrPort{}); ok {
		t.Errorf("the old script's host is still matched")
	}
}

type fixedSecret string

func (s fixedSecret) Value(router.Env) ([]byte, error) { return []byte(s), nil }

func TestAWorkersSecretsNeverReachTheSandbox(t *testing.T) {
	src := `export default { outboundByHost: {
  "echo.test": (request, env) => new Response("token=" + env.TOKEN + " b64=" + btoa(env.TOKEN), { headers: { "x-token": env.TOKEN } }),
} };`
	w, err := New(Config{Name: "app", Script: writeScript(t, src), Bindings: map[string]Binding{"TOKEN": Secret{fixedSecret("s3cr3t-t0ken-value")}}})
	if err != nil {
		t.Fatal(err)
	}
	rec := serve(t, w, "GET", "echo.test", "/", "")
	if strings.Contains(rec.Body.String(), "s3cr3t") || strings.Contains(rec.Body.String(), "czNjcjN0") || strings.Contains(rec.Header().Get("X-Token"), "s3cr3t") {
		t.Fatalf("the secret reached the sandbox: %v %q", rec.Header(), rec.Body)
	}
	if !strings.Contains(rec.Body.String(), "token=") {
		t.Fatalf("the rest of the body is gone: %q", rec.Body)
	}
}

func TestCredentialInjectionSendsTheSecretUpstream(t *testing.T) {
	var got string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Get("Authorization")
		io.WriteString(w, "you sent "+got)
	}))
	defer up.Close()
	src := `export default { outboundByHost: { "api.test": (request, env) => {
  const r = new Request("` + up.URL + `/user", request); r.headers.set("Authorization", "Bearer " + env.TOKEN); return fetch(r);
} } };`
	w, err := New(Config{Name: "app", Script: writeScript(t, src), Bindings: map[string]Binding{"TOKEN": Secret{fixedSecret("tok-12345678")}},
		Fetch: &Fetcher{Closed: func(netip.Addr) string { return "" }}})
	if err != nil {
		t.Fatal(err)
	}
	rec := serve(t, w, "GET", "api.test", "/", "")
	if got != "Bearer tok-12345678" {
		t.Errorf("the upstream got Authorization %q", got)
	}
	if strings.Contains(rec.Body.String(), "tok-12345678") || !strings.HasPrefix(rec.Body.String(), "you sent Bearer ") {
		t.Errorf("the sandbox got %q", rec.Body)
	}
}

func TestPassThroughOnExceptionForwardsAsIfNoHandlerMatched(t *testing.T) {
	forwarded := false
	f := &Fetcher{
		Closed: func(netip.Addr) string { return "" },
		Forward: router.HandlerFunc(func(w http.ResponseWriter, r *http.Request, env router.Env) error {
			forwarded = true
			io.WriteString(w, "forwarded to "+env.Dest.String())
			return nil
		}),
	}
	w := newTestWorker(t, script, f)
	rec := serve(t, w, "GET", "pass.test", "/", "")
	if !forwarded || rec.Code != 200 || rec.Body.String() != "forwarded to 198.18.213.9:80" {
		t.Fatalf("%d %q, forwarded %v", rec.Code, rec.Body, forwarded)
	}
	f.Origin = func(router.Env, string) string { return "host_mismatch: no" }
	forwarded = false
	if rec := serve(t, w, "GET", "pass.test", "/", ""); forwarded || rec.Code != http.StatusForbidden {
		t.Fatalf("a forward the policy refuses: %d %q, forwarded %v", rec.Code, rec.Body, forwarded)
	}
}

func TestFetchFollowsRedirectsButNeverIntoAClosedDestination(t *testing.T) {
	// The target listens on 127.0.0.2, the hop on 127.0.0.1: a Closed that
	// refuses 127.0.0.2 lets the first hop through and stops the redirect.
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skip("no 127.0.0.2 here")
	}
	final := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "arrived") })}
	go final.Serve(ln)
	defer final.Close()
	hop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://"+ln.Addr().String()+"/end", http.StatusFound)
	}))
	defer hop.Close()
	src := `export default { outboundByHost: { "r.test": async (request) => {
  const mode = new URL(request.url).pathname.slice(1) || undefined;
  try {
    const r = await fetch("` + hop.URL + `/start", { redirect: mode });
    return new Response(r.status + " " + (r.status >= 300 && r.status < 400 ? new URL(r.headers.get("location"), "` + hop.URL + `").pathname : await r.text()));
  }
  catch (e) { return new Response(e.message.includes("redirect mode") ? "redirect refused" : "refused", { status: 502 }); }
} } };`
	open := func(netip.Addr) string { return "" }
	tests := []struct {
		name   string
		closed func(netip.Addr) string
		path   string
		want   string
	}{
		{"a redirect is followed", open, "/", "200 arrived"},
		{"redirect: manual gives the script the 3xx", open, "/manual", "302 /end"},
		{"redirect: error fails the fetch on a 3xx", open, "/error", "redirect refused"},
		{"redirect: follow is the default", open, "/follow", "200 arrived"},
		{"a redirect into a closed destination is not", func(a netip.Addr) string {
			if a == netip.MustParseAddr("127.0.0.2") {
				return "closed"
			}
			return ""
		}, "/", "refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := New(Config{Name: "app", Script: writeScript(t, src), Fetch: &Fetcher{Closed: tt.closed}})
			if err != nil {
				t.Fatal(err)
			}
			if rec := serve(t, w, "GET", "r.test", tt.path, ""); rec.Body.String() != tt.want {
				t.Errorf("got %q, want %q", rec.Body, tt.want)
			}
		})
	}
}

func TestACtxKeptPastItsRequestActsForThatRequestOnly(t *testing.T) {
	// One runtime serves both sandboxes in turn, so a ctx a script keeps in
	// a global is there when the next sandbox's request runs.
	src := `let kept;
export default { outboundByHost: {
  "keep.test": (request, env, ctx) => { kept = ctx; return new Response(ctx.containerId); },
  "use.test": (request, env, ctx) => {
    kept.passThroughOnException();
    kept.waitUntil(Promise.reject(new Error("not this request's")));
    if (new URL(request.url).pathname === "/throw") throw new Error("boom");
    return new Response([kept.containerId, ctx.containerId, Object.prototype.toString.call(ctx)].join(" "));
  },
} };`
	w, err := New(Config{Name: "app", Script: writeScript(t, src), Limits: Limits{CPU: time.Second, Wall: 5 * time.Second, Runtimes: 1},
		Fetch: &Fetcher{}})
	if err != nil {
		t.Fatal(err)
	}
	if got := serveAs(t, w, "alice", "keep.test", ""); got != "alice" {
		t.Fatalf("keep.test answered %q", got)
	}
	if got := serveAs(t, w, "mallory", "use.test", ""); got != "alice mallory [object ExecutionContext]" {
		t.Errorf("use.test answered %q, want the kept ctx to still name alice", got)
	}
	// The kept ctx's passThroughOnException is alice's, long over: mallory's
	// exception is answered as an exception, not passed through.
	route, _ := w.Match("use.test", netip.MustParseAddrPort("198.18.213.9:80"))
	rec := httptest.NewRecorder()
	routertest.AsRouter(route.Handler, rec, httptest.NewRequest("GET", "http://use.test/throw", nil), router.Env{Sandbox: "mallory", Host: "use.test", RequestID: "r"})
	if rec.Code != 500 || rec.Header().Get("X-Interceptd-Error") != ReasonException {
		t.Errorf("a stale ctx made the request pass through: %d %q", rec.Code, rec.Header().Get("X-Interceptd-Error"))
	}
}
