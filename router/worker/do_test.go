package worker

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/routertest"
	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
)

const doScript = `
export default { outboundByHost: {
  "get-state.do": async (request, env, ctx) => {
    const stub = env.MY_CONTAINER.get(env.MY_CONTAINER.idFromString(ctx.containerId));
    return new Response(JSON.stringify(await stub.getStateForKey(await request.text())));
  },
  "put-state.do": async (request, env, ctx) => {
    const stub = env.MY_CONTAINER.get(env.MY_CONTAINER.idFromString(ctx.containerId));
    const [k, v] = (await request.text()).split("=");
    await stub.setState(k, v);
    return new Response("ok");
  },
  "count.do": async (request, env, ctx) => {
    const stub = env.MY_CONTAINER.get(env.MY_CONTAINER.idFromString(ctx.containerId));
    return new Response(String(await stub.increment()));
  },
  "shared.do": async (request, env) => new Response(String(await env.MY_CONTAINER.getByName("shared").increment())),
  "sql.do": async (request, env, ctx) => {
    const stub = env.MY_CONTAINER.get(env.MY_CONTAINER.idFromString(ctx.containerId));
    return Response.json(await stub.sql(await request.text()));
  },
  "kinds.do": async (request, env) => Response.json(await env.MY_CONTAINER.getByName("k").kinds()),
  "fetch.do": async (request, env) => env.MY_CONTAINER.getByName("f").fetch(request),
} };

export class MyContainer {
  constructor(state, env) { this.state = state; }
  async getStateForKey(key) { return await this.state.storage.get(key) ?? null; }
  async setState(key, value) { await this.state.storage.put(key, value); }
  async increment() {
    const n = (await this.state.storage.get("n")) ?? 0;
    await new Promise((r) => setTimeout(r, 1)); // a yield inside the read-modify-write
    await this.state.storage.put("n", n + 1);
    return n + 1;
  }
  sql(name) {
    const sql = this.state.storage.sql;
    sql.exec("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, name TEXT)");
    const w = sql.exec("INSERT INTO t (name) VALUES (?)", name).rowsWritten;
    const rows = sql.exec("SELECT name FROM t ORDER BY id").toArray().map((r) => r.name);
    return { w, rows, count: sql.exec("SELECT count(*) AS c FROM t").one().c };
  }
  async kinds() {
    const s = this.state.storage;
    await s.put({ d: new Date(5), m: new Map([[1, "a"]]), u8: new Uint8Array([1, 2]), big: 10n, nan: NaN, o: { $: 1 } });
    const got = await s.get(["d", "m", "u8", "big", "nan", "o", "absent"]);
    const out = [got.get("d") instanceof Date && got.get("d").getTime(), got.get("m").get(1), got.get("u8")[1],
      typeof got.get("big"), Number.isNaN(got.get("nan")), got.get("o").$, got.has("absent")];
    await s.transaction(async (txn) => { await txn.put("t1", 1); out.push(await txn.get("t1")); txn.rollback(); });
    out.push(await s.get("t1"));
    const l = await s.list({ prefix: "n", limit: 5 });
    out.push([...l.keys()].join(","));
    out.push(await s.delete("d"), await s.delete(["m", "absent"]));
    return out;
  }
  async fetch(request) { return new Response("object saw " + new URL(request.url).hostname); }
}
`

func newDOWorker(t *testing.T, runtimes int) (*Worker, *store.DB) {
	t.Helper()
	db, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	w, err := New(Config{Name: "app", Script: writeScript(t, doScript),
		Bindings: map[string]Binding{"MY_CONTAINER": &DurableObject{Store: backend.Bolt(db), Class: "MyContainer"}},
		Limits:   Limits{CPU: time.Second, Wall: 10 * time.Second, Runtimes: runtimes}})
	if err != nil {
		t.Fatal(err)
	}
	return w, db
}

func serveAs(t *testing.T, w *Worker, sandbox, host, body string) string {
	t.Helper()
	route, ok := w.Match(host, netip.AddrPort{})
	if !ok {
		t.Fatalf("no function for %s", host)
	}
	rec := httptest.NewRecorder()
	routertest.AsRouter(route.Handler, rec, httptest.NewRequest("POST", "http://"+host+"/", strings.NewReader(body)),
		router.Env{Sandbox: sandbox, Host: host, RequestID: "r"})
	if rec.Code != http.StatusOK {
		t.Errorf("%s as %s: %d %s", host, sandbox, rec.Code, rec.Body)
	}
	return rec.Body.String()
}

func TestADurableObjectKeepsEachSandboxsStateAndRunsOneCallAtATime(t *testing.T) {
	w, db := newDOWorker(t, 4)
	serveAs(t, w, "web1", "put-state.do", "color=blue")
	if got := serveAs(t, w, "web1", "get-state.do", "color"); got != `"blue"` {
		t.Errorf("web1 reads %s", got)
	}
	if got := serveAs(t, w, "web2", "get-state.do", "color"); got != "null" {
		t.Errorf("web2 reads web1's state: %s", got)
	}
	// Concurrent increments from two sandboxes on four runtimes: none lost.
	var wg sync.WaitGroup
	for _, sb := range []string{"web1", "web2"} {
		for range 20 {
			wg.Add(2)
			go func() { defer wg.Done(); serveAs(t, w, sb, "count.do", "") }()
			go func() { defer wg.Done(); serveAs(t, w, sb, "shared.do", "") }()
		}
	}
	wg.Wait()
	for _, sb := range []string{"web1", "web2"} {
		if got := serveAs(t, w, sb, "count.do", ""); got != "21" {
			t.Errorf("%s's counter after 20 concurrent increments and one more: %s, want 21", sb, got)
		}
	}
	if got := serveAs(t, w, "web1", "shared.do", ""); got != "41" {
		t.Errorf("the shared counter after 40 concurrent increments and one more: %s, want 41", got)
	}
	// Purging web1 removes its object, and only its.
	if err := db.Purge("web1"); err != nil {
		t.Fatal(err)
	}
	if got := serveAs(t, w, "web1", "get-state.do", "color"); got != "null" {
		t.Errorf("after the purge web1 reads %s", got)
	}
	if got := serveAs(t, w, "web2", "count.do", ""); got != "22" {
		t.Errorf("web2's counter after web1's purge: %s", got)
	}
}

func TestADurableObjectsSQLStorageAndValues(t *testing.T) {
	w, _ := newDOWorker(t, 1)
	serveAs(t, w, "web1", "sql.do", "a")
	if got := serveAs(t, w, "web1", "sql.do", "b"); got != `{"w":1,"rows":["a","b"],"count":2}` {
		t.Errorf("sql: %s", got)
	}
	if got := serveAs(t, w, "web2", "sql.do", "c"); got != `{"w":1,"rows":["c"],"count":1}` {
		t.Errorf("another sandbox's object has its own database: %s", got)
	}
	want := `[5,"a",2,"bigint",true,1,false,1,null,"nan",true,1]`
	if got := serveAs(t, w, "web1", "kinds.do", ""); got != want {
		t.Errorf("values: %s\nwant   %s", got, want)
	}
	if got := serveAs(t, w, "web1", "fetch.do", ""); got != "object saw fetch.do" {
		t.Errorf("stub.fetch: %s", got)
	}
}
