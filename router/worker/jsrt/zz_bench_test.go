package jsrt

import (
	"context"
	"net/http"
	"testing"
)

func BenchmarkZZ(b *testing.B) {
	for _, c := range []struct{ name, src string }{
		{"class plain", `class A { constructor(){ this.x = 1 } }; export default { async outbound(req) { return new A() } }`},
		{"class derived", `class B {}; class A extends B { constructor(){ super(); this.x = 1 } }; export default { async outbound(req) { return new A() } }`},
		{"class derived sym", `const S = Symbol(); class B { get body() { return 1 } }; class A extends B { constructor(){ super(); this[S] = {a:1,b:2,c:3,d:4,e:5,f:6,g:7,h:8} } }; export default { async outbound(req) { return new A() } }`},
		{"Object.create", `const S = Symbol(); class B { get body() { return 1 } }; class A extends B { constructor(){ super(); this[S] = {a:1} } }; export default { async outbound(req) { const r = Object.create(A.prototype); r[S] = {a:1,b:2,c:3,d:4,e:5,f:6,g:7,h:8}; return r } }`},
		{"sync 1", `export default { outbound(req) { return 1 } }`},
		{"async 1", `export default { async outbound(req) { return 1 } }`},
		{"async await 1", `export default { async outbound(req) { return await 1 } }`},
		{"async obj", `export default { async outbound(req) { return {a:1} } }`},
		{"async new Headers", `export default { async outbound(req) { return new Headers() } }`},
		{"async new Response()", `export default { async outbound(req) { return new Response() } }`},
		{"async new Response(ok)", `export default { async outbound(req) { return new Response("ok") } }`},
		{"async new Response(ok,status)", `export default { async outbound(req) { return new Response("ok", {status: 200}) } }`},
	} {
		b.Run(c.name, func(b *testing.B) {
			rt := New(Options{CPULimit: 0})
			fn := handler(b, rt, c.src)
			arg := rt.VM().ToValue(1)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := rt.Call(context.Background(), fn, arg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("CallResponse ok", func(b *testing.B) {
		rt := New(Options{})
		fn := handler(b, rt, `export default { async outbound(req) { return new Response("ok") } }`)
		arg := rt.VM().ToValue(1)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := rt.CallResponse(context.Background(), fn, arg); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestZZText(t *testing.T) {
	rt := New(Options{})
	for _, src := range []string{`return await new Response("a\ud800b").text()`, `return [...new Uint8Array(await new Response("\u00fc").arrayBuffer())]`, `const r = new Response("x"); return [r.headers.get("content-type"), await new Response("x", {headers: {"content-type": "a/b"}}).headers.get("content-type")]`, `return new Response("x", null).status`} {
		got, err := eval(t, rt, src)
		t.Log(got, err)
	}
}

func BenchmarkZZNewResponse(b *testing.B) {
	rt := New(Options{})
	resp := &http.Response{StatusCode: 200, Status: "200 OK", Header: http.Header{"Content-Type": {"text/plain"}, "Content-Length": {"128"}, "Date": {"Wed, 02 Dec 2026 14:35:07 GMT"}, "Server": {"x"}, "Etag": {`"abc"`}}, Body: http.NoBody}
	b.ReportAllocs()
	for b.Loop() {
		rt.newResponse(resp, "http://a.example/x")
	}
}
