// The seed worker: the examples of interceptd's outbound Workers, as a
// sandbox sees them. Served by config.yaml next to this file.
export default {
  // Any HTTP request a sandbox makes that no per-host function takes.
  async outbound(request, env, ctx) {
    if (new URL(request.url).hostname.endsWith(".internal")) return new Response("no", { status: 403 });
    return fetch(request); // on to the original destination
  },
  outboundByHost: {
    "my.kv": async (request, env, ctx) => {
      const key = new URL(request.url).pathname.slice(1);
      const value = await env.KV.get(key);
      return new Response(value ?? "", { status: value ? 200 : 404 });
    },
    "my.r2": async (request, env, ctx) => {
      const key = new URL(request.url).pathname.slice(1);
      const object = await env.BUCKET.get(key);
      return new Response(object?.body ?? "", { status: object ? 200 : 404 });
    },
    "get-state.do": async (request, env, ctx) => {
      const stub = env.MY_CONTAINER.get(env.MY_CONTAINER.idFromString(ctx.containerId));
      return new Response(JSON.stringify(await stub.getStateForKey(await request.text())));
    },
    "api.github.com": async (request, env, ctx) => { // credential injection
      const r = new Request(request);
      r.headers.set("Authorization", `Bearer ${env.GITHUB_TOKEN}`);
      return fetch(r);
    },
  },
};

// A Durable-Object class: one instance per id, its state in state.storage.
export class MyContainer {
  constructor(state, env) {
    this.state = state;
  }
  async getStateForKey(key) {
    return (await this.state.storage.get(key)) ?? null;
  }
}
