package jsrt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/dop251/goja"
)

// handler loads src (a module whose default export has outbound) and returns outbound.
func handler(t testing.TB, rt *Runtime, src string) goja.Value {
	t.Helper()
	p, err := Compile("h.js", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	ex, err := rt.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return ex.Default.ToObject(rt.VM()).Get("outbound")
}

// serve runs outbound on r and converts what it returns.
func serve(t testing.TB, rt *Runtime, fn goja.Value, r *http.Request) (*Response, error) {
	t.Helper()
	req, err := rt.NewRequest(r, "http://"+r.Host+r.URL.RequestURI())
	if err != nil {
		t.Fatal(err)
	}
	v, err := rt.Call(context.Background(), fn, req)
	if err != nil {
		return nil, err
	}
	return rt.ToResponse(v)
}

func body(t testing.TB, r io.Reader) string {
	t.Helper()
	if r == nil {
		return "<nil>"
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestARequestCrossesIntoJSAndAResponseBack(t *testing.T) {
	rt := New(Options{})
	fn := handler(t, rt, `export default { async outbound(req) {
  const u = new URL(req.url);
  return Response.json({method: req.method, host: req.headers.get("host"), path: u.pathname, q: u.searchParams.get("q"),
    h: req.headers.get("x-multi"), body: await req.text()}, {status: 202, statusText: "Accepted", headers: {"X-Out": "1"}});
} }`)
	r := httptest.NewRequest("POST", "http://svc.example/a/b?q=1", strings.NewReader("payload"))
	r.Header.Add("X-Multi", "a")
	r.Header.Add("X-Multi", "b")
	res, err := serve(t, rt, fn, r)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"method":"POST","host":"svc.example","path":"/a/b","q":"1","h":"a, b","body":"payload"}`
	if got := body(t, res.Body); got != want || res.Status != 202 || res.StatusText != "Accepted" || res.Header.Get("X-Out") != "1" || res.Header.Get("Content-Type") != "application/json" {
		t.Errorf("got %d %q %v %s", res.Status, res.StatusText, res.Header, got)
	}
}

func TestToResponseTakesEveryKindOfBody(t *testing.T) {
	rt := New(Options{})
	for src, want := range map[string]string{
		`new Response(null, {status: 204})`:                                          "<nil>",
		`new Response("text")`:                                                       "text",
		`new Response("bücher \u{1F600}")`:                                           "bücher \U0001F600",
		`new Response("a\ud800b")`:                                                   "a\uFFFDb",
		`(() => { const r = new Response("ü"); r.body; return r })()`:                "ü",
		`new Response("ü").clone()`:                                                  "ü",
		`new Response(new Uint8Array([104, 105]))`:                                   "hi",
		`new Response(new ReadableStream({start(c) { c.enqueue("a"); c.close() }}))`: "a",
		`(() => { let n = 0; return new Response(new ReadableStream({pull(c) { n++ < 2 ? c.enqueue("p") : c.close() }})) })()`: "pp",
	} {
		v, err := rt.VM().RunString(src)
		if err != nil {
			t.Fatal(err)
		}
		res, err := rt.ToResponse(v)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		if got := body(t, res.Body); got != want {
			t.Errorf("%s: body %q, want %q", src, got, want)
		}
	}
	for src, want := range map[string]string{
		`({})`: "TypeError: the handler did not return a Response",
		`(() => { const r = new Response("x"); r.text(); return r })()`: "TypeError: body already used",
	} {
		v, _ := rt.VM().RunString(src)
		if _, err := rt.ToResponse(v); err == nil || err.Error() != want {
			t.Errorf("%s: got %v, want %s", src, err, want)
		}
	}
	if _, err := rt.ToResponse(goja.Undefined()); err == nil {
		t.Error("undefined converted")
	}
}

func TestFetchGoesThroughOptionsFetch(t *testing.T) {
	var seen *http.Request
	var seenBody string
	rt := New(Options{Fetch: func(ctx context.Context, req *http.Request) (*http.Response, error) {
		seen = req
		seenBody = "<nil>"
		if req.Body != nil {
			b, _ := io.ReadAll(req.Body)
			seenBody = string(b)
		}
		if req.URL.Host == "fail.example" {
			return nil, errors.New("dial refused")
		}
		return &http.Response{StatusCode: 201, Status: "201 Created", Header: http.Header{"X-Up": {"1"}},
			Body: io.NopCloser(strings.NewReader("from " + req.URL.String()))}, nil
	}})
	cases := []struct{ name, body, want, wantSeen string }{
		{"a URL string", `const r = await fetch("http://up.example/x"); return [r.status, r.statusText, r.ok, r.headers.get("x-up"), r.url, await r.text()]`,
			`[201,"Created",true,"1","http://up.example/x","from http://up.example/x"]`, "GET http://up.example/x up.example [] <nil>"},
		{"a URL and init", `const r = await fetch(new URL("http://up.example/y"), {method: "PUT", headers: {"X-A": "1", Host: "other.example"}, body: "data"}); return r.status`,
			`201`, "PUT http://up.example/y other.example [Content-Type=text/plain;charset=UTF-8 X-A=1] data"},
		{"a Request", `const r = await fetch(new Request("http://up.example/z", {method: "POST", body: new Uint8Array([65])})); return r.status`,
			`201`, "POST http://up.example/z up.example [] A"},
		{"a JS stream body", `return (await fetch("http://up.example/s", {method: "POST", body: new ReadableStream({start(c) { c.enqueue("st"); c.close() }})})).status`,
			`201`, "POST http://up.example/s up.example [] st"},
		{"a Request's body moves to the fetch: a second fetch of it is refused", `const q = new Request("http://up.example/m", {method: "POST", body: "once"}); await fetch(q); return [q.bodyUsed, await fetch(q).catch(e => e.message)]`,
			`[true,"body already used"]`, ""},
		{"a response's headers read as JS builds them, once", `const r = await fetch("http://up.example/h"); const a = r.headers; return [a === r.headers, [...a], r.clone().headers.get("x-up")]`,
			`[true,[["x-up","1"]],"1"]`, ""},
		{"a failure rejects", `return await fetch("http://fail.example/").catch(e => e.message)`, `"fetch failed: dial refused"`, ""},
		{"a bad URL rejects", `return await fetch("nope").catch(e => e.name)`, `"TypeError"`, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			seen = nil
			got, err := eval(t, rt, c.body)
			if err != nil || got != c.want {
				t.Fatalf("got %s %v, want %s", got, err, c.want)
			}
			if c.wantSeen == "" {
				return
			}
			var hs []string
			for k, vs := range seen.Header {
				for _, v := range vs {
					hs = append(hs, k+"="+v)
				}
			}
			sort.Strings(hs)
			if hs == nil {
				hs = []string{}
			}
			gotSeen := seen.Method + " " + seen.URL.String() + " " + seen.Host + " " + "[" + strings.Join(hs, " ") + "] " + seenBody
			if gotSeen != c.wantSeen {
				t.Errorf("Fetch saw %q, want %q", gotSeen, c.wantSeen)
			}
		})
	}
	if got, err := eval(t, New(Options{}), `return await fetch("http://a/").catch(e => e.message)`); err != nil || got != `"fetch is not available to this worker"` {
		t.Errorf("without Options.Fetch: %s %v", got, err)
	}
}

// patterned yields n bytes without holding them, counting what was read.
type patterned struct{ n, read int64 }

func (p *patterned) Read(b []byte) (int, error) {
	if p.read >= p.n {
		return 0, io.EOF
	}
	if int64(len(b)) > p.n-p.read {
		b = b[:p.n-p.read]
	}
	for i := range b {
		b[i] = byte(p.read + int64(i))
	}
	p.read += int64(len(b))
	return len(b), nil
}

func (p *patterned) Close() error { return nil }

func TestABigBodyStreamsFromNewRequestToFetchUnread(t *testing.T) {
	const size = 64 << 20
	for name, src := range map[string]string{
		"fetch(request)":                         `export default { outbound(req) { return fetch(req) } }`,
		"new Request(request) with a new header": `export default { outbound(req) { const r = new Request(req); r.headers.set("Authorization", "Bearer t"); return fetch(r) } }`,
		"fetch(url, {body: request.body})":       `export default { outbound(req) { return fetch("http://up.example/put", {method: "PUT", body: req.body, headers: req.headers}) } }`,
	} {
		t.Run(name, func(t *testing.T) {
			in := &patterned{n: size}
			var got int64
			var sameReader bool
			var length int64
			down := &patterned{n: size}
			rt := New(Options{Fetch: func(ctx context.Context, req *http.Request) (*http.Response, error) {
				sameReader = req.Body == io.ReadCloser(in)
				length = req.ContentLength
				n, err := io.Copy(io.Discard, req.Body)
				got = n
				return &http.Response{StatusCode: 200, Body: down}, err
			}})
			fn := handler(t, rt, src)
			r := httptest.NewRequest("PUT", "http://up.example/put", nil)
			r.Body, r.ContentLength = in, size
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			res, err := serve(t, rt, fn, r)
			if err != nil {
				t.Fatal(err)
			}
			if res.Body != io.Reader(down) {
				t.Errorf("the upstream's body was not passed on as its reader: %T", res.Body)
			}
			runtime.ReadMemStats(&after)
			if !sameReader || got != size || in.read != size || length != size {
				t.Errorf("Fetch got the request's reader: %v, %d bytes of %d, content length %d", sameReader, got, size, length)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
				t.Errorf("the call allocated %d bytes for a %d byte body: it was buffered", alloc, size)
			}
		})
	}
}

func TestAScriptReadsABigBodyInChunks(t *testing.T) {
	const size = 8 << 20
	rt := New(Options{})
	fn := handler(t, rt, `export default { async outbound(req) {
  const r = req.body.getReader(); let n = 0, chunks = 0;
  for (;;) { const {done, value} = await r.read(); if (done) break; n += value.length; chunks++ }
  return new Response(n + " " + (chunks > 1)) } }`)
	r := httptest.NewRequest("POST", "http://a/", nil)
	r.Body = &patterned{n: size}
	res, err := serve(t, rt, fn, r)
	if err != nil {
		t.Fatal(err)
	}
	if got := body(t, res.Body); got != "8388608 true" {
		t.Errorf("got %q", got)
	}
}

func BenchmarkCall(b *testing.B) {
	rt := New(Options{})
	fn := handler(b, rt, `export default { async outbound(req) { return new Response("ok") } }`)
	arg := rt.VM().ToValue(1)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rt.Call(context.Background(), fn, arg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRequestResponse(b *testing.B) {
	rt := New(Options{})
	fn := handler(b, rt, `export default { async outbound(req) { return new Response("ok " + new URL(req.url).pathname, {headers: {"x-h": req.headers.get("user-agent")}}) } }`)
	r := httptest.NewRequest("GET", "http://svc.example/path", nil)
	r.Header.Set("User-Agent", "bench")
	b.ReportAllocs()
	for b.Loop() {
		res, err := serve(b, rt, fn, r)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
	}
}

func TestBodyGivesBindingsAReaderForEveryKindOfBody(t *testing.T) {
	in := io.NopCloser(strings.NewReader("go"))
	made := io.NopCloser(strings.NewReader("made"))
	type got struct {
		text string
		size int64
		same bool
	}
	var results []got
	rt := New(Options{})
	rt.VM().Set("put", func(v goja.Value) goja.Value {
		r, size, err := rt.Body(v)
		if err != nil {
			panic(rt.VM().NewGoError(err))
		}
		return rt.Async(func() (func() goja.Value, error) {
			b, err := io.ReadAll(r)
			results = append(results, got{string(b), size, r == io.Reader(in) || r == io.Reader(made)})
			return func() goja.Value { return goja.Undefined() }, err
		})
	})
	rt.VM().Set("made", rt.NewStream(made))
	fn := handler(t, rt, `export default { async outbound(req) {
  await put("str"); await put(new Uint8Array([98, 121])); await put(new TextEncoder().encode("ab").buffer);
  await put(new URLSearchParams("a=b c")); await put(null); await put(req); await put(made);
  let n = 0; await put(new ReadableStream({ pull(c) { n++ < 3 ? c.enqueue("p" + n) : c.close() } }));
  return new Response("done") } }`)
	r := httptest.NewRequest("POST", "http://a/", nil)
	r.Body = in
	if _, err := serve(t, rt, fn, r); err != nil {
		t.Fatal(err)
	}
	want := []got{{"str", 3, false}, {"by", 2, false}, {"ab", 2, false}, {"a=b+c", 5, false}, {"", 0, false},
		{"go", -1, true}, {"made", -1, true}, {"p1p2p3", -1, false}}
	if len(results) != len(want) {
		t.Fatalf("got %v, want %v", results, want)
	}
	for i := range want {
		if results[i] != want[i] {
			t.Errorf("put %d: got %+v, want %+v", i, results[i], want[i])
		}
	}
}

func TestAScriptsStreamReadAfterItsCallEndedFails(t *testing.T) {
	rt := New(Options{})
	var r io.Reader
	rt.VM().Set("keep", func(v goja.Value) { r, _, _ = rt.Body(v) })
	if _, err := eval(t, rt, `keep(new ReadableStream({ pull(c) { c.enqueue("x") } }))`); err != nil {
		t.Fatal(err)
	}
	// The Call succeeded, so its loop may still go on (Wait); the next Call ends it.
	errc := make(chan error, 1)
	go func() { _, err := io.ReadAll(r); errc <- err }()
	if _, err := eval(t, rt, `return 1`); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err == nil || !strings.Contains(err.Error(), "after its call ended") {
		t.Errorf("got %v", err)
	}
}

func TestWaitRunsTheLoopOnAfterTheResponse(t *testing.T) {
	var fetched []string
	rt := New(Options{Fetch: func(ctx context.Context, req *http.Request) (*http.Response, error) {
		fetched = append(fetched, req.URL.Path)
		return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader("logged"))}, nil
	}})
	p, err := Compile("w.js", []byte(`const later = [];
export default {
  async outbound(req) {
    later.push(new Promise(r => setTimeout(r, 20)).then(() => fetch("http://log/after")).then(r => r.text()));
    return new Response("now");
  },
  after() { return Promise.all(later.splice(0)) },
}`))
	if err != nil {
		t.Fatal(err)
	}
	ex, err := rt.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	def := ex.Default.ToObject(rt.VM())
	res, err := serve(t, rt, def.Get("outbound"), httptest.NewRequest("GET", "http://a/", nil))
	if err != nil || body(t, res.Body) != "now" || len(fetched) != 0 {
		t.Fatalf("response: %v, fetched %v before it", err, fetched)
	}
	after, _ := goja.AssertFunction(def.Get("after"))
	pending, err := after(def) // a plain goja call: it must not start a new Call
	if err != nil {
		t.Fatal(err)
	}
	v, err := rt.Wait(context.Background(), pending)
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Export(); len(fetched) != 1 || fmt.Sprint(got) != "[logged]" {
		t.Errorf("Wait got %v, fetched %v", got, fetched)
	}
}

type closeCounter struct {
	io.Reader
	closed int
}

func (c *closeCounter) Close() error { c.closed++; return nil }

func TestAnUpstreamBodyTheScriptDropsIsClosed(t *testing.T) {
	var bodies []*closeCounter
	rt := New(Options{Fetch: func(ctx context.Context, req *http.Request) (*http.Response, error) {
		c := &closeCounter{Reader: strings.NewReader("up")}
		bodies = append(bodies, c)
		return &http.Response{StatusCode: 200, Body: c}, nil
	}})
	fn := handler(t, rt, `export default { async outbound(req) {
  await fetch("http://dropped/");                 // never read
  await (await fetch("http://read/")).text();     // read to the end
  return fetch("http://passed/") } }`)
	res, err := serve(t, rt, fn, httptest.NewRequest("GET", "http://a/", nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(bodies) != 3 || bodies[0].closed != 1 || bodies[1].closed != 1 || bodies[2].closed != 0 || res.Body != io.Reader(bodies[2]) {
		for _, b := range bodies {
			t.Logf("closed %d", b.closed)
		}
		t.Fatalf("want closes 1 1 0; the passed body must stay open for the caller")
	}
}

func TestARequestFromGoIsTheOneTheConstructorWouldMake(t *testing.T) {
	// NewRequest checks the method and URL in Go and builds the headers when the
	// script first looks; the Request it gives must be the one newRequest (the
	// constructor) makes from the same request.
	withHeader := func(r *http.Request, k, v string) *http.Request { r.Header[k] = append(r.Header[k], v); return r }
	for _, tc := range []struct {
		name string
		r    *http.Request
		url  string
	}{
		{"a plain GET", httptest.NewRequest("GET", "http://svc.example/a?q=1", nil), "http://svc.example/a?q=1"},
		{"a lower-case method is upper-cased", httptest.NewRequest("post", "http://a/", strings.NewReader("x")), "http://a/"},
		{"an unknown method keeps its case", httptest.NewRequest("Brew", "http://a/", nil), "http://a/"},
		{"the URL is normalised", httptest.NewRequest("GET", "http://a/", nil), "HTTP://Ex.Example:80/x/../y/%7e?a b#f"},
		{"a URL with credentials and a port", httptest.NewRequest("GET", "http://a/", nil), "http://u:p@a:8080/"},
		{"header fields a server would not pass are dropped", withHeader(withHeader(httptest.NewRequest("GET", "http://a/", nil), "Bad Name", "v"), "X-Ok", " padded\t"), "http://a/"},
		{"bytes past ASCII in a value stay bytes", withHeader(httptest.NewRequest("GET", "http://a/", nil), "X-Latin", "caf\xe9"), "http://a/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := New(Options{})
			describe, err := rt.VM().RunString(`(r) => JSON.stringify([r.method, r.url, [...r.headers], r.redirect, r.signal, r.bodyUsed, Object.prototype.toString.call(r), r instanceof Request])`)
			if err != nil {
				t.Fatal(err)
			}
			f, _ := goja.AssertFunction(describe)
			lazy, err := rt.NewRequest(tc.r, tc.url)
			if err != nil {
				t.Fatal(err)
			}
			// The body is left out: the two share the stream code, and a stream is read once.
			eager, err := rt.fns.NewRequest(goja.Undefined(), rt.vm.ToValue(tc.r.Method), rt.vm.ToValue(tc.url), rt.flat(decodePairs(requestPairs(tc.r))), goja.Null())
			if err != nil {
				t.Fatal(err)
			}
			got, _ := f(goja.Undefined(), lazy)
			want, _ := f(goja.Undefined(), eager)
			if got.String() != want.String() {
				t.Errorf("NewRequest gives\n%s\nthe constructor\n%s", got, want)
			}
		})
	}
	t.Run("a method or URL the constructor rejects fails with its error", func(t *testing.T) {
		rt := New(Options{})
		for _, tc := range []struct{ method, url, want string }{
			{"a b", "http://a/", "TypeError: invalid method: a b"},
			{"GET", "/x", `TypeError: invalid URL: "/x" is relative and there is no base`},
		} {
			r := httptest.NewRequest("GET", "http://a/", nil)
			r.Method = tc.method
			_, err := rt.NewRequest(r, tc.url)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s %s: got %v, want %q", tc.method, tc.url, err, tc.want)
			}
		}
	})
}

func TestCallResponseIsCallThenToResponse(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      string // the body, or the error's type and text
	}{
		{"a Response is converted", `return new Response("hi", {status: 201})`, "201 hi"},
		{"a value that is not a Response is a ResponseError", `return 1`, "*jsrt.ResponseError the handler returned number, not a Response"},
		{"an exception is the call's", `throw new Error("bad")`, "*jsrt.Exception Error: bad"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := New(Options{})
			fn, err := rt.VM().RunString("(async () => {" + tc.src + "})")
			if err != nil {
				t.Fatal(err)
			}
			res, err := rt.CallResponse(context.Background(), fn)
			got := ""
			if err != nil {
				got = fmt.Sprintf("%T %v", err, err)
			} else {
				got = fmt.Sprintf("%d %s", res.Status, body(t, res.Body))
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestAFetchedResponseGoesBackAsItCameUnlessTheScriptChangedIt(t *testing.T) {
	rt := New(Options{Fetch: func(ctx context.Context, req *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Status: "200 OK", Header: http.Header{"X-Up": {" 1 "}, "Set-Cookie": {"a=1", "b=2"}, "Bad Name": {"x"}},
			Body: io.NopCloser(strings.NewReader("body"))}, nil
	}})
	for _, c := range []struct{ name, src, want string }{
		{"untouched: the fields as Headers would keep them", `return await fetch("http://up.example/")`, "Set-Cookie=a=1 Set-Cookie=b=2 X-Up=1 | body"},
		{"changed by the script", `const r = await fetch("http://up.example/"); r.headers.set("x-up", "2"); r.headers.delete("set-cookie"); return r`, "X-Up=2 | body"},
	} {
		t.Run(c.name, func(t *testing.T) {
			fn, err := rt.VM().RunString("(async () => {\n" + c.src + "\n})")
			if err != nil {
				t.Fatal(err)
			}
			res, err := rt.CallResponse(context.Background(), fn)
			if err != nil {
				t.Fatal(err)
			}
			var hs []string
			for k, vs := range res.Header {
				for _, v := range vs {
					hs = append(hs, k+"="+v)
				}
			}
			sort.Strings(hs)
			if got := strings.Join(hs, " ") + " | " + body(t, res.Body); got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}
