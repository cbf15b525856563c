package worker

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
)

func TestTheKVBindingFollowsWorkersKVAndSharesTheHandlersNamespace(t *testing.T) {
	db, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	// Written as the kv handler would: the worker reads it.
	if err := db.Keys(store.KindKV, "default", store.ScopeShared, store.Limits{}).Put("from-handler", store.Entry{Value: []byte("hi")}); err != nil {
		t.Fatal(err)
	}
	src := `export default { outboundByHost: {
  "kv.test": async (request, env) => {
    const out = [];
    out.push(await env.KV.get("from-handler"));
    out.push(await env.KV.get("absent"));
    await env.KV.put("j", JSON.stringify({a: 1}), { metadata: { m: true } });
    out.push((await env.KV.get("j", "json")).a);
    out.push((await env.KV.get("j", { type: "json" })).a);
    const wm = await env.KV.getWithMetadata("j", "json");
    out.push(wm.metadata.m, wm.value.a);
    out.push(new Uint8Array(await env.KV.get("from-handler", "arrayBuffer")).length);
    out.push(await new Response(await env.KV.get("from-handler", "stream")).text());
    const bulk = await env.KV.get(["from-handler", "absent"]);
    out.push(bulk.get("from-handler"), bulk.get("absent"));
    await env.KV.put("ttl", "x", { expirationTtl: 3600 });
    const l = await env.KV.list({ prefix: "" });
    out.push(l.keys.map(k => k.name).join(","), l.list_complete, typeof l.keys.find(k => k.name === "ttl").expiration);
    await env.KV.delete("j");
    out.push(await env.KV.get("j"));
    let err = "";
    try { await env.KV.put("bad", "x", { expirationTtl: 1.5 }); } catch (e) { err = String(e); }
    out.push(err.includes("expirationTtl"));
    return new Response(JSON.stringify(out));
  },
} };`
	w, err := New(Config{Name: "app", Script: writeScript(t, src), Bindings: map[string]Binding{"KV": &KV{Store: backend.Bolt(db), Namespace: "default"}},
		Limits: Limits{CPU: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	rec := serve(t, w, "GET", "kv.test", "/", "")
	want := `["hi",null,1,1,true,1,2,"hi","hi",null,"from-handler,j,ttl",true,"number",null,true]`
	if rec.Code != 200 || strings.TrimSpace(rec.Body.String()) != want {
		t.Fatalf("%d %s\nwant %s", rec.Code, rec.Body, want)
	}
	e, err := db.Keys(store.KindKV, "default", store.ScopeShared, store.Limits{}).Get("ttl")
	if err != nil || string(e.Value) != "x" || e.Owner != "web1" || e.Expires.IsZero() {
		t.Fatalf("the handler's side sees %+v %v, want x charged to web1 with an expiry", e, err)
	}
}

func TestAKeyReadAsTextIsTheSameOnEveryPathThatReadsIt(t *testing.T) {
	db, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	kv := db.Keys(store.KindKV, "default", store.ScopeShared, store.Limits{})
	for k, v := range map[string]string{"bom": "\xef\xbb\xbfa", "bad": "a\xffb", "utf8": "bücher 😀", "empty": ""} {
		if err := kv.Put(k, store.Entry{Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
	}
	// get(key) and get(key, "text") take getText; {type: "text"} and the
	// bulk get take the general path with TextDecoder. All four must agree.
	src := `export default { outboundByHost: {
  "kv.test": async (request, env) => {
    const out = [];
    for (const k of ["bom", "bad", "utf8", "empty", "absent"]) {
      const a = await env.KV.get(k), b = await env.KV.get(k, "text"), c = await env.KV.get(k, { type: "text" });
      const d = (await env.KV.get([k])).get(k);
      out.push(a === b && b === c && c === d ? a : ["differ", a, b, c, d]);
    }
    // A wrong type is a rejected promise, never a throw from get itself.
    const p = env.KV.get("utf8", "yaml");
    out.push(p instanceof Promise ? await p.catch((e) => e.constructor.name) : "threw");
    return new Response(JSON.stringify(out));
  },
} };`
	w, err := New(Config{Name: "app", Script: writeScript(t, src), Bindings: map[string]Binding{"KV": &KV{Store: backend.Bolt(db), Namespace: "default"}},
		Limits: Limits{CPU: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	rec := serve(t, w, "GET", "kv.test", "/", "")
	want := "[\"a\",\"a\uFFFDb\",\"bücher 😀\",\"\",null,\"TypeError\"]"
	if got := strings.TrimSpace(rec.Body.String()); rec.Code != 200 || got != want {
		t.Fatalf("%d %s\nwant %s", rec.Code, got, want)
	}
}

func TestTheKVBindingsListPagesByCursorInByteOrderAndNamesItsLimits(t *testing.T) {
	db, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	kv := db.Keys(store.KindKV, "default", store.ScopeShared, store.Limits{})
	for _, k := range []string{"b", "a", "é", "ab", "😀", "z"} {
		if err := kv.Put(k, store.Entry{Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	src := `export default { outboundByHost: {
  "list.test": async (request, env) => {
    const pages = []; let cursor;
    for (;;) {
      const r = await env.KV.list({ limit: 2, cursor });
      pages.push(r.keys.map((k) => k.name).join("|"));
      if (r.list_complete) break;
      cursor = r.cursor;
    }
    const errs = [];
    for (const f of [() => env.KV.put("k".repeat(600), "v"), () => env.KV.put("big", "x".repeat(26 << 20)), () => env.KV.get("x", "yaml")]) {
      try { await f(); errs.push("no error"); } catch (e) { errs.push(String(e.message || e)); }
    }
    return Response.json({ pages, errs });
  },
} };`
	w, err := New(Config{Name: "app", Script: writeScript(t, src), Bindings: map[string]Binding{"KV": &KV{Store: backend.Bolt(db), Namespace: "default"}}, Limits: Limits{CPU: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	rec := serve(t, w, "GET", "list.test", "/", "")
	var got struct {
		Pages []string
		Errs  []string
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if want := []string{"a|ab", "b|z", "é|😀"}; strings.Join(got.Pages, " ") != strings.Join(want, " ") {
		t.Errorf("pages %q, want %q (byte order, two at a time)", got.Pages, want)
	}
	for i, want := range []string{"key too large", "value too large", "unknown type"} {
		if i >= len(got.Errs) || !strings.Contains(got.Errs[i], want) {
			t.Errorf("error %d: %q, want it to name %q", i, got.Errs, want)
		}
	}
}

// downKV is a KV engine that cannot be reached: every call fails as the
// etcd backend's do when etcd is down, after a short wait.
type downKV struct{ backend.KV }

func (downKV) Get(string) (store.Entry, error) { return store.Entry{}, errDown() }
func (downKV) Put(string, store.Entry) error   { return errDown() }
func (downKV) Delete(string) error             { return errDown() }
func (downKV) List(store.ListOptions) (store.ListResult, error) {
	return store.ListResult{}, errDown()
}

func errDown() error {
	time.Sleep(20 * time.Millisecond)
	return fmt.Errorf("%w: etcd did not answer in time: dial tcp 10.9.8.7:2379: connect: connection refused", store.ErrUnavailable)
}

type downSpaces struct{ kv backend.KV }

func (d downSpaces) Keys(kind, namespace, scope string, l store.Limits) backend.KV {
	return downKV{d.kv}
}

func TestAnUnreachableKVEngineIsAJavaScriptErrorNamingStoreUnavailableWithoutItsAddress(t *testing.T) {
	db, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	bolt := backend.Bolt(db)
	stores := backend.Compose(downSpaces{}, bolt, bolt)
	src := `export default { outboundByHost: {
  "kv.test": async (request, env) => {
    const out = [];
    for (const f of [() => env.KV.get("k"), () => env.KV.put("k", "v"), () => env.KV.delete("k"), () => env.KV.list()]) {
      try { await f(); out.push("no error"); } catch (e) { out.push(String(e)); }
    }
    return new Response(JSON.stringify(out));
  },
} };`
	w, err := New(Config{Name: "app", Script: writeScript(t, src), Bindings: map[string]Binding{"KV": &KV{Store: stores, Namespace: "default"}},
		Limits: Limits{CPU: time.Second, Wall: 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	rec := serve(t, w, "GET", "kv.test", "/", "")
	if rec.Code != 200 {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	var out []string
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || len(out) != 4 {
		t.Fatalf("%s: %v", rec.Body, err)
	}
	for i, msg := range out {
		if !strings.Contains(msg, "store_unavailable") || strings.Contains(msg, "10.9.8.7") || strings.Contains(msg, "etcd") {
			t.Errorf("call %d threw %q; want store_unavailable, without the engine's address or name", i, msg)
		}
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the script took %v to see four failures of 20ms", took)
	}
}
