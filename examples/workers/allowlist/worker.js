// An allowlist in a worker: a sandbox reaches only the hosts ALLOWED_HOSTS
// names (exact names, or "*.example.com" for any name under example.com);
// any other host gets a JSON body that says why, as an API client expects.
// Served by config.yaml next to this file.
export default {
  async outbound(request, env, ctx) {
    const host = new URL(request.url).hostname;
    if (allowed(hostsOf(env.ALLOWED_HOSTS), host)) return fetch(request); // on to the original destination
    console.warn("allowlist: denied", host);
    return Response.json(
      { error: "host_not_allowed", host, sandbox: ctx.containerId },
      { status: 403, headers: { "Cache-Control": "no-store" } },
    );
  },
};

// The list is parsed once per runtime and kept in a module global: a
// runtime serves many requests in turn (like a Workers isolate), so what a
// global holds outlives the request that made it.
let parsed = null;
function hostsOf(list) {
  if (parsed === null || parsed.list !== list) {
    const names = list.split(/[\s,]+/).filter(Boolean).map((h) => h.toLowerCase());
    parsed = { list, names };
  }
  return parsed.names;
}

function allowed(names, host) {
  return names.some((n) => (n.startsWith("*.") ? host.endsWith(n.slice(1)) && host.length > n.length - 1 : host === n));
}
