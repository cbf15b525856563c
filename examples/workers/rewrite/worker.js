// Response rewriting: fetch what the sandbox asked for, then change a
// header and the body's text before the sandbox sees it. Text bodies only:
// anything else streams through untouched (text() would hold it whole).
// Served by config.yaml next to this file.
export default {
  async outbound(request, env, ctx) {
    const response = await fetch(request);
    const type = response.headers.get("Content-Type") ?? "";
    if (!/^(text\/|application\/(json|javascript|xml))/.test(type)) return response;
    const text = await response.text();
    const headers = new Headers(response.headers);
    headers.set("Cache-Control", "no-store");
    headers.set("X-Rewritten-By", "interceptd");
    headers.delete("Content-Length"); // the new body has its own length
    headers.delete("ETag"); // and is no longer the upstream's entity
    return new Response(text.split(env.FROM).join(env.TO), { status: response.status, statusText: response.statusText, headers });
  },
};
