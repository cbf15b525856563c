package jsrt

import "testing"

func TestHeadersFollowTheFetchStandard(t *testing.T) {
	runTable(t, []jsCase{
		{"names are case-insensitive", `const h = new Headers({"Content-Type": "text/x"}); return [h.get("content-type"), h.has("CONTENT-TYPE")]`, `["text/x",true]`},
		{"get of a missing name is null", `return new Headers().get("x")`, `null`},
		{"append combines with a comma", `const h = new Headers(); h.append("a", "1"); h.append("A", "2"); return h.get("a")`, `"1, 2"`},
		{"set replaces every value", `const h = new Headers([["a","1"],["a","2"]]); h.set("A", "3"); return [...h]`, `[["a","3"]]`},
		{"delete removes every value", `const h = new Headers({a: "1", b: "2"}); h.delete("A"); return [...h.keys()]`, `["b"]`},
		{"values are trimmed of HTTP whitespace", `return new Headers({a: "  x \t"}).get("a")`, `"x"`},
		{"iteration is sorted and lower-case", `return [...new Headers({B: "2", a: "1", C: "3"}).entries()]`, `[["a","1"],["b","2"],["c","3"]]`},
		{"set-cookie values stay apart", `const h = new Headers(); h.append("Set-Cookie", "a=1"); h.append("set-cookie", "b=2"); return [[...h], h.getSetCookie()]`, `[[["set-cookie","a=1"],["set-cookie","b=2"]],["a=1","b=2"]]`},
		{"forEach passes value, name", `const o = []; new Headers({x: "1"}).forEach((v, k) => o.push(k + "=" + v)); return o`, `["x=1"]`},
		{"copying Headers is independent", `const a = new Headers({x: "1"}); const b = new Headers(a); b.set("x", "2"); return [a.get("x"), b.get("x")]`, `["1","2"]`},
		{"an invalid name throws", `new Headers({"a b": "1"})`, `throws: TypeError: invalid header name: "a b"`},
		{"a value with a newline throws", `new Headers().set("a", "x\ny")`, `throws: TypeError: invalid value for header a`},
		{"a value is a ByteString: Latin-1 passes", `return new Headers({a: "caf\u00e9"}).get("a") === "caf\u00e9"`, `true`},
		{"a value past Latin-1 throws", `new Headers({a: "\u20ac"})`, `throws: TypeError: invalid value for header a`},
		{"a pair of the wrong length throws", `new Headers([["a"]])`, `throws: TypeError: each header pair needs two items`},
	})
}

func TestURLParsesTheWHATWGCommonCases(t *testing.T) {
	parts := `const p = (u) => [u.href, u.protocol, u.host, u.hostname, u.port, u.pathname, u.search, u.hash, u.origin];`
	runTable(t, []jsCase{
		{"the parts of a full URL", parts + `return p(new URL("https://User:pw@Example.COM:8443/a/b?x=1&y=2#frag"))`, `["https://User:pw@example.com:8443/a/b?x=1&y=2#frag","https:","example.com:8443","example.com","8443","/a/b","?x=1&y=2","#frag","https://example.com:8443"]`},
		{"a default port is dropped", parts + `return p(new URL("HTTP://a.b:80"))`, `["http://a.b/","http:","a.b","a.b","","/","","","http://a.b"]`},
		{"dot segments are removed", `return new URL("http://a/b/c/../d/./e").pathname`, `"/b/d/e"`},
		{"a relative URL against a base", `return new URL("../x?q", "http://a/b/c/d").href`, `"http://a/b/x?q"`},
		{"an IPv6 host keeps its brackets", `return new URL("http://[::1]:8080/").host`, `"[::1]:8080"`},
		{"a unicode host becomes punycode", `return new URL("http://bücher.example/").hostname`, `"xn--bcher-kva.example"`},
		{"spaces in the query are escaped", `return new URL("http://a/?a b").search`, `"?a%20b"`},
		{"a non-special scheme is opaque", `const u = new URL("mailto:x@y.z"); return [u.protocol, u.pathname, u.origin]`, `["mailto:","x@y.z","null"]`},
		{"a relative URL without a base throws", `new URL("/x")`, `throws: TypeError: invalid URL: "/x" is relative and there is no base`},
		{"a special URL without a host throws", `new URL("http://")`, `throws: TypeError: invalid URL: "http://" has no host`},
		{"canParse says so without throwing", `return [URL.canParse("http://a"), URL.canParse("nope")]`, `[true,false]`},
		{"setting pathname", `const u = new URL("http://a/b?c"); u.pathname = "x y"; return u.href`, `"http://a/x%20y?c"`},
		{"setting host and port", `const u = new URL("http://a/"); u.hostname = "b.c"; u.port = "81"; return u.href`, `"http://b.c:81/"`},
		{"setting search updates searchParams", `const u = new URL("http://a/"); u.search = "k=v"; return [u.href, u.searchParams.get("k")]`, `["http://a/?k=v","v"]`},
		{"searchParams writes back to the URL", `const u = new URL("http://a/?a=1"); u.searchParams.append("b", "x y"); return u.href`, `"http://a/?a=1&b=x+y"`},
		{"setting hash", `const u = new URL("http://a/"); u.hash = "h"; return u.toString()`, `"http://a/#h"`},
		{"toJSON is the href", `return JSON.stringify({u: new URL("http://a")})`, `"{\"u\":\"http://a/\"}"`},
	})
}

func TestURLSearchParamsFollowTheFormEncoding(t *testing.T) {
	runTable(t, []jsCase{
		{"parse with a leading ?", `const s = new URLSearchParams("?a=1&b=x+y&c=%2F&a=2"); return [s.get("a"), s.getAll("a"), s.get("b"), s.get("c"), s.size]`, `["1",["1","2"],"x y","/",4]`},
		{"a key without = has an empty value", `return new URLSearchParams("k").get("k")`, `""`},
		{"a bad escape is kept", `return new URLSearchParams("a=%zz%41").get("a")`, `"%zzA"`},
		{"serialize escapes like forms", `return new URLSearchParams({q: "a b&c=d/é!~*"}).toString()`, `"q=a+b%26c%3Dd%2F%C3%A9%21%7E*"`},
		{"from pairs", `return new URLSearchParams([["a","1"],["b","2"]]).toString()`, `"a=1&b=2"`},
		{"set keeps the first position", `const s = new URLSearchParams("a=1&b=2&a=3"); s.set("a", "9"); return s.toString()`, `"a=9&b=2"`},
		{"delete with a value", `const s = new URLSearchParams("a=1&a=2"); s.delete("a", "1"); return s.toString()`, `"a=2"`},
		{"has with a value", `const s = new URLSearchParams("a=1"); return [s.has("a"), s.has("a", "2"), s.has("b")]`, `[true,false,false]`},
		{"sort is stable by name", `const s = new URLSearchParams("c=1&a=2&b=3&a=1"); s.sort(); return s.toString()`, `"a=2&a=1&b=3&c=1"`},
		{"iteration", `return [...new URLSearchParams("a=1&b=2")]`, `[["a","1"],["b","2"]]`},
	})
}

func TestRequestAndResponseBodies(t *testing.T) {
	runTable(t, []jsCase{
		{"text", `return await new Response("héllo").text()`, `"héllo"`},
		{"json", `return await new Response('{"a":[1]}').json()`, `{"a":[1]}`},
		{"arrayBuffer", `return [...new Uint8Array(await new Response(new Uint8Array([1,2,3])).arrayBuffer())]`, `[1,2,3]`},
		{"bodyUsed after reading", `const r = new Response("x"); await r.text(); return r.bodyUsed`, `true`},
		{"a second read throws", `const r = new Response("x"); await r.text(); await r.text()`, `throws: TypeError: body already used`},
		{"a string body sets the content type", `return new Response("x").headers.get("content-type")`, `"text/plain;charset=UTF-8"`},
		{"a URLSearchParams body", `const r = new Request("http://a", {method: "POST", body: new URLSearchParams({a: "b c"})}); return [r.headers.get("content-type"), await r.text()]`, `["application/x-www-form-urlencoded;charset=UTF-8","a=b+c"]`},
		{"a ReadableStream body", `const s = new ReadableStream({start(c) { c.enqueue("ab"); c.enqueue(new Uint8Array([99])); c.close() }}); return await new Response(s).text()`, `"abc"`},
		{"a pulled ReadableStream body", `let i = 0; const s = new ReadableStream({pull(c) { if (i++ < 3) c.enqueue("x"); else c.close() }}); return await new Response(s).text()`, `"xxx"`},
		{"body.getReader reads chunks", `const rd = new Response("ab").body.getReader(); const a = await rd.read(); const b = await rd.read(); return [a.done, [...a.value], b.done]`, `[false,[97,98],true]`},
		{"a null body", `const r = new Response(null); return [r.body, await r.text()]`, `[null,""]`},
		{"clone reads twice", `const a = new Response("x"); const b = a.clone(); return [await a.text(), await b.text()]`, `["x","x"]`},
		{"clone of a stream tees it", `const a = new Response(new ReadableStream({start(c) { c.enqueue("s"); c.close() }})); const b = a.clone(); return [await b.text(), await a.text()]`, `["s","s"]`},
		{"clone of a used body throws", `const a = new Response("x"); await a.text(); a.clone()`, `throws: TypeError: cannot clone a used body`},
	})
}

func TestResponseFollowsTheFetchStandard(t *testing.T) {
	runTable(t, []jsCase{
		{"defaults", `const r = new Response(); return [r.status, r.statusText, r.ok, r.type, r.url, r.redirected]`, `[200,"",true,"default","",false]`},
		{"status and statusText", `const r = new Response("x", {status: 404, statusText: "Not Found", headers: {a: "1"}}); return [r.status, r.statusText, r.ok, r.headers.get("a")]`, `[404,"Not Found",false,"1"]`},
		{"a status out of range throws", `new Response("", {status: 99})`, `throws: RangeError: invalid status: 99`},
		{"a null-body status with a body throws", `new Response("x", {status: 204})`, `throws: TypeError: a 204 response cannot have a body`},
		{"Response.json", `const r = Response.json({a: 1}, {status: 201}); return [r.status, r.headers.get("content-type"), await r.text()]`, `[201,"application/json","{\"a\":1}"]`},
		{"Response.json of undefined throws", `Response.json(undefined)`, `throws: TypeError: the value cannot be serialized as JSON`},
		{"Response.redirect", `const r = Response.redirect("http://a/b", 301); return [r.status, r.headers.get("location")]`, `[301,"http://a/b"]`},
		{"Response.redirect defaults to 302", `return Response.redirect("http://a").status`, `302`},
		{"Response.redirect with a bad status throws", `Response.redirect("http://a", 200)`, `throws: RangeError: invalid redirect status: 200`},
		{"clone keeps status and headers", `const r = new Response("x", {status: 418, headers: {a: "1"}}).clone(); return [r.status, r.headers.get("a"), await r.text()]`, `[418,"1","x"]`},
	})
}

func TestRequestFollowsTheFetchStandard(t *testing.T) {
	runTable(t, []jsCase{
		{"defaults", `const r = new Request("http://a.b/c"); return [r.method, r.url, r.redirect, r.body, r.bodyUsed]`, `["GET","http://a.b/c","follow",null,false]`},
		{"a redirect mode is kept, and copied with the request", `const r = new Request("http://a.b/", {redirect: "manual"}); return [r.redirect, new Request(r).redirect]`, `["manual","manual"]`},
		{"an unknown redirect mode is refused", `try { new Request("http://a.b/", {redirect: "sometimes"}); return "made" } catch (e) { return e.name }`, `"TypeError"`},
		{"standard methods are upper-cased", `return [new Request("http://a", {method: "post"}).method, new Request("http://a", {method: "purge"}).method]`, `["POST","purge"]`},
		{"an invalid method throws", `new Request("http://a", {method: "a b"})`, `throws: TypeError: invalid method: a b`},
		{"a relative URL throws", `new Request("/x")`, `throws: TypeError: invalid URL: "/x" is relative and there is no base`},
		{"a GET with a body throws", `new Request("http://a", {body: "x"})`, `throws: TypeError: a GET or HEAD request cannot have a body`},
		{"a URL object as input", `return new Request(new URL("http://a/b?c")).url`, `"http://a/b?c"`},
		{"a Request from a Request moves its body", `const a = new Request("http://a", {method: "PUT", body: "x", headers: {k: "v"}}); const b = new Request(a); b.headers.set("k", "w"); return [a.bodyUsed, a.headers.get("k"), b.method, b.headers.get("k"), await b.text()]`, `[true,"v","PUT","w","x"]`},
		{"init overrides the source", `const b = new Request(new Request("http://a", {method: "POST"}), {method: "DELETE"}); return b.method`, `"DELETE"`},
		{"clone", `const a = new Request("http://a", {method: "POST", body: "x"}); const b = a.clone(); return [await a.text(), await b.text(), b.url]`, `["x","x","http://a/"]`},
	})
}

func TestEncodingAndBase64(t *testing.T) {
	runTable(t, []jsCase{
		{"encode", `return [...new TextEncoder().encode("aé€😀")]`, `[97,195,169,226,130,172,240,159,152,128]`},
		{"encoding is utf-8", `return [new TextEncoder().encoding, new TextDecoder().encoding]`, `["utf-8","utf-8"]`},
		{"decode", `return new TextDecoder().decode(new Uint8Array([97,195,169,240,159,152,128]))`, `"aé😀"`},
		{"decode a DataView of part of a buffer", `const b = new Uint8Array([0,104,105,0]); return new TextDecoder().decode(new DataView(b.buffer, 1, 2))`, `"hi"`},
		{"invalid bytes become U+FFFD", `return new TextDecoder().decode(new Uint8Array([97,255,98]))`, "\"a\uFFFDb\""},
		{"fatal throws on invalid bytes", `new TextDecoder("utf-8", {fatal: true}).decode(new Uint8Array([255]))`, `throws: TypeError: the encoded data was not valid utf-8`},
		{"the BOM is dropped", `return new TextDecoder().decode(new Uint8Array([0xEF,0xBB,0xBF,97]))`, `"a"`},
		{"stream keeps a split sequence", `const d = new TextDecoder(); return d.decode(new Uint8Array([0xE2,0x82]), {stream: true}) + d.decode(new Uint8Array([0xAC]))`, `"€"`},
		{"an unsupported label throws", `new TextDecoder("latin1")`, `throws: RangeError: unsupported encoding: latin1`},
		{"btoa", `return btoa("hello\xff")`, `"aGVsbG//"`},
		{"btoa rejects non-Latin1", `btoa("€")`, `throws: InvalidCharacterError: btoa: the string has characters outside of Latin1`},
		{"atob", `return atob("aGVsbG//")`, "\"hello\u00ff\""},
		{"atob forgives whitespace and missing padding", `return atob(" aGk ")`, `"hi"`},
		{"atob rejects bad input", `atob("a")`, `throws: InvalidCharacterError: atob: the string is not valid base64`},
		{"atob rejects bad characters", `atob("a*bc")`, `throws: InvalidCharacterError: atob: the string is not valid base64`},
	})
}

func TestCrypto(t *testing.T) {
	hex := `const hex = (b) => [...new Uint8Array(b)].map(x => x.toString(16).padStart(2, "0")).join("");`
	runTable(t, []jsCase{
		{"randomUUID is a v4 UUID", `const u = crypto.randomUUID(); return [/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(u), u !== crypto.randomUUID()]`, `[true,true]`},
		{"getRandomValues fills in place", `const a = new Uint32Array(8); const r = crypto.getRandomValues(a); return [r === a, a.some(x => x !== 0)]`, `[true,true]`},
		{"getRandomValues limits the size", `crypto.getRandomValues(new Uint8Array(65537))`, `throws: QuotaExceededError: getRandomValues is limited to 65536 bytes`},
		{"getRandomValues rejects floats", `crypto.getRandomValues(new Float64Array(1))`, `throws: TypeMismatchError: getRandomValues needs an integer typed array`},
		{"SHA-256", hex + `return hex(await crypto.subtle.digest("SHA-256", new TextEncoder().encode("abc")))`, `"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"`},
		{"SHA-1 by an algorithm object", hex + `return hex(await crypto.subtle.digest({name: "SHA-1"}, new TextEncoder().encode("abc")))`, `"a9993e364706816aba3e25717850c26c9cd0d89d"`},
		{"SHA-384", hex + `return hex(await crypto.subtle.digest("SHA-384", new Uint8Array(0))).slice(0, 16)`, `"38b060a751ac9638"`},
		{"SHA-512", hex + `return hex(await crypto.subtle.digest("sha-512", new Uint8Array(0))).slice(0, 16)`, `"cf83e1357eefb8bd"`},
		{"an unknown algorithm rejects", `await crypto.subtle.digest("MD5", new Uint8Array(0))`, `throws: NotSupportedError: digest: unsupported algorithm "MD5"`},
	})
}

func TestStructuredClone(t *testing.T) {
	runTable(t, []jsCase{
		{"plain objects and arrays are deep copies", `const a = {x: [1, {y: 2}]}; const b = structuredClone(a); b.x[1].y = 3; return [a, b]`, `[{"x":[1,{"y":2}]},{"x":[1,{"y":3}]}]`},
		{"Date", `const d = structuredClone(new Date(5)); return [d instanceof Date, d.getTime()]`, `[true,5]`},
		{"Map and Set", `const m = structuredClone(new Map([["a", new Set([1])]])); return [m instanceof Map, [...m.get("a")]]`, `[true,[1]]`},
		{"ArrayBuffer and typed arrays", `const u = new Uint8Array([1,2]); const c = structuredClone(u); c[0] = 9; return [u[0], c[0], c instanceof Uint8Array, structuredClone(u.buffer).byteLength]`, `[1,9,true,2]`},
		{"cycles are kept", `const a = {}; a.self = a; const b = structuredClone(a); return [b.self === b, b !== a]`, `[true,true]`},
		{"prototypes are dropped", `class C { constructor() { this.v = 1 } }; const c = structuredClone(Object.assign({}, new C())); return c`, `{"v":1}`},
		{"errors keep name and message", `const e = structuredClone(new TypeError("m")); return [e instanceof TypeError, e.message]`, `[true,"m"]`},
		{"a function throws DataCloneError", `try { structuredClone({f() {}}) } catch (e) { return e.name }`, `"DataCloneError"`},
		{"a symbol throws DataCloneError", `try { structuredClone(Symbol("s")) } catch (e) { return [e.name, e instanceof DOMException] }`, `["DataCloneError",true]`},
		{"a class instance becomes a plain object", `class C { constructor() { this.v = 1 } }; const c = structuredClone(new C()); return [c instanceof C, c]`, `[false,{"v":1}]`},
		{"a Go-backed or host object throws", `structuredClone(new Headers())`, `throws: DataCloneError: [object Headers] could not be cloned`},
	})
}
