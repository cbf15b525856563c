package e2e

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// seedConfig serves examples/workers/seed (the three examples and
// its credential injection) as the default worker, with its token in a
// credentials directory of the test's own.
func seedEnv(t *testing.T) *Env {
	t.Helper()
	seed, err := filepath.Abs("../examples/workers/seed/worker.js")
	if err != nil {
		t.Fatal(err)
	}
	creds := t.TempDir()
	os.WriteFile(filepath.Join(creds, "github_token"), []byte("e2e-token-31337"), 0o600)
	return NewEnv(t, Options{
		Env: []string{"CREDENTIALS_DIRECTORY=" + creds},
		ExtraConfig: fmt.Sprintf(`workers:
  - name: app
    script: %s
    bindings:
      KV: { kv: default }
      BUCKET: { blob: default }
      MY_CONTAINER: { durable_object: MyContainer }
      GITHUB_TOKEN: { secret: github_token }
      MODE: { var: production }
default_worker: app
`, seed),
	})
}

func TestTheSeedWorkersExamplesRunAsWrittenFromASandbox(t *testing.T) {
	e := seedEnv(t)
	if _, errOut, code := e.CLI("kv", "put", "greeting", "hello from kv"); code != 0 {
		t.Fatalf("kv put: %s", errOut)
	}
	file := filepath.Join(t.TempDir(), "o.txt")
	os.WriteFile(file, []byte("hello from r2"), 0o644)
	if _, errOut, code := e.CLI("blob", "put", "obj", file); code != 0 {
		t.Fatalf("blob put: %s", errOut)
	}
	sb := e.Create("agent1")
	curl := func(args ...string) string {
		out, _ := e.In(sb, append([]string{"curl", "-sS", "-m", "10", "-w", " %{http_code}"}, args...)...)
		return out
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"env.KV reads what `interceptd kv put` wrote", []string{"http://my.kv/greeting"}, "hello from kv 200"},
		{"an absent key is a 404", []string{"http://my.kv/absent"}, " 404"},
		{"env.BUCKET streams the object `interceptd blob put` stored", []string{"http://my.r2/obj"}, "hello from r2 200"},
		{"the sandbox's own Durable Object has no state yet", []string{"--data", "color", "http://get-state.do/"}, "null 200"},
		{"outbound refuses .internal names", []string{"-H", "Host: db.internal", "http://" + upstreamIP + "/"}, "no 403"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := curl(tt.args...); got != tt.want {
				t.Errorf("curl %v: %q, want %q", tt.args, got, tt.want)
			}
		})
	}
	t.Run("outbound's fetch(request) goes on to the original destination", func(t *testing.T) {
		got := curl("http://example.test/path?q=1")
		if !strings.HasSuffix(got, " 200") || !strings.Contains(got, `"URI":"/path?q=1"`) || !strings.Contains(got, `"Host":"example.test"`) {
			t.Errorf("got %q", got)
		}
	})
	t.Run("api.github.com gets the token, which the sandbox never sees", func(t *testing.T) {
		got := curl("http://api.github.com/user")
		var echo struct{ Header map[string][]string }
		json.Unmarshal([]byte(strings.TrimSuffix(got, " 200")), &echo)
		// The upstream echoes what it got: an Authorization the sandbox
		// never sent, whose value the worker's scrubber masked on the way
		// back (the unit tests hold the value the upstream receives).
		if a := echo.Header["Authorization"]; len(a) != 1 || !strings.HasPrefix(a[0], "Bearer ") {
			t.Errorf("the upstream saw Authorization %q (response %q)", a, got)
		}
		if strings.Contains(got, "e2e-token-31337") {
			t.Errorf("the token reached the sandbox: %q", got)
		}
	})
	t.Run("the worker's names resolve to virtual addresses in the sandbox", func(t *testing.T) {
		for _, name := range []string{"my.kv", "get-state.do", "api.github.com"} {
			got := strings.TrimSpace(e.MustIn(sb, "dig", "+short", "+time=2", "+tries=1", name))
			if !strings.HasPrefix(got, "198.18.") {
				t.Errorf("dig %s: %q, want a virtual address", name, got)
			}
		}
	})
	if m := e.Scrape(); !strings.Contains(m, `interceptd_worker_invocations_total{function="my.kv",outcome="ok",worker="app"}`) {
		t.Errorf("no worker invocation series in the metrics")
	}
}

// stressScript has the functions the limits and reload tests need.
const stressScript = `export default {
  outboundByHost: {
    "loop.w": () => { for (;;) {} },
    "throw.w": () => { throw new Error("stack-secret-" + "xyzzy"); },
    "slow.w": async () => { await new Promise((r) => setTimeout(r, 300)); return new Response("VERSION"); },
    "fast.w": () => new Response("VERSION"),
    "count.w": async (request, env, ctx) => {
      const stub = env.C.get(env.C.idFromString(ctx.containerId));
      return new Response(String(await stub.inc()));
    },
    "shared.w": async (request, env) => new Response(String(await env.C.getByName("shared").inc())),
    "sql.w": async (request, env, ctx) => {
      const stub = env.C.get(env.C.idFromName("sql"));
      return Response.json(await stub.sql(await request.text()));
    },
  },
};
export class Counter {
  constructor(state) { this.state = state; }
  async inc() {
    const n = (await this.state.storage.get("n")) ?? 0;
    await new Promise((r) => setTimeout(r, 2));
    await this.state.storage.put("n", n + 1);
    return n + 1;
  }
  sql(name) {
    const s = this.state.storage.sql;
    s.exec("CREATE TABLE IF NOT EXISTS t (name TEXT)");
    s.exec("INSERT INTO t VALUES (?)", name);
    return s.exec("SELECT name FROM t ORDER BY rowid").toArray().map((r) => r.name);
  }
}
`

func TestAWorkersLimitsReloadsAndDurableObjectsFromRealSandboxes(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "stress.js")
	os.WriteFile(script, []byte(strings.ReplaceAll(stressScript, "VERSION", "v1")), 0o644)
	e := NewEnv(t, Options{ExtraConfig: fmt.Sprintf(`workers:
  - name: stress
    script: %s
    bindings:
      C: { durable_object: Counter }
    limits: { cpu_ms: 50 }
default_worker: stress
`, script)})
	a, b := e.Create("w1"), e.Create("w2")
	curl := func(sb Sandbox, args ...string) string {
		out, _ := e.In(sb, append([]string{"curl", "-sS", "-m", "20", "-D", "-", "-w", " %{http_code}"}, args...)...)
		return out
	}
	t.Run("an infinite loop is a 503 worker_cpu_limit and the others are served meanwhile", func(t *testing.T) {
		var wg sync.WaitGroup
		wg.Add(1)
		var loop string
		go func() { defer wg.Done(); loop = curl(a, "http://loop.w/") }()
		for range 5 {
			if got := curl(b, "http://fast.w/"); !strings.HasSuffix(got, "v1 200") {
				t.Errorf("another sandbox during the loop: %q", got)
			}
		}
		wg.Wait()
		if !strings.HasSuffix(loop, " 503") || !strings.Contains(loop, "X-Interceptd-Error: worker_cpu_limit") {
			t.Errorf("the loop: %q", loop)
		}
	})
	t.Run("an exception is a 500 worker_exception without its stack", func(t *testing.T) {
		got := curl(a, "http://throw.w/")
		if !strings.HasSuffix(got, " 500") || !strings.Contains(got, "worker_exception") || strings.Contains(got, "xyzzy") {
			t.Errorf("got %q", got)
		}
		if !strings.Contains(e.Log(), "stack-secret-xyzzy") {
			t.Errorf("the exception is not in the daemon's log")
		}
	})
	t.Run("concurrent increments from two sandboxes lose none, and each sandbox has its own object", func(t *testing.T) {
		var wg sync.WaitGroup
		for _, sb := range []Sandbox{a, b} {
			for range 10 {
				wg.Add(2)
				for _, u := range []string{"http://count.w/", "http://shared.w/"} {
					go func() {
						defer wg.Done()
						if got := curl(sb, u); !strings.HasSuffix(got, " 200") {
							t.Errorf("%s from %s: %q", u, sb.Name, got)
						}
					}()
				}
			}
		}
		wg.Wait()
		for _, sb := range []Sandbox{a, b} {
			if got := curl(sb, "-o", "/dev/null", "http://count.w/"); !strings.HasSuffix(got, " 200") {
				t.Fatalf("count: %q", got)
			}
		}
		if got := e.MustIn(a, "curl", "-sS", "http://count.w/"); got != "12" {
			t.Errorf("w1's counter: %q, want 12", got)
		}
		if got := e.MustIn(b, "curl", "-sS", "http://shared.w/"); got != "21" {
			t.Errorf("the shared counter: %q, want 21", got)
		}
	})
	t.Run("SQL through a Durable Object", func(t *testing.T) {
		e.MustIn(a, "curl", "-sS", "--data", "x", "http://sql.w/")
		if got := e.MustIn(b, "curl", "-sS", "--data", "y", "http://sql.w/"); got != `["x","y"]` {
			t.Errorf("got %q", got)
		}
	})
	t.Run("a reload while requests are in flight fails none, and a bad script keeps the old one", func(t *testing.T) {
		var wg sync.WaitGroup
		results := make(chan string, 20)
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sb := a
				if i%2 == 1 {
					sb = b
				}
				results <- curl(sb, "http://slow.w/")
			}()
		}
		time.Sleep(100 * time.Millisecond)
		os.WriteFile(script, []byte(strings.ReplaceAll(stressScript, "VERSION", "v2")), 0o644)
		if out, errOut, code := e.CLI("worker", "reload", "stress"); code != 0 {
			t.Fatalf("reload: %s %s", out, errOut)
		}
		wg.Wait()
		close(results)
		for r := range results {
			if !strings.HasSuffix(r, "v1 200") && !strings.HasSuffix(r, "v2 200") {
				t.Errorf("a request in flight during the reload: %q", r)
			}
		}
		if got := e.MustIn(a, "curl", "-sS", "http://fast.w/"); got != "v2" {
			t.Errorf("after the reload: %q", got)
		}
		os.WriteFile(script, []byte("export default { outboundByHost: { \"fast.w\": ( => 1 } }"), 0o644)
		_, errOut, code := e.CLI("worker", "reload", "stress")
		if code == 0 || !strings.Contains(errOut, "stress.js:1:") {
			t.Errorf("reloading a bad script: exit %d %q, want an error naming the file and line", code, errOut)
		}
		if got := e.MustIn(a, "curl", "-sS", "http://fast.w/"); got != "v2" {
			t.Errorf("after the failed reload: %q, want the old version", got)
		}
	})
	t.Run("sandbox delete --purge removes the sandbox's own Durable Object, and no one else's", func(t *testing.T) {
		if _, errOut, code := e.CLI("sandbox", "delete", "--purge", "w1"); code != 0 {
			t.Fatalf("delete --purge: %s", errOut)
		}
		a2 := e.Create("w1")
		if got := e.MustIn(a2, "curl", "-sS", "http://count.w/"); got != "1" {
			t.Errorf("a new w1's counter: %q, want 1 (the old one's object purged)", got)
		}
		if got := e.MustIn(b, "curl", "-sS", "http://count.w/"); got != "12" {
			t.Errorf("w2's counter after w1's purge: %q, want 12", got)
		}
	})
}

func TestAWorkerInjectsACredentialIntoHTTPSItsCAVerifies(t *testing.T) {
	cert, caFile := testCA(t, "api.test")
	dir := t.TempDir()
	script := filepath.Join(dir, "inject.js")
	os.WriteFile(script, []byte(`export default { outboundByHost: {
  "gh.test": (request, env) => {
    const url = new URL(request.url);
    const r = new Request("https://api.test:8443" + url.pathname, request);
    r.headers.set("Authorization", "Bearer " + env.TOKEN);
    return fetch(r);
  },
} };`), 0o644)
	token := filepath.Join(dir, "token")
	os.WriteFile(token, []byte("tls-token-4242"), 0o600)
	e := NewEnv(t, Options{ExtraConfig: fmt.Sprintf(`workers:
  - name: inject
    script: %s
    ca_file: %s
    bindings:
      TOKEN: { secret: %s }
default_worker: inject
`, script, caFile, token)})
	ln := e.ListenIn("/run/netns/"+e.UpNS, upstreamIP+":8443")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tls-token-4242" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "authorized for %s over %s", r.URL.Path, r.Proto)
	}), TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	sb := e.Create("agent1")
	got := e.MustIn(sb, "curl", "-sS", "-m", "10", "-w", " %{http_code}", "http://gh.test/user")
	if !strings.HasPrefix(got, "authorized for /user over HTTP/") || !strings.HasSuffix(got, " 200") {
		t.Errorf("got %q", got)
	}
	if strings.Contains(got, "tls-token") {
		t.Errorf("the token reached the sandbox: %q", got)
	}
}

func TestAScriptThatAllocatesWithoutEndCostsARequestNotTheDaemon(t *testing.T) {
	script := filepath.Join(t.TempDir(), "hog.js")
	os.WriteFile(script, []byte(`export default { outboundByHost: {
  "hog.w": () => { const a = []; for (;;) a.push("x".repeat(4096) + a.length); },
  "ok.w": () => new Response("fine"),
} };`), 0o644)
	e := NewEnv(t, Options{ExtraConfig: fmt.Sprintf(`workers:
  - name: hog
    script: %s
    limits: { cpu_ms: 20000, wall_ms: 30000 }
default_worker: hog
worker_heap_limit: 256MiB
`, script)})
	sb := e.Create("agent1")
	got, _ := e.In(sb, "curl", "-sS", "-m", "30", "-D", "-", "-o", "/dev/null", "http://hog.w/")
	if !strings.Contains(got, "503") || !strings.Contains(got, "X-Interceptd-Error: worker_memory_limit") {
		t.Errorf("the hog: %q", got)
	}
	if got := e.MustIn(sb, "curl", "-sS", "-m", "10", "http://ok.w/"); got != "fine" {
		t.Errorf("after the hog: %q", got)
	}
}
