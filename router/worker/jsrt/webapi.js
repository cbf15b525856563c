// The Web APIs a Worker script sees, written in JS over the Go natives in `host`
// (see host.go). State lives under Symbol keys so scripts cannot reach it by name.
(function (host, g) {
  "use strict";
  const S = Symbol("state");
  const def = (name, v) => {
    // A tag, as platform objects have, also makes structuredClone refuse them.
    if (typeof v === "function" && v.prototype) Object.defineProperty(v.prototype, Symbol.toStringTag, { value: name, configurable: true });
    Object.defineProperty(g, name, { value: v, writable: true, configurable: true });
  };
  const iter = (arr) => arr[Symbol.iterator]();

  class DOMException extends Error {
    constructor(message = "", name = "Error") { super(message); this.name = name; }
  }
  def("DOMException", DOMException);

  // --- encoding ---
  class TextEncoder {
    get encoding() { return "utf-8"; }
    encode(s = "") { return new Uint8Array(host.utf8Encode(String(s))); }
  }
  class TextDecoder {
    constructor(label = "utf-8", opts = {}) {
      if (label !== "utf-8" && !/^\s*(utf-?8|unicode-1-1-utf-8)\s*$/i.test(String(label))) throw new RangeError(`unsupported encoding: ${label}`);
      this[S] = { fatal: !!opts.fatal, ignoreBOM: !!opts.ignoreBOM, rest: null, bomSeen: false };
    }
    get encoding() { return "utf-8"; }
    get fatal() { return this[S].fatal; }
    get ignoreBOM() { return this[S].ignoreBOM; }
    decode(input, opts = {}) {
      const st = this[S];
      let b = input === undefined ? new Uint8Array(0) : toBytes(input);
      if (st.rest) { const m = new Uint8Array(st.rest.length + b.length); m.set(st.rest); m.set(b, st.rest.length); b = m; st.rest = null; }
      // The view itself: Go reads its bytes (and copies them into the string) without
      // the copy of its buffer and the property reads a slice here would cost.
      const r = host.utf8Decode(b, !!opts.stream, st.fatal);
      if (r.error) throw new TypeError("the encoded data was not valid utf-8");
      if (r.rest > 0) st.rest = b.slice(b.length - r.rest);
      let s = r.text;
      if (!st.ignoreBOM && !st.bomSeen && s.length > 0) { if (s.charCodeAt(0) === 0xfeff) s = s.slice(1); st.bomSeen = true; }
      if (!opts.stream) st.bomSeen = false;
      return s;
    }
  }
  def("TextEncoder", TextEncoder);
  const enc = new TextEncoder();
  def("TextDecoder", TextDecoder);
  def("atob", (s) => host.atob(String(s)));
  def("btoa", (s) => host.btoa(String(s)));

  function toBytes(v) {
    if (v instanceof ArrayBuffer) return new Uint8Array(v);
    if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
    throw new TypeError("expected an ArrayBuffer or an ArrayBufferView");
  }

  // --- crypto ---
  const subtle = {
    digest(alg, data) {
      try {
        const name = typeof alg === "string" ? alg : alg && alg.name;
        const b = toBytes(data);
        return Promise.resolve(host.digest(String(name), b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)));
      } catch (e) { return Promise.reject(e); }
    },
  };
  def("crypto", {
    subtle,
    randomUUID: () => host.randomUUID(),
    getRandomValues(a) {
      if (!ArrayBuffer.isView(a) || a instanceof Float32Array || a instanceof Float64Array || a instanceof DataView)
        throw new DOMException("getRandomValues needs an integer typed array", "TypeMismatchError");
      if (a.byteLength > 65536) throw new DOMException("getRandomValues is limited to 65536 bytes", "QuotaExceededError");
      new Uint8Array(a.buffer, a.byteOffset, a.byteLength).set(new Uint8Array(host.randomBytes(a.byteLength)));
      return a;
    },
  });

  // --- structuredClone ---
  function clone(v, seen) {
    if (typeof v === "function" || typeof v === "symbol") throw new DOMException(`${String(v)} could not be cloned`, "DataCloneError");
    if (v === null || typeof v !== "object") return v;
    if (seen.has(v)) return seen.get(v);
    let out;
    const tag = Object.prototype.toString.call(v);
    if (v instanceof Date) out = new Date(v.getTime());
    else if (v instanceof RegExp) out = new RegExp(v.source, v.flags);
    else if (v instanceof ArrayBuffer) out = v.slice(0);
    else if (ArrayBuffer.isView(v)) {
      const buf = clone(v.buffer, seen);
      out = v instanceof DataView ? new DataView(buf, v.byteOffset, v.byteLength) : new v.constructor(buf, v.byteOffset, v.length);
    } else if (v instanceof Map) { out = new Map(); seen.set(v, out); v.forEach((x, k) => out.set(clone(k, seen), clone(x, seen))); return out; }
    else if (v instanceof Set) { out = new Set(); seen.set(v, out); v.forEach((x) => out.add(clone(x, seen))); return out; }
    else if (v instanceof Error) { out = new (g[v.name] && g[v.name].prototype instanceof Error ? g[v.name] : Error)(v.message); }
    else if (tag === "[object Boolean]" || tag === "[object Number]" || tag === "[object String]") out = Object(v.valueOf());
    else if (Array.isArray(v)) { out = new Array(v.length); seen.set(v, out); for (const k of Object.keys(v)) out[k] = clone(v[k], seen); return out; }
    else if (tag === "[object Object]") { out = {}; seen.set(v, out); for (const k of Object.keys(v)) out[k] = clone(v[k], seen); return out; }
    else throw new DOMException(`${tag} could not be cloned`, "DataCloneError");
    seen.set(v, out);
    return out;
  }
  def("structuredClone", (v) => clone(v, new Map()));

  // --- console ---
  function fmt(a) {
    if (typeof a === "string") return a;
    if (a instanceof Error) return a.stack || String(a);
    if (typeof a === "object" && a !== null) { try { return JSON.stringify(a); } catch (e) { return String(a); } }
    return String(a);
  }
  const log = (level) => (...args) => host.log(level, args.map(fmt).join(" "));
  def("console", { log: log("info"), info: log("info"), debug: log("debug"), trace: log("debug"), warn: log("warn"), error: log("error") });

  // --- timers ---
  def("setTimeout", (fn, ms, ...args) => host.setTimeout(() => fn(...args), Number(ms) || 0));
  // Intervals re-arm a timer under a stable id; like timers they live as long as the Call.
  const intervals = new Map();
  let nextInterval = 0;
  def("setInterval", (fn, ms, ...args) => {
    const id = --nextInterval; // negative: apart from setTimeout's ids
    const arm = () => intervals.set(id, host.setTimeout(() => { arm(); fn(...args); }, Number(ms) || 0));
    arm();
    return id;
  });
  def("clearTimeout", (id) => {
    id = Number(id) || 0;
    if (intervals.has(id)) { host.clearTimeout(intervals.get(id)); intervals.delete(id); } else host.clearTimeout(id);
  });
  def("clearInterval", g.clearTimeout);
  def("queueMicrotask", (fn) => { Promise.resolve().then(() => fn()); });

  // --- URLSearchParams ---
  const formEnc = (s) => encodeURIComponent(s).replace(/[!'()~]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase()).replace(/%20/g, "+");
  const formDec = (s) => { s = s.replace(/\+/g, " "); try { return decodeURIComponent(s); } catch (e) { return host.percentDecode(s); } };
  class URLSearchParams {
    constructor(init = "") {
      const l = (this[S] = { list: [], url: null }).list;
      if (init instanceof URLSearchParams) l.push(...init[S].list.map((p) => p.slice()));
      else if (typeof init === "object" && init !== null && typeof init[Symbol.iterator] === "function") {
        for (const p of init) { const a = [...p]; if (a.length !== 2) throw new TypeError("each pair needs two items"); l.push([String(a[0]), String(a[1])]); }
      } else if (typeof init === "object" && init !== null) { for (const k of Object.keys(init)) l.push([k, String(init[k])]); }
      else this[S].list = parseForm(String(init));
    }
    get size() { return this[S].list.length; }
    append(k, v) { this[S].list.push([String(k), String(v)]); this._update(); }
    delete(k, v) { k = String(k); this[S].list = this[S].list.filter((p) => !(p[0] === k && (v === undefined || p[1] === String(v)))); this._update(); }
    get(k) { const p = this[S].list.find((p) => p[0] === String(k)); return p ? p[1] : null; }
    getAll(k) { return this[S].list.filter((p) => p[0] === String(k)).map((p) => p[1]); }
    has(k, v) { return this[S].list.some((p) => p[0] === String(k) && (v === undefined || p[1] === String(v))); }
    set(k, v) {
      k = String(k); const l = this[S].list; const i = l.findIndex((p) => p[0] === k);
      if (i < 0) l.push([k, String(v)]); else { l[i][1] = String(v); this[S].list = l.filter((p, j) => j <= i || p[0] !== k); }
      this._update();
    }
    sort() { this[S].list.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)); this._update(); }
    forEach(fn, self) { for (const [k, v] of this[S].list) fn.call(self, v, k, this); }
    keys() { return iter(this[S].list.map((p) => p[0])); }
    values() { return iter(this[S].list.map((p) => p[1])); }
    entries() { return iter(this[S].list.map((p) => p.slice())); }
    [Symbol.iterator]() { return this.entries(); }
    toString() { return this[S].list.map((p) => formEnc(p[0]) + "=" + formEnc(p[1])).join("&"); }
    _update() { const u = this[S].url; if (u) { const s = this.toString(); u[S].search = s ? "?" + s : ""; } }
  }
  Object.defineProperty(URLSearchParams.prototype, "_update", { enumerable: false });
  function parseForm(s) {
    if (s[0] === "?") s = s.slice(1);
    return s.split("&").filter((x) => x !== "").map((x) => { const i = x.indexOf("="); return i < 0 ? [formDec(x), ""] : [formDec(x.slice(0, i)), formDec(x.slice(i + 1))]; });
  }
  def("URLSearchParams", URLSearchParams);

  // --- URL (parsing in Go, see host.parseURL) ---
  const URLParts = ["protocol", "username", "password", "hostname", "port", "pathname", "search", "hash"];
  // Parses of absolute URLs, by their text: a handler parses request.url on every
  // request, and the same few URLs come again and again. Each URL gets its own copy
  // (its setters change it). Bounded in entries and in the length of what it keeps.
  const parsed = new Map();
  const copyParts = (r) => ({ params: null, protocol: r.protocol, username: r.username, password: r.password, hostname: r.hostname, port: r.port, pathname: r.pathname, search: r.search, hash: r.hash, opaque: r.opaque });
  function parseURL(url, base) {
    if (base === undefined) {
      const c = parsed.get(url);
      if (c !== undefined) return copyParts(c);
    }
    const r = host.parseURL(url, base);
    if (typeof r === "string") throw new TypeError(`invalid URL: ${r}`);
    if (base === undefined && url.length <= 2048) {
      if (parsed.size >= 256) parsed.clear();
      parsed.set(url, r);
    }
    return copyParts(r);
  }
  class URL {
    constructor(url, base) {
      this[S] = parseURL(String(url), base === undefined ? undefined : String(base));
    }
    static canParse(url, base) { return typeof host.parseURL(String(url), base === undefined ? undefined : String(base)) !== "string"; }
    get href() {
      const r = this[S];
      const auth = r.username || r.password ? r.username + (r.password ? ":" + r.password : "") + "@" : "";
      return r.protocol + (r.opaque ? "" : "//" + auth + this.host) + r.pathname + r.search + r.hash;
    }
    set href(v) { const u = new URL(v); this._set(u); }
    get origin() { const r = this[S]; return r.opaque || !host.specialPort(r.protocol) ? "null" : r.protocol + "//" + this.host; }
    get host() { const r = this[S]; return r.hostname + (r.port ? ":" + r.port : ""); }
    set host(v) { this._reparse({ host: String(v) }); }
    get searchParams() {
      // Made on first use: most handlers never look, and it is the costly part of a URL.
      const st = this[S];
      if (!st.params) { st.params = new URLSearchParams(st.search); st.params[S].url = this; }
      return st.params;
    }
    set search(v) { v = String(v); this._reparse({ search: v === "" || v === "?" ? "" : v[0] === "?" ? v : "?" + v }); }
    set hash(v) { v = String(v); this._reparse({ hash: v === "" || v === "#" ? "" : v[0] === "#" ? v : "#" + v }); }
    toString() { return this.href; }
    toJSON() { return this.href; }
    _reparse(change) {
      const r = Object.assign({}, this[S], change);
      const host = change.host !== undefined ? change.host : r.hostname + (r.port ? ":" + r.port : "");
      const auth = r.username || r.password ? r.username + (r.password ? ":" + r.password : "") + "@" : "";
      try { this._set(new URL(r.protocol + (r.opaque ? "" : "//" + auth + host) + r.pathname + r.search + r.hash)); } catch (e) { /* WHATWG setters ignore invalid values */ }
    }
    _set(u) { const p = this[S].params; this[S] = u[S]; this[S].params = p; if (p) p[S].list = parseForm(this[S].search); }
  }
  for (const k of URLParts) {
    const d = Object.getOwnPropertyDescriptor(URL.prototype, k) || {};
    Object.defineProperty(URL.prototype, k, {
      get: d.get || function () { return this[S][k]; },
      set: d.set || function (v) {
        v = String(v);
        if (k === "protocol") v = v.replace(/:.*$/, "") + ":";
        if (k === "pathname" && v[0] !== "/" && !this[S].opaque) v = "/" + v;
        if (k === "port") v = v.replace(/[^0-9].*$/, "");
        this._reparse({ [k]: v });
      },
      configurable: true,
    });
  }
  for (const k of ["_reparse", "_set"]) Object.defineProperty(URL.prototype, k, { enumerable: false });
  def("URL", URL);

  // --- Headers ---
  const token = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
  // Checks are a good part of a request's cost in goja, so skip the ones a string needs not.
  const names = new Set();
  const isToken = (k) => names.has(k) || (token.test(k) && (names.size < 1000 && names.add(k), true));
  const ws = (c) => c === 9 || c === 10 || c === 13 || c === 32;
  const normValue = (v) => {
    v = String(v);
    return v.length && (ws(v.charCodeAt(0)) || ws(v.charCodeAt(v.length - 1))) ? v.replace(/^[\t\n\r ]+|[\t\n\r ]+$/g, "") : v;
  };
  class Headers {
    constructor(init) {
      this[S] = { list: [], guard: false };
      if (init == null) return;
      if (init instanceof Headers) { this[S].list = init[S].list.map((p) => p.slice()); return; }
      if (typeof init !== "object") throw new TypeError("Headers init must be an object or an iterable of pairs");
      if (typeof init[Symbol.iterator] === "function") {
        for (const p of init) { const a = [...p]; if (a.length !== 2) throw new TypeError("each header pair needs two items"); this.append(a[0], a[1]); }
      } else for (const k of Object.keys(init)) this.append(k, init[k]);
    }
    _check(k, v) {
      if (!isToken(k)) throw new TypeError(`invalid header name: ${JSON.stringify(k)}`);
      if (v !== undefined && /[\0\r\n]|[^\0-\xff]/.test(v)) throw new TypeError(`invalid value for header ${k}`);
      if (this[S].guard) throw new TypeError("headers are immutable");
    }
    append(k, v) { k = String(k); v = normValue(v); this._check(k, v); this[S].list.push([k.toLowerCase(), v]); }
    set(k, v) {
      k = String(k); v = normValue(v); this._check(k, v); const n = k.toLowerCase(); const l = this[S].list;
      const i = l.findIndex((p) => p[0] === n);
      if (i < 0) l.push([n, v]); else { l[i][1] = v; this[S].list = l.filter((p, j) => j <= i || p[0] !== n); }
    }
    delete(k) { k = String(k); this._check(k); const n = k.toLowerCase(); this[S].list = this[S].list.filter((p) => p[0] !== n); }
    get(k) { k = String(k); if (!isToken(k)) throw new TypeError(`invalid header name: ${JSON.stringify(k)}`); const vs = this._all(k.toLowerCase()); return vs.length ? vs.join(", ") : null; }
    getSetCookie() { return this._all("set-cookie"); }
    has(k) { k = String(k); if (!isToken(k)) throw new TypeError(`invalid header name: ${JSON.stringify(k)}`); return this._all(k.toLowerCase()).length > 0; }
    _all(n) {
      const l = this[S].list, out = [];
      for (let i = 0; i < l.length; i++) if (l[i][0] === n) out.push(l[i][1]);
      return out;
    }
    _sorted() {
      const names = [...new Set(this[S].list.map((p) => p[0]))].sort();
      const out = [];
      for (const n of names) { if (n === "set-cookie") for (const v of this._all(n)) out.push([n, v]); else out.push([n, this._all(n).join(", ")]); }
      return out;
    }
    forEach(fn, self) { for (const [k, v] of this._sorted()) fn.call(self, v, k, this); }
    entries() { return iter(this._sorted()); }
    keys() { return iter(this._sorted().map((p) => p[0])); }
    values() { return iter(this._sorted().map((p) => p[1])); }
    [Symbol.iterator]() { return this.entries(); }
  }
  for (const k of ["_check", "_all", "_sorted"]) Object.defineProperty(Headers.prototype, k, { enumerable: false });
  def("Headers", Headers);

  // --- ReadableStream: a pull-based queue; a Go-backed stream keeps its host handle so that
  // fetch() and ToResponse pass the io.Reader on instead of copying it through JS. ---
  class ReadableStream {
    constructor(source = {}, _next) {
      const st = (this[S] = { q: [], closed: false, err: null, locked: false, go: null, next: _next || null, disturbed: false });
      if (_next) return;
      const ctl = {
        enqueue: (c) => st.q.push(typeof c === "string" ? enc.encode(c) : toBytes(c)),
        close: () => { st.closed = true; },
        error: (e) => { st.err = e; },
        get desiredSize() { return 1; },
      };
      if (source.start) source.start(ctl);
      st.next = async () => {
        while (!st.q.length && !st.closed && !st.err && source.pull) await source.pull(ctl);
        if (st.err) throw st.err;
        return st.q.length ? st.q.shift() : null;
      };
      if (!source.pull) {
        const n = st.next;
        st.next = () => { if (!st.q.length && !st.closed && !st.err) return Promise.reject(new TypeError("stream stalled: no pull source and not closed")); return n(); };
      }
    }
    get locked() { return this[S].locked; }
    getReader() {
      const st = this[S];
      if (st.locked) throw new TypeError("the stream is locked to a reader");
      st.locked = true;
      return {
        read: async () => { st.disturbed = true; const v = await st.next(); return v === null ? { value: undefined, done: true } : { value: v, done: false }; },
        releaseLock: () => { st.locked = false; },
        cancel: async () => { st.disturbed = true; st.next = async () => null; if (st.go) host.close(st.go); },
        closed: Promise.resolve(),
      };
    }
    cancel() { return this.getReader().cancel(); }
    tee() {
      const r = this.getReader(); const qs = [[], []]; let done = false; let chain = Promise.resolve();
      const pull = (i) => (chain = chain.then(async () => {
        if (qs[i].length) return qs[i].shift();
        if (done) return null;
        const x = await r.read();
        if (x.done) { done = true; return null; }
        qs[1 - i].push(x.value); return x.value;
      }));
      return [new ReadableStream(null, () => pull(0)), new ReadableStream(null, () => pull(1))];
    }
    [Symbol.asyncIterator]() { const r = this.getReader(); return { next: () => r.read(), return: async () => { r.releaseLock(); return { done: true }; } }; }
  }
  const goStream = (h) => { const s = new ReadableStream(null, () => host.read(h)); s[S].go = h; return s; };
  const bytesStream = (b) => { let sent = false; return new ReadableStream(null, async () => { if (sent) return null; sent = true; return b; }); };
  def("ReadableStream", ReadableStream);

  // --- bodies ---
  // A body is null, a string (encoded when read as bytes: most are handed to Go, which
  // takes the string as it is), a Uint8Array, a ReadableStream, or a Go stream's handle
  // not yet wrapped in one (a request's or a fetch response's: most go back to Go unread).
  const isGo = (b) => b !== null && typeof b === "object" && !(b instanceof ReadableStream) && !(b instanceof Uint8Array);
  function extract(body) {
    if (body == null) return [null, null];
    if (body instanceof ReadableStream) return [body, null];
    if (typeof body === "string") return [body, "text/plain;charset=UTF-8"];
    if (body instanceof URLSearchParams) return [enc.encode(body.toString()), "application/x-www-form-urlencoded;charset=UTF-8"];
    if (body instanceof ArrayBuffer || ArrayBuffer.isView(body)) return [toBytes(body).slice(), null];
    if (host.isHandle(body)) return [goStream(body), null];
    return [enc.encode(String(body)), "text/plain;charset=UTF-8"];
  }
  async function readAll(b) {
    if (b === null) return new Uint8Array(0);
    if (typeof b === "string") return enc.encode(b);
    if (b instanceof Uint8Array) return b;
    if (isGo(b)) b = goStream(b);
    const r = b.getReader(); const parts = []; let n = 0;
    for (;;) { const x = await r.read(); if (x.done) break; parts.push(x.value); n += x.value.length; }
    const out = new Uint8Array(n); let o = 0;
    for (const p of parts) { out.set(p, o); o += p.length; }
    return out;
  }
  class Body {
    get body() {
      const st = this[S];
      if (typeof st.body === "string") st.body = bytesStream(enc.encode(st.body));
      else if (st.body instanceof Uint8Array) st.body = bytesStream(st.body);
      else if (isGo(st.body)) st.body = goStream(st.body);
      return st.body;
    }
    get bodyUsed() { const b = this[S].body; return this[S].used || (b instanceof ReadableStream && b[S].disturbed); }
    _take() {
      if (this.bodyUsed) return Promise.reject(new TypeError("body already used"));
      if (this[S].body instanceof ReadableStream && this[S].body.locked) return Promise.reject(new TypeError("body stream is locked"));
      this[S].used = true;
      return readAll(this[S].body);
    }
    async arrayBuffer() { const b = await this._take(); return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength); }
    async bytes() { return new Uint8Array(await this.arrayBuffer()); }
    async text() { return new TextDecoder().decode(await this._take()); }
    async json() { return JSON.parse(await this.text()); }
    _cloneBody() {
      const st = this[S];
      if (this.bodyUsed) throw new TypeError("cannot clone a used body");
      if (isGo(st.body)) st.body = goStream(st.body);
      if (st.body instanceof ReadableStream) { const [a, b] = st.body.tee(); st.body = a; return b; }
      return st.body;
    }
  }
  for (const k of ["_take", "_cloneBody"]) Object.defineProperty(Body.prototype, k, { enumerable: false });
  function initBody(self, body, headers, nullBodyError) {
    if (body == null) return;
    let b = body, type = "text/plain;charset=UTF-8";
    if (typeof body !== "string") { const e = extract(body); b = e[0]; type = e[1]; }
    if (nullBodyError) throw new TypeError(nullBodyError);
    self[S].body = b;
    // Internal calls: the name is known valid, so skip the checks of has/set.
    if (type && !hasField(headers[S].list, "content-type")) headers[S].list.push(["content-type", type]);
  }
  const hasField = (l, n) => { for (let i = 0; i < l.length; i++) if (l[i][0] === n) return true; return false; };

  const methods = ["DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH"];
  class Request extends Body {
    constructor(input, init = {}) {
      super();
      const src = input instanceof Request ? input : null;
      let method = init.method !== undefined ? String(init.method) : src ? src.method : "GET";
      if (!token.test(method)) throw new TypeError(`invalid method: ${method}`);
      if (methods.includes(method.toUpperCase())) method = method.toUpperCase();
      const url = src ? src.url : new URL(String(input)).href;
      const headers = new Headers(init.headers !== undefined ? init.headers : src ? src.headers : undefined);
      const redirect = init.redirect !== undefined ? String(init.redirect) : src ? src.redirect : "follow";
      if (redirect !== "follow" && redirect !== "manual" && redirect !== "error") throw new TypeError(`invalid redirect mode: ${redirect}`);
      this[S] = { method, url, headers, body: null, used: false, redirect, signal: init.signal || (src ? src.signal : null) };
      const noBody = method === "GET" || method === "HEAD";
      if (init.body != null) initBody(this, init.body, headers, noBody && "a GET or HEAD request cannot have a body");
      else if (src && src[S].body !== null) {
        if (src.bodyUsed) throw new TypeError("the source request's body is already used");
        if (noBody) throw new TypeError("a GET or HEAD request cannot have a body");
        this[S].body = src[S].body; // the body moves: the source request's is used up
        src[S].body = null; src[S].used = true;
      }
    }
    get method() { return this[S].method; }
    get url() { return this[S].url; }
    get headers() { return headersOf(this[S]); }
    get redirect() { return this[S].redirect; }
    get signal() { return this[S].signal; }
    clone() {
      const b = this._cloneBody(), own = this[S].body;
      this[S].body = null; // so that the constructor does not move it
      const r = new Request(this);
      this[S].body = own; r[S].body = b;
      return r;
    }
  }
  def("Request", Request);
  // A request or a response from Go (lazyRequest, newResponse) keeps its header fields in
  // Go (a handle, st.lazy) and builds its Headers only when the script first looks: most
  // handlers never do, and building them is a good part of a request's cost in goja;
  // until then parts hands the handle back to Go as it is. The fields a server would not
  // have accepted are dropped, as the Headers of newRequest drop them (and Go does the
  // same for a handle it gets back: http.go, lazyHeaders).
  function headersOf(st) {
    if (st.headers === null && st.lazy) {
      const h = new Headers(), l = host.headerList(st.lazy);
      st.lazy = null;
      for (let i = 0; i + 1 < l.length; i += 2) {
        try { h.append(l[i], l[i + 1]); } catch (e) { /* a field the http server would not pass */ }
      }
      st.headers = h;
    }
    return st.headers;
  }

  class Response extends Body {
    constructor(body = null, init = undefined) {
      super();
      let status = 200, statusText = "", hinit;
      if (init != null) {
        if (init.status !== undefined) {
          status = Number(init.status);
          if (!(status >= 200 && status <= 599) || status !== Math.floor(status)) throw new RangeError(`invalid status: ${init.status}`);
        }
        if (init.statusText !== undefined) {
          statusText = String(init.statusText);
          if (statusText && /[\r\n]/.test(statusText)) throw new TypeError("invalid statusText");
        }
        hinit = init.headers;
      }
      const headers = new Headers(hinit);
      this[S] = { status, statusText, headers, body: null, used: false, url: "", redirected: false, type: "default" };
      initBody(this, body, headers, status < 200 || status === 204 || status === 205 || status === 304 ? `a ${status} response cannot have a body` : false);
    }
    static json(data, init = {}) {
      const s = JSON.stringify(data);
      if (s === undefined) throw new TypeError("the value cannot be serialized as JSON");
      const r = new Response(s, init);
      r.headers.set("content-type", "application/json");
      return r;
    }
    static redirect(url, status = 302) {
      if (![301, 302, 303, 307, 308].includes(status)) throw new RangeError(`invalid redirect status: ${status}`);
      return new Response(null, { status, headers: { location: new URL(String(url)).href } });
    }
    static error() { const r = new Response(null, { status: 200 }); r[S].status = 0; r[S].type = "error"; return r; }
    get status() { return this[S].status; }
    get statusText() { return this[S].statusText; }
    get ok() { return this[S].status >= 200 && this[S].status <= 299; }
    get headers() { return headersOf(this[S]); }
    get url() { return this[S].url; }
    get redirected() { return this[S].redirected; }
    get type() { return this[S].type; }
    clone() {
      const r = new Response(null, { status: 200 });
      Object.assign(r[S], this[S], { headers: new Headers(headersOf(this[S])), lazy: null, body: this._cloneBody(), used: false });
      return r;
    }
  }
  def("Response", Response);

  // Boundary helpers for Go (http.go): a body on the wire is null, bytes (a Uint8Array, or an ArrayBuffer), a Go handle
  // (passed on, never copied), a JS stream's reader that Go pulls through the loop (live,
  // inside a Call), or a promise of its bytes (between Calls).
  function wire(body, live) {
    if (body instanceof ReadableStream) {
      if (body[S].go && !body[S].disturbed && !body.locked) { body[S].disturbed = true; return body[S].go; }
      if (live) return body.getReader();
      return readAll(body).then((b) => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
    }
    // Bytes go as the Uint8Array itself; Go copies them (wireReader).
    return body;
  }
  function parts(m, live) {
    const st = m[S];
    if (m.bodyUsed) throw new TypeError("body already used");
    const body = wire(st.body, live);
    st.used = body !== null;
    if (st.headers === null && st.lazy) return { headers: st.lazy, body };
    // An index loop: a for-of with destructuring costs an iterator and an array per field.
    const list = st.headers[S].list, headers = [];
    for (let i = 0; i < list.length; i++) headers.push(list[i][0], list[i][1]);
    return { headers, body };
  }
  host.exports({
    newRequest(method, url, headers, body) {
      const h = new Headers();
      for (let i = 0; i + 1 < headers.length; i += 2) {
        try { h.append(headers[i], headers[i + 1]); } catch (e) { /* a field the http server would not pass */ }
      }
      const r = new Request(url, { method, headers: h });
      if (body !== null) r[S].body = goStream(body);
      return r;
    },
    // lazyRequest is newRequest for a method and URL Go has checked and normalised
    // already (http.go: NewRequest), with the header fields left to headersOf.
    lazyRequest(method, url, headers, body) {
      const r = Object.create(Request.prototype);
      r[S] = { method, url, headers: null, lazy: headers, body, used: false, redirect: "follow", signal: null };
      return r;
    },
    // newResponse is a fetch()'s response: its header fields (a handle) and its body (a
    // Go stream's handle, or null) stay in Go until the script looks.
    newResponse(status, statusText, headers, body, url) {
      const r = Object.create(Response.prototype);
      r[S] = { status, statusText, headers: null, lazy: headers, body, used: false, url, redirected: false, type: "default" };
      return r;
    },
    responseParts(v) {
      if (!(v instanceof Response)) throw new TypeError("the handler did not return a Response");
      const p = parts(v);
      p.status = v.status;
      p.statusText = v.statusText;
      return p;
    },
    requestParts: (v, live) => parts(v, live),
    stream: (h) => goStream(h),
    bodyOf(v) {
      if (v instanceof Request || v instanceof Response) return parts(v, true).body;
      if (v instanceof ReadableStream && (v.locked || v[S].disturbed)) throw new TypeError("the stream is locked or already read");
      return wire(extract(v)[0], true);
    },
    isRequest: (v) => v instanceof Request,
  });
  def("fetch", (input, init) => {
    try {
      // fetch(request) as it came, the common case: what new Request(request) would
      // copy, taken from it directly (its body moves all the same: parts marks it used).
      const r = init === undefined && input instanceof Request ? input : new Request(input, init);
      const p = parts(r, true);
      return host.fetch(r.method, r.url, p.headers, p.body, r.redirect);
    } catch (e) { return Promise.reject(e); }
  });
})
