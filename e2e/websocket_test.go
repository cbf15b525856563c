package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The WebSocket tests run Debian's python3-websockets on both ends: a real
// client inside the sandbox's namespace (ip netns exec) and the test's own
// server in the upstream namespace. /usr/bin/python3, not whatever python3
// is first in PATH: the Debian package installs for the system's.
const (
	wsPython   = "/usr/bin/python3"
	wsIP       = "192.0.2.6" // the upstream namespace's WebSocket server, port 80
	wsToken    = "s3cret-ws-e2e"
	wsIdle     = 3 * time.Second
	wsProxy    = "ws.api.test"
	wsIdleNote = "upgrade_idle_timeout"
)

// wsServer: any path echoes each message back as "echo:<message>"; a path
// under /need-token only with the token the proxy injects (403 without);
// and the 101 reflects the Authorization it got in X-Echo-Auth, as a
// careless service would, so that a leak would show. No pings from
// either side: the idle timeout must see an idle stream.
const wsServer = `
import asyncio, http, sys
import websockets

TOKEN = sys.argv[2]

async def process_request(path, headers):
    if path.startswith("/need-token") and headers.get("Authorization") != "Bearer " + TOKEN:
        return (http.HTTPStatus.FORBIDDEN, [], b"no token\n")
    return None

def extra_headers(path, headers):
    return [("X-Echo-Auth", headers.get("Authorization", "none")), ("X-Echo-Path", path)]

async def handler(ws, path):
    async for m in ws:
        await ws.send("echo:" + m)

async def main():
    async with websockets.serve(handler, sys.argv[1], 80, process_request=process_request,
                                extra_headers=extra_headers, ping_interval=None, compression=None):
        print("ready", flush=True)
        await asyncio.Future()

asyncio.run(main())
`

// wsClient takes its orders as JSON (uri; connect: an address to dial in
// place of the URI's host, which stays the Host; cafile; send: messages;
// wait_close: seconds to wait for the daemon to close) and prints what
// happened as JSON (wsResult).
const wsClient = `
import asyncio, json, ssl, sys, time
import websockets

async def main():
    a = json.loads(sys.argv[1])
    kw = dict(ping_interval=None, open_timeout=10, close_timeout=2, compression=None)
    if a.get("connect"):
        kw["host"], kw["port"] = a["connect"], 80
    if a.get("cafile"):
        kw["ssl"] = ssl.create_default_context(cafile=a["cafile"])
    out = {"status": 0, "headers": [], "echo": []}
    try:
        async with websockets.connect(a["uri"], **kw) as ws:
            out["status"] = 101
            out["headers"] = [[k, v] for k, v in ws.response_headers.raw_items()]
            for m in a.get("send", []):
                await ws.send(m)
                out["echo"].append(await asyncio.wait_for(ws.recv(), 5))
            if a.get("wait_close"):
                t0 = time.monotonic()
                try:
                    await asyncio.wait_for(ws.recv(), a["wait_close"])
                    out["closed"] = "a message came"
                except websockets.exceptions.ConnectionClosed:
                    out["closed"] = "closed"
                except asyncio.TimeoutError:
                    out["closed"] = "still open"
                out["closed_after"] = time.monotonic() - t0
    except websockets.exceptions.InvalidStatusCode as e:
        out["status"] = e.status_code
        out["headers"] = [[k, v] for k, v in e.headers.raw_items()]
    except Exception as e:
        out["error"] = repr(e)
    print(json.dumps(out))

asyncio.run(main())
`

// wsOrder is what the client is told to do.
type wsOrder struct {
	URI       string   `json:"uri"`
	Connect   string   `json:"connect,omitempty"`
	CAFile    string   `json:"cafile,omitempty"`
	Send      []string `json:"send,omitempty"`
	WaitClose float64  `json:"wait_close,omitempty"`
}

// wsResult is what the client saw.
type wsResult struct {
	Status      int        `json:"status"`
	Headers     [][]string `json:"headers"`
	Echo        []string   `json:"echo"`
	Closed      string     `json:"closed"`
	ClosedAfter float64    `json:"closed_after"`
	Error       string     `json:"error"`
}

// header returns the first value of a response header the client saw.
func (r wsResult) header(name string) string {
	for _, kv := range r.Headers {
		if strings.EqualFold(kv[0], name) {
			return kv[1]
		}
	}
	return ""
}

// requireWebsockets fails the test without Debian's python3-websockets (.ci/test
// installs it).
func requireWebsockets(t *testing.T) {
	t.Helper()
	if err := exec.Command(wsPython, "-c", "import websockets").Run(); err != nil {
		t.Fatalf("python3-websockets is not installed for %s: run .ci/test, or apt-get install python3-websockets", wsPython)
	}
}

// startWSServer runs the WebSocket server on wsIP:80 in the upstream
// namespace until the test ends.
func (e *Env) startWSServer(t *testing.T) {
	t.Helper()
	run(t, "ip", "-n", e.UpNS, "addr", "add", wsIP+"/24", "dev", "eth0")
	script := filepath.Join(t.TempDir(), "ws_server.py")
	os.WriteFile(script, []byte(wsServer), 0o644)
	cmd := exec.Command("ip", "netns", "exec", e.UpNS, wsPython, script, wsIP, wsToken)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	ready := make(chan bool, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- line == "ready\n"
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("the WebSocket server did not start: %s", stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("the WebSocket server did not start in 15s: %s", stderr.String())
	}
}

// ws runs the WebSocket client inside sb with order o.
func (e *Env) ws(t *testing.T, sb Sandbox, o wsOrder) wsResult {
	t.Helper()
	script := filepath.Join(e.Dir, "ws_client.py")
	if _, err := os.Stat(script); err != nil {
		os.WriteFile(script, []byte(wsClient), 0o644)
	}
	arg, _ := json.Marshal(o)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", sb.Netns, wsPython, script, string(arg)).CombinedOutput()
	var r wsResult
	if err != nil || json.Unmarshal(out, &r) != nil {
		t.Fatalf("the WebSocket client in %s: %v\n%s", sb.Name, err, out)
	}
	return r
}

// newWSEnv is a daemon whose handlers are a kv store and a worker's
// function (neither can switch protocols) and a proxy to the WebSocket server's /need-token path that
// injects the token, for http and (intercepted) https, with a short idle
// timeout for switched connections; and the WebSocket server.
func newWSEnv(t *testing.T) (*Env, string) {
	t.Helper()
	requireWebsockets(t)
	secretFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(secretFile, []byte(wsToken+"\n"), 0o600)
	// A worker's function answers through fetch-style Responses, which
	// cannot switch protocols.
	script := filepath.Join(t.TempDir(), "ws.js")
	os.WriteFile(script, []byte(`export default { outboundByHost: { "ws.worker.test": () => new Response("worker\n") } };`), 0o644)
	cfg := `workers:
  - {name: wsw, script: ` + script + `}
default_worker: wsw
handlers:
  - {host: my.kv, kind: kv}
  - host: ` + wsProxy + `
    kind: proxy
    https: true
    upstream: http://` + wsIP + `:80/need-token
    inject:
      - {header: Authorization, template: "Bearer {secret}", file: ` + secretFile + `}
`
	e := NewEnv(t, Options{ExtraConfig: cfg, Listen: fmt.Sprintf("  %s: %s", wsIdleNote, wsIdle)})
	e.startWSServer(t)
	caPEM, errOut, code := e.CLI("ca", "--config", e.Config)
	if code != 0 || !strings.HasPrefix(caPEM, "-----BEGIN CERTIFICATE-----") {
		t.Fatalf("interceptd ca: exit %d %s", code, errOut)
	}
	caFile := filepath.Join(t.TempDir(), "interceptd-ca.pem")
	os.WriteFile(caFile, []byte(caPEM), 0o644)
	return e, caFile
}

func TestWebSocketsFromASandbox(t *testing.T) {
	e, caFile := newWSEnv(t)
	sb := e.Create("ws")

	t.Run("a WebSocket to an allowed destination is forwarded and echoes", func(t *testing.T) {
		r := e.ws(t, sb, wsOrder{URI: "ws://" + wsIP + "/chat", Send: []string{"hello", "world"}})
		if r.Status != 101 || strings.Join(r.Echo, ",") != "echo:hello,echo:world" {
			t.Fatalf("got %+v", r)
		}
		if got := r.header("X-Echo-Auth"); got != "none" {
			t.Errorf("a forwarded WebSocket got a credential: %q", got)
		}
	})
	t.Run("the server's token path refuses a forwarded WebSocket, which carries no token", func(t *testing.T) {
		// So the proxy's success below is the injected token's doing.
		r := e.ws(t, sb, wsOrder{URI: "ws://" + wsIP + "/need-token/chat"})
		if r.Status != 403 {
			t.Fatalf("got %+v, want the server's 403", r)
		}
	})
	for _, scheme := range []string{"ws", "wss"} {
		t.Run("through the proxy handler over "+scheme+" the upstream gets the injected token and the client never sees it", func(t *testing.T) {
			o := wsOrder{URI: scheme + "://" + wsProxy + "/chat", Send: []string{"via proxy", wsToken}}
			if scheme == "wss" {
				o.CAFile = caFile
			}
			r := e.ws(t, sb, o)
			if r.Status != 101 {
				t.Fatalf("got %+v, want 101 (the server refuses without the token)", r)
			}
			if r.header("X-Echo-Path") != "/need-token/chat" {
				t.Errorf("the upstream was asked for %q", r.header("X-Echo-Path"))
			}
			raw, _ := json.Marshal(r.Headers)
			if strings.Contains(string(raw), wsToken) {
				t.Errorf("the 101's headers handed the token back: %s", raw)
			}
			if got := r.header("X-Echo-Auth"); got == "" || got == "none" {
				t.Errorf("X-Echo-Auth: %q, want the reflected header, masked", got)
			}
			// The stream is not scrubbed (docs/handlers.md): what the
			// sandbox itself sends comes back as it is.
			if strings.Join(r.Echo, ",") != "echo:via proxy,echo:"+wsToken {
				t.Errorf("echo: %q", r.Echo)
			}
		})
	}
	for _, host := range []string{"my.kv", "ws.worker.test"} {
		t.Run(host+", which cannot switch protocols, answers 400 upgrade_unsupported", func(t *testing.T) {
			r := e.ws(t, sb, wsOrder{URI: "ws://" + host + "/some-key"})
			if r.Status != 400 || r.header("X-Interceptd-Error") != "upgrade_unsupported" {
				t.Fatalf("got %+v", r)
			}
		})
	}
	t.Run("an upgrade whose Host is not the address dialled is refused as any request", func(t *testing.T) {
		// example.test is 192.0.2.2; the client dials the WebSocket server.
		r := e.ws(t, sb, wsOrder{URI: "ws://example.test/chat", Connect: wsIP})
		if r.Status != 403 || r.header("X-Interceptd-Error") != "host_mismatch" {
			t.Fatalf("got %+v, want 403 host_mismatch", r)
		}
	})
	t.Run("a switched connection idle for the timeout is closed", func(t *testing.T) {
		r := e.ws(t, sb, wsOrder{URI: "ws://" + wsIP + "/idle", Send: []string{"once"}, WaitClose: 4 * wsIdle.Seconds()})
		if r.Status != 101 || r.Closed != "closed" {
			t.Fatalf("got %+v, want closed within %v", r, 4*wsIdle)
		}
		if after := time.Duration(r.ClosedAfter * float64(time.Second)); after < wsIdle*2/3 {
			t.Errorf("closed %v after the last message, before the idle timeout (%v)", after, wsIdle)
		}
	})
	t.Run("an upgrade to an address the policy now denies, written as an IP literal, is denied", func(t *testing.T) {
		if out, errOut, code := e.CLI("sandbox", "policy", "ws", "--deny", wsIP); code != 0 {
			t.Fatalf("sandbox policy: %s %s", out, errOut)
		}
		r := e.ws(t, sb, wsOrder{URI: "ws://" + wsIP + "/chat"})
		if r.Status != 403 || r.header("X-Interceptd-Error") != "denied_host" {
			t.Fatalf("got %+v, want 403 denied_host", r)
		}
	})
	t.Run("the metrics count the upgrades, their bytes and the idle cut", func(t *testing.T) {
		m := e.Scrape()
		for series, atLeast := range map[string]float64{
			`interceptd_router_upgrades_total{kind="websocket",outcome="switched"}`:    4,
			`interceptd_router_upgrades_total{kind="websocket",outcome="unsupported"}`: 2,
			`interceptd_router_upgrades_total{kind="websocket",outcome="denied"}`:      2,
			`interceptd_router_upgraded_bytes_total{direction="from_sandbox"}`:         1,
			`interceptd_router_upgraded_bytes_total{direction="to_sandbox"}`:           1,
			`interceptd_router_tunnels_cut_total{reason="idle_timeout"}`:               1,
		} {
			if v, ok := sample(m, series); !ok || v < atLeast {
				t.Errorf("%s = %v (present %v), want at least %v", series, v, ok, atLeast)
			}
		}
		if v, ok := sample(m, "interceptd_router_upgraded_connections_open"); !ok || v != 0 {
			t.Errorf("upgraded connections open after every client ended: %v (present %v)", v, ok)
		}
	})
}
