// Request logging: every HTTP request a sandbox makes goes to the daemon's
// log (method, host, path, then the answer's status and time), then on to
// where the sandbox sent it. console.* lines carry the request id, the
// sandbox and the function, so they join the daemon's decision records.
// Served by config.yaml next to this file.
export default {
  async outbound(request, env, ctx) {
    const url = new URL(request.url);
    console.log("request", request.method, url.host, url.pathname, "from", ctx.containerId);
    const started = Date.now();
    const response = await fetch(request); // the body streams through, never held whole
    console.log("response", response.status, url.host, `${Date.now() - started}ms`);
    return response;
  },
};
