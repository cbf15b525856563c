// A Workers KV namespace over the Go natives in kv.go.
(function (native) {
  "use strict";
  const decode = (buf, type) => {
    switch (type) {
      case "text": return new TextDecoder().decode(buf);
      case "json": return JSON.parse(new TextDecoder().decode(buf));
      case "arrayBuffer": return buf;
      case "stream": return new Response(buf).body;
    }
    throw new TypeError(`KV get: unknown type ${JSON.stringify(type)}: use text, json, arrayBuffer or stream`);
  };
  const types = ["text", "json", "arrayBuffer", "stream"];
  // The type is checked before the key is read: a wrong one is an error
  // whether or not the key exists.
  const typeOf = (opts) => {
    const t = typeof opts === "string" ? opts : (opts && opts.type) || "text";
    if (!types.includes(t)) throw new TypeError(`KV get: unknown type ${JSON.stringify(t)}: use text, json, arrayBuffer or stream`);
    return t;
  };
  const toBytes = async (value) => {
    if (typeof value === "string") return new TextEncoder().encode(value).buffer;
    if (value instanceof ArrayBuffer) return value;
    if (ArrayBuffer.isView(value)) return value.buffer.slice(value.byteOffset, value.byteOffset + value.byteLength);
    if (value instanceof ReadableStream) return await new Response(value).arrayBuffer();
    throw new TypeError("KV put: the value must be a string, an ArrayBuffer, an ArrayBufferView or a ReadableStream");
  };
  async function getAny(key, opts) {
    const type = typeOf(opts);
    if (Array.isArray(key)) {
      if (type !== "text" && type !== "json") throw new TypeError("KV bulk get: type must be text or json");
      const found = await native.get(key.map(String));
      const m = new Map();
      key.forEach((k, i) => m.set(String(k), found[i] === null ? null : decode(found[i].value, type)));
      return m;
    }
    const [e] = await native.get([String(key)]);
    return e === null ? null : decode(e.value, type);
  }
  class KVNamespace {
    get(key, opts) {
      // One key as text, the common case: straight to Go (the same promise, its
      // errors rejections as ever).
      if (typeof key === "string" && (opts === undefined || opts === "text")) return native.getText(key);
      return getAny(key, opts);
    }
    async getWithMetadata(key, opts) {
      const type = typeOf(opts);
      if (Array.isArray(key)) {
        const found = await native.get(key.map(String));
        const m = new Map();
        key.forEach((k, i) => m.set(String(k), found[i] === null ? null :
          { value: decode(found[i].value, type), metadata: found[i].metadata === null ? null : JSON.parse(found[i].metadata) }));
        return m;
      }
      const [e] = await native.get([String(key)]);
      if (e === null) return { value: null, metadata: null };
      return { value: decode(e.value, type), metadata: e.metadata === null ? null : JSON.parse(e.metadata) };
    }
    async put(key, value, opts = {}) {
      const meta = opts.metadata === undefined ? null : JSON.stringify(opts.metadata);
      return native.put(String(key), await toBytes(value), opts.expiration, opts.expirationTtl, meta);
    }
    async delete(key) { return native.delete(String(key)); }
    async list(opts = {}) {
      const r = JSON.parse(await native.list(String(opts.prefix ?? ""), String(opts.cursor ?? ""), Number(opts.limit ?? 1000)));
      const out = { keys: r.keys.map((k) => {
        const o = { name: k.name };
        if (k.expiration) o.expiration = k.expiration;
        if (k.metadata !== undefined) o.metadata = k.metadata;
        return o;
      }), list_complete: r.list_complete };
      if (!r.list_complete) out.cursor = r.cursor;
      return out;
    }
  }
  Object.defineProperty(KVNamespace.prototype, Symbol.toStringTag, { value: "KvNamespace" });
  return new KVNamespace();
})
