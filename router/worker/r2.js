// An R2 bucket over the Go natives in r2.go.
(function (native) {
  "use strict";
  // httpMetadata's fields and the stored header each maps to.
  const fields = [["contentType", "Content-Type"], ["contentLanguage", "Content-Language"], ["contentDisposition", "Content-Disposition"],
    ["contentEncoding", "Content-Encoding"], ["cacheControl", "Cache-Control"], ["cacheExpiry", "Expires"]];
  const fromStored = (h) => {
    const m = {};
    for (const [f, k] of fields) if (h[k] !== undefined) m[f] = f === "cacheExpiry" ? new Date(h[k]) : h[k];
    return m;
  };
  const toStored = (m) => {
    const h = {};
    if (!m) return h;
    if (m instanceof Headers) { for (const [f, k] of fields) { const v = m.get(k); if (v !== null) h[k] = v; } return h; }
    for (const [f, k] of fields) if (m[f] !== undefined) h[k] = f === "cacheExpiry" ? new Date(m[f]).toUTCString() : String(m[f]);
    return h;
  };
  class R2Object {
    constructor(i) {
      this.key = i.key; this.version = i.version; this.size = i.size; this.etag = i.etag; this.httpEtag = `"${i.etag}"`;
      this.uploaded = new Date(i.uploaded); this.httpMetadata = fromStored(i.http); this.customMetadata = i.custom;
      this.checksums = { md5: hexBuf(i.etag) };
      this.storageClass = "Standard";
      if (i.range) this.range = { offset: i.range[0], length: i.range[1] };
    }
    writeHttpMetadata(headers) {
      for (const [f, k] of fields) if (this.httpMetadata[f] !== undefined) headers.set(k, f === "cacheExpiry" ? this.httpMetadata[f].toUTCString() : this.httpMetadata[f]);
    }
  }
  class R2ObjectBody extends R2Object {
    constructor(i, handle) { super(i); this._r = new Response(handle); }
    get body() { return this._r.body; }
    get bodyUsed() { return this._r.bodyUsed; }
    arrayBuffer() { return this._r.arrayBuffer(); }
    text() { return this._r.text(); }
    json() { return this._r.json(); }
  }
  const hexBuf = (h) => { const b = new Uint8Array(h.length / 2); for (let i = 0; i < b.length; i++) b[i] = parseInt(h.substr(2 * i, 2), 16); return b.buffer; };
  const cond = (c) => {
    if (!c) return "";
    const tags = (v) => v === undefined ? [] : (Array.isArray(v) ? v : String(v).split(",")).map((t) => t.trim());
    if (c instanceof Headers) {
      return JSON.stringify({ etagMatches: tags(c.get("if-match") ?? undefined), etagDoesNotMatch: tags(c.get("if-none-match") ?? undefined),
        uploadedBefore: c.get("if-unmodified-since") ? Date.parse(c.get("if-unmodified-since")) : 0,
        uploadedAfter: c.get("if-modified-since") ? Date.parse(c.get("if-modified-since")) : 0 });
    }
    return JSON.stringify({ etagMatches: tags(c.etagMatches), etagDoesNotMatch: tags(c.etagDoesNotMatch),
      uploadedBefore: c.uploadedBefore ? new Date(c.uploadedBefore).getTime() : 0, uploadedAfter: c.uploadedAfter ? new Date(c.uploadedAfter).getTime() : 0 });
  };
  const range = (r) => {
    if (!r) return [];
    if (r instanceof Headers) {
      const m = /^bytes=(\d*)-(\d*)$/.exec(r.get("range") || "");
      if (!m) return [];
      if (m[1] === "") return [-Number(m[2])];
      return m[2] === "" ? [Number(m[1])] : [Number(m[1]), Number(m[2]) - Number(m[1]) + 1];
    }
    if (r.suffix !== undefined) return [-Number(r.suffix)];
    return r.length === undefined ? [Number(r.offset ?? 0)] : [Number(r.offset ?? 0), Number(r.length)];
  };
  class R2Bucket {
    async head(key) { const i = await native.head(String(key)); return i === null ? null : new R2Object(JSON.parse(i)); }
    async get(key, opts = {}) {
      const r = await native.get(String(key), cond(opts.onlyIf), range(opts.range));
      if (r === null) return null;
      const info = JSON.parse(r[0]);
      return r[1] === null ? new R2Object(info) : new R2ObjectBody(info, r[1]);
    }
    async put(key, value, opts = {}) {
      if (value !== null && value !== undefined && !(value instanceof ReadableStream) && typeof value !== "string" &&
        !(value instanceof ArrayBuffer) && !ArrayBuffer.isView(value)) throw new TypeError("R2 put: the value must be a ReadableStream, ArrayBuffer, ArrayBufferView, string or null");
      const carry = (body) => new Request("http://r2.invalid/", { method: "PUT", body });
      let md5 = "";
      if (opts.md5 !== undefined) md5 = typeof opts.md5 === "string" ? opts.md5 : [...new Uint8Array(opts.md5 instanceof ArrayBuffer ? opts.md5 : opts.md5.buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");
      const args = (c) => [String(key), c, toStored(opts.httpMetadata), opts.customMetadata || {}, md5, cond(opts.onlyIf)];
      let i;
      try { i = await native.put(...args(carry(value ?? null))); }
      catch (e) {
        // A stream the script made itself cannot be handed over while it runs: read it first.
        if (!(value instanceof ReadableStream) || !/inside a call/.test(String(e))) throw e;
        i = await native.put(...args(carry(await new Response(value).arrayBuffer())));
      }
      return i === null ? null : new R2Object(JSON.parse(i));
    }
    async delete(keys) { return native.delete((Array.isArray(keys) ? keys : [keys]).map(String)); }
    async list(opts = {}) {
      const r = JSON.parse(await native.list(String(opts.prefix ?? ""), String(opts.delimiter ?? ""), String(opts.cursor ?? ""), Number(opts.limit ?? 1000)));
      const include = opts.include || [];
      const objects = r.objects.map((i) => {
        const o = new R2Object(i);
        if (!include.includes("httpMetadata")) o.httpMetadata = {};
        if (!include.includes("customMetadata")) o.customMetadata = {};
        return o;
      });
      const out = { objects, truncated: r.truncated, delimitedPrefixes: r.delimitedPrefixes };
      if (r.truncated) out.cursor = r.cursor;
      return out;
    }
  }
  Object.defineProperty(R2Bucket.prototype, Symbol.toStringTag, { value: "R2Bucket" });
  return new R2Bucket();
})
