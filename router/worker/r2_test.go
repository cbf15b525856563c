package worker

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
)

func TestTheR2BindingFollowsR2AndSharesTheBlobBucket(t *testing.T) {
	db, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	src := `export default { outboundByHost: {
  "up.test": async (request, env) => {
    const o = await env.B.put(new URL(request.url).pathname.slice(1), request.body, { httpMetadata: { contentType: "text/x" }, customMetadata: { a: "1" } });
    return new Response(o.key + " " + o.size + " " + o.httpEtag.length);
  },
  "down.test": async (request, env) => {
    const o = await env.B.get(new URL(request.url).pathname.slice(1));
    if (o === null) return new Response("none", { status: 404 });
    const h = new Headers(); o.writeHttpMetadata(h); h.set("etag", o.httpEtag);
    return new Response(o.body, { headers: h });
  },
  "r2.test": async (request, env) => {
    const out = [];
    const p = await env.B.put("dir/a", "hello world");
    out.push(p.size, p.etag.length);
    out.push(await (await env.B.get("dir/a")).text());
    out.push(await (await env.B.get("dir/a", { range: { offset: 6, length: 5 } })).text());
    out.push(await (await env.B.get("dir/a", { range: { suffix: 3 } })).text());
    const miss = await env.B.get("dir/a", { onlyIf: { etagMatches: "nope" } });
    out.push(miss !== null && !("body" in miss && miss.body));
    out.push(await env.B.put("dir/a", "x", { onlyIf: { etagDoesNotMatch: p.etag } }));
    out.push((await env.B.head("dir/a")).size);
    await env.B.put("dir/b", new TextEncoder().encode("bb"));
    await env.B.put("top", "t");
    const l = await env.B.list({ delimiter: "/" });
    out.push(l.objects.map(o => o.key).join(","), l.delimitedPrefixes.join(","));
    await env.B.delete(["dir/a", "dir/b"]);
    out.push(await env.B.get("dir/a"), await env.B.head("dir/b"));
    return new Response(JSON.stringify(out));
  },
} };`
	w, err := New(Config{Name: "app", Script: writeScript(t, src), Bindings: map[string]Binding{"B": &R2{Store: backend.Bolt(db), Bucket: "default"}},
		Limits: Limits{CPU: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	rec := serve(t, w, "GET", "r2.test", "/", "")
	want := `[11,32,"hello world","world","rld",true,null,11,"top","dir/",null,null]`
	if rec.Code != 200 || strings.TrimSpace(rec.Body.String()) != want {
		t.Fatalf("%d %s\nwant %s", rec.Code, rec.Body, want)
	}
	// A request's body streams into the bucket and back out.
	big := strings.Repeat("0123456789", 100000)
	if rec := serve(t, w, "PUT", "up.test", "/big", big); rec.Code != 200 || rec.Body.String() != "big 1000000 34" {
		t.Fatalf("upload: %d %q", rec.Code, rec.Body)
	}
	rec = serve(t, w, "GET", "down.test", "/big", "")
	if rec.Code != 200 || rec.Body.Len() != len(big) || rec.Header().Get("Content-Type") != "text/x" {
		t.Fatalf("download: %d, %d bytes, %v", rec.Code, rec.Body.Len(), rec.Header())
	}
	// The blob handler's side sees the object the worker stored.
	obj, err := db.Blobs("default", store.ScopeShared, store.Limits{}).Open("big")
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	b, _ := io.ReadAll(obj)
	if string(b) != big || obj.Info.Custom["a"] != "1" || obj.Info.Owner != "web1" {
		t.Fatalf("stored %d bytes, custom %v, owner %q", len(b), obj.Info.Custom, obj.Info.Owner)
	}
}
