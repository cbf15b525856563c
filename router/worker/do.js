// A Durable-Object namespace over the Go natives in do.go.
(function (native, Cls) {
  "use strict";
  // Values are stored as tagged JSON: what structuredClone keeps (Date, Map,
  // Set, ArrayBuffer and typed arrays, RegExp, BigInt, undefined, NaN and
  // the infinities) comes back as it was put.
  const b64 = (u8) => { let s = ""; for (let i = 0; i < u8.length; i++) s += String.fromCharCode(u8[i]); return btoa(s); };
  const unb64 = (s) => { const t = atob(s); const u8 = new Uint8Array(t.length); for (let i = 0; i < t.length; i++) u8[i] = t.charCodeAt(i); return u8; };
  const enc = (v) => {
    if (v === undefined) return { $: "u" };
    if (typeof v === "number") return Number.isFinite(v) ? v : { $: "n", v: String(v) };
    if (typeof v === "bigint") return { $: "b", v: String(v) };
    if (v === null || typeof v === "string" || typeof v === "boolean") return v;
    if (typeof v === "function" || typeof v === "symbol") throw new DOMException(`${typeof v} could not be cloned`, "DataCloneError");
    if (v instanceof Date) return { $: "d", v: v.getTime() };
    if (v instanceof RegExp) return { $: "r", s: v.source, f: v.flags };
    if (v instanceof Map) return { $: "m", v: [...v].map(([k, x]) => [enc(k), enc(x)]) };
    if (v instanceof Set) return { $: "s", v: [...v].map(enc) };
    if (v instanceof ArrayBuffer) return { $: "a", v: b64(new Uint8Array(v)) };
    if (ArrayBuffer.isView(v)) return { $: "t", c: v.constructor.name, v: b64(new Uint8Array(v.buffer, v.byteOffset, v.byteLength)) };
    if (Array.isArray(v)) return v.map(enc);
    const o = {};
    for (const k of Object.keys(v)) o[k] = enc(v[k]);
    return "$" in o ? { $: "o", v: o } : o;
  };
  const dec = (v) => {
    if (v === null || typeof v !== "object") return v;
    if (Array.isArray(v)) return v.map(dec);
    switch (v.$) {
      case "u": return undefined;
      case "n": return Number(v.v);
      case "b": return BigInt(v.v);
      case "d": return new Date(v.v);
      case "r": return new RegExp(v.s, v.f);
      case "m": return new Map(v.v.map(([k, x]) => [dec(k), dec(x)]));
      case "s": return new Set(v.v.map(dec));
      case "a": return unb64(v.v).buffer;
      case "t": { const u8 = unb64(v.v); const C = globalThis[v.c]; return C === Uint8Array ? u8 : new C(u8.buffer); }
      case "o": { const o = {}; for (const k of Object.keys(v.v)) o[k] = dec(v.v[k]); return o; }
    }
    const o = {};
    for (const k of Object.keys(v)) o[k] = dec(v[k]);
    return o;
  };
  const ser = (v) => JSON.stringify(enc(v));
  const de = (s) => dec(JSON.parse(s));
  const keysOf = (k) => (Array.isArray(k) ? k.map(String) : [String(k)]);

  class SqlCursor {
    constructor(r) { this._r = r; this._i = 0; }
    get columnNames() { return this._r.columns; }
    get rowsRead() { return this._r.rowsRead; }
    get rowsWritten() { return this._r.rowsWritten; }
    _obj(row) { const o = {}; this._r.columns.forEach((c, i) => { o[c] = row[i]; }); return o; }
    next() { return this._i < this._r.rows.length ? { done: false, value: this._obj(this._r.rows[this._i++]) } : { done: true, value: undefined }; }
    [Symbol.iterator]() { return this; }
    toArray() { const out = []; for (const r of this) out.push(r); return out; }
    one() {
      const rest = this._r.rows.length - this._i;
      if (rest === 0) throw new Error("Expected exactly one result from SQL query, but got no results.");
      if (rest > 1) throw new Error("Expected exactly one result from SQL query, but got multiple results.");
      return this.next().value;
    }
    raw() {
      const self = this;
      return { next() { return self._i < self._r.rows.length ? { done: false, value: self._r.rows[self._i++] } : { done: true, value: undefined }; },
        [Symbol.iterator]() { return this; }, toArray() { const out = []; for (const r of this) out.push(r); return out; },
        get columnNames() { return self._r.columns; } };
    }
  }

  const listOpts = (o = {}) => ({ start: o.start, startAfter: o.startAfter, end: o.end, prefix: o.prefix, reverse: !!o.reverse, limit: o.limit });
  const makeStorage = (id) => {
    const getFrom = async (get, key) => {
      const m = await get(keysOf(key));
      if (!Array.isArray(key)) return m[String(key)] === undefined ? undefined : de(m[String(key)]);
      const out = new Map();
      for (const k of keysOf(key)) if (m[k] !== undefined) out.set(k, de(m[k]));
      return out;
    };
    const entriesOf = (key, value) => {
      const e = {};
      if (typeof key === "object" && key !== null) for (const k of Object.keys(key)) e[k] = ser(key[k]);
      else e[String(key)] = ser(value);
      return e;
    };
    const toMap = (pairs) => new Map(pairs.map(([k, v]) => [k, de(v)]));
    return {
      get: (key) => getFrom((ks) => native.get(id, ks), key),
      put: async (key, value) => { await native.put(id, entriesOf(key, value)); },
      delete: async (key) => { const n = await native.delete(id, keysOf(key)); return Array.isArray(key) ? n : n > 0; },
      list: async (o) => toMap(await native.list(id, listOpts(o))),
      deleteAll: () => native.deleteAll(id),
      transaction: async (fn) => {
        const tx = native.begin(id);
        const txn = {
          get: async (key) => getFrom(async (ks) => tx.get(ks), key),
          put: async (key, value) => { tx.put(entriesOf(key, value)); },
          delete: async (key) => { const n = tx.delete(keysOf(key)); return Array.isArray(key) ? n : n > 0; },
          list: async (o) => toMap(tx.list(listOpts(o))),
          rollback: () => tx.rollback(),
        };
        const r = await fn(txn);
        await tx.commit();
        return r;
      },
      sql: { exec: (query, ...bindings) => new SqlCursor(native.sql(id, String(query), bindings)) },
    };
  };

  class DurableObjectId {
    constructor(hex, name) { this._hex = hex; if (name !== undefined) this.name = name; }
    toString() { return this._hex; }
    equals(other) { return other instanceof DurableObjectId && other._hex === this._hex; }
  }
  // call runs one method of the object, after the calls to it before this
  // one: arguments and results are structured-cloned, as an RPC's are;
  // fetch takes and gives a Request and a Response as they are.
  const call = async (id, method, args) => {
    const release = await native.lock(id._hex);
    try {
      let blocked = null;
      const state = { id, storage: makeStorage(id._hex), blockConcurrencyWhile: (fn) => (blocked = Promise.resolve().then(fn)), waitUntil: () => {} };
      const obj = new Cls(state, native.env());
      if (blocked) await blocked;
      const fn = obj[method];
      if (typeof fn !== "function") throw new TypeError(`${String(method)} is not a method of ${Cls.name}`);
      if (method === "fetch") {
        const req = args[0] instanceof Request ? args[0] : new Request(String(args[0]), args[1]);
        return await fn.call(obj, req);
      }
      return structuredClone(await fn.apply(obj, structuredClone(args)));
    } finally {
      release();
    }
  };
  const stub = (id) => new Proxy({}, {
    get(_, prop) {
      if (prop === "id") return id;
      if (prop === "name") return id.name;
      if (typeof prop === "symbol" || prop === "then") return undefined;
      return (...args) => call(id, prop, args);
    },
  });
  class DurableObjectNamespace {
    idFromName(name) { return new DurableObjectId(native.idFromName(String(name)), String(name)); }
    idFromString(s) { return new DurableObjectId(native.idFromString(String(s))); }
    newUniqueId() { return new DurableObjectId(native.newUniqueId()); }
    get(id) { if (!(id instanceof DurableObjectId)) throw new TypeError("get: pass an id from idFromName, idFromString or newUniqueId"); return stub(id); }
    getByName(name) { return this.get(this.idFromName(name)); }
  }
  Object.defineProperty(DurableObjectNamespace.prototype, Symbol.toStringTag, { value: "DurableObjectNamespace" });
  return new DurableObjectNamespace();
})
