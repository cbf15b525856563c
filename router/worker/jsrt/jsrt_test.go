package jsrt

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/dop251/goja"
)

// eval runs body as an async function in rt and returns JSON.stringify of its result.
func eval(t testing.TB, rt *Runtime, body string) (string, error) {
	t.Helper()
	fn, err := rt.VM().RunString("(async () => {\n" + body + "\n})")
	if err != nil {
		t.Fatalf("compiling %q: %v", body, err)
	}
	v, err := rt.Call(context.Background(), fn)
	if err != nil {
		return "", err
	}
	stringify, _ := goja.AssertFunction(rt.VM().Get("JSON").ToObject(rt.VM()).Get("stringify"))
	s, err := stringify(goja.Undefined(), v)
	if err != nil {
		t.Fatalf("stringify: %v", err)
	}
	if goja.IsUndefined(s) {
		return "undefined", nil
	}
	return s.String(), nil
}

type jsCase struct {
	name, body, want string
}

// runTable checks each case's JSON result, or (want "throws: X") that it throws X.
func runTable(t *testing.T, cases []jsCase) {
	t.Helper()
	rt := New(Options{})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := eval(t, rt, c.body)
			if err != nil {
				got = "throws: " + err.Error()
			}
			if got != c.want {
				t.Errorf("%s\n got: %s\nwant: %s", c.body, got, c.want)
			}
		})
	}
}

func TestCompileNamesTheFileLineAndColumnOfASyntaxError(t *testing.T) {
	cases := []struct {
		name, file, src, want string
	}{
		{"a module compiles", "a.js", "export default { outbound() {} }", ""},
		{"typescript compiles by its extension", "a.ts", "export default { outbound(r: Request): number { return 1 as number } }", ""},
		{"modern syntax is lowered", "a.js", "const o = {a: {b: 1}}; export const x = o?.a?.b ?? 2, y = {...o};", ""},
		{"a syntax error names its position", "bad.js", "export default {\n  outbound() { return 1 +; }\n}", "bad.js:2:26: Unexpected \";\""},
		{"types in a .js file are an error", "a.js", "let x: number = 1", "a.js:1:6: Expected \";\" but found \":\""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Compile(c.file, []byte(c.src))
			got := ""
			if err != nil {
				got = err.Error()
				var ce *CompileError
				if !errors.As(err, &ce) {
					t.Errorf("error %T is not a *CompileError", err)
				}
			}
			if got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

func TestLoadReturnsTheDefaultAndNamedExports(t *testing.T) {
	p, err := Compile("w.js", []byte(`
export default {
  async outbound(req, env, ctx) { return new Response("out") },
  outboundByHost: { "my.kv": async () => new Response("kv") },
};
export class MyContainer { constructor(state) { this.state = state } hello() { return "hi" } }
export const version = 3;
`))
	if err != nil {
		t.Fatal(err)
	}
	rt := New(Options{})
	ex, err := rt.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(ex.Names(), ","), "MyContainer,default,version"; got != want {
		t.Errorf("names %q, want %q", got, want)
	}
	def := ex.Default.ToObject(rt.VM())
	byHost := def.Get("outboundByHost").ToObject(rt.VM())
	if got := byHost.Keys(); len(got) != 1 || got[0] != "my.kv" {
		t.Errorf("outboundByHost keys %v", got)
	}
	v, err := rt.Call(context.Background(), byHost.Get("my.kv"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := rt.ToResponse(v)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	b.ReadFrom(res.Body)
	if res.Status != 200 || b.String() != "kv" {
		t.Errorf("got %d %q", res.Status, b.String())
	}
	obj, err := rt.VM().New(ex.Named["MyContainer"], rt.VM().ToValue("s"))
	if err != nil {
		t.Fatal(err)
	}
	rt.VM().Set("obj", obj)
	if got, err := eval(t, rt, `return [obj.state, obj.hello()]`); err != nil || got != `["s","hi"]` {
		t.Errorf("method call: %v %v", got, err)
	}
}

func TestLoadReportsAThrowingTopLevelAndRequire(t *testing.T) {
	for src, want := range map[string]string{
		`throw new TypeError("boom")`:                  "loading w.js: TypeError: boom",
		`import x from "./other.js"; export default x`: "loading w.js: TypeError: w.js: require(\"./other.js\"): a worker script is one module; imports are not supported",
	} {
		p, err := Compile("w.js", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := New(Options{}).Load(p); err == nil || err.Error() != want {
			t.Errorf("%s: got %v, want %s", src, err, want)
		}
	}
}

func TestCallRunsTheEventLoopUntilThePromiseSettles(t *testing.T) {
	runTable(t, []jsCase{
		{"a plain value returns at once", `return 1`, `1`},
		{"await of a resolved promise", `return await Promise.resolve(2)`, `2`},
		{"setTimeout fires within the call", `return await new Promise(r => setTimeout(() => r("t"), 10))`, `"t"`},
		{"setTimeout passes its arguments", `return await new Promise(r => setTimeout(r, 0, "arg"))`, `"arg"`},
		{"timers fire in order of their delay", `const o = []; await new Promise(r => { setTimeout(() => { o.push(2); r() }, 20); setTimeout(() => o.push(1), 5) }); return o`, `[1,2]`},
		{"clearTimeout cancels", `const o = []; const id = setTimeout(() => o.push("x"), 1); clearTimeout(id); await new Promise(r => setTimeout(r, 10)); return o`, `[]`},
		{"setInterval repeats until cleared", `let n = 0; await new Promise(r => { const id = setInterval(() => { if (++n === 3) { clearInterval(id); r() } }, 1) }); await new Promise(r => setTimeout(r, 10)); return n`, `3`},
		{"microtasks run before timers", `const o = []; setTimeout(() => o.push("timer"), 0); queueMicrotask(() => o.push("micro")); await new Promise(r => setTimeout(r, 5)); return o`, `["micro","timer"]`},
		{"a thrown error is an exception", `throw new RangeError("nope")`, `throws: RangeError: nope`},
		{"a rejection with a non-error", `return Promise.reject("plain")`, `throws: uncaught plain`},
		{"a thrown plain object", `throw {a: 1}`, `throws: uncaught [object Object]`},
		{"a thrown undefined", `throw undefined`, `throws: uncaught undefined`},
		{"an error whose message getter throws", `throw Object.defineProperty(new Error("x"), "message", {get() { throw 1 }})`, `throws: uncaught object`},
		{"an exception in a timer ends the call", `await new Promise(r => setTimeout(() => { throw new Error("in timer") }, 1)); return 1`, `throws: Error: in timer`},
		{"a promise nothing can settle", `return await new Promise(() => {})`, `throws: ` + ErrNeverSettled.Error()},
		{"the runtime is usable after all that", `return "ok"`, `"ok"`},
	})
}

func TestAnExceptionCarriesItsStackInTheOriginalSource(t *testing.T) {
	p, err := Compile("app.ts", []byte("type T = number;\nexport default {\n  outbound(): T {\n    throw new Error(\"bad\");\n  },\n};\n"))
	if err != nil {
		t.Fatal(err)
	}
	rt := New(Options{})
	ex, err := rt.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	_, err = rt.Call(context.Background(), ex.Default.ToObject(rt.VM()).Get("outbound"))
	var e *Exception
	if !errors.As(err, &e) {
		t.Fatalf("got %v, want an *Exception", err)
	}
	if e.Message != "Error: bad" || !strings.Contains(e.Stack, "app.ts:4:") {
		t.Errorf("message %q, stack %q: want the message and app.ts:4", e.Message, e.Stack)
	}
}

func TestAnInfiniteLoopIsInterruptedAtTheCPULimitAndTheRuntimeReportsItselfBroken(t *testing.T) {
	const limit = 50 * time.Millisecond
	for _, body := range []string{
		`for (;;) {}`,
		`await null; while (true) {}`,
		`await new Promise(r => setTimeout(r, 1)); for (;;) {}`,
	} {
		rt := New(Options{CPULimit: limit})
		if got, err := eval(t, rt, `return "before"`); err != nil || got != `"before"` {
			t.Fatalf("a call before: %q %v", got, err)
		}
		start := time.Now()
		_, err := eval(t, rt, body)
		if !errors.Is(err, ErrCPULimit) {
			t.Fatalf("%s: got %v, want ErrCPULimit", body, err)
		}
		// Wall time only proves the loop was cut, not left to run: the limit
		// counts the thread's CPU time, which a busy machine stretches on the
		// clock (the CPU figure below is the exact check).
		if took := time.Since(start); took > limit+5*time.Second {
			t.Errorf("%s: interrupted after %v, want about %v", body, took, limit)
		}
		if rt.CPU() < limit {
			t.Errorf("CPU() = %v, want at least %v", rt.CPU(), limit)
		}
		if !rt.Broken() {
			t.Errorf("%s: the runtime does not report itself broken", body)
		}
		if _, err := eval(t, rt, `return "next"`); !errors.Is(err, ErrBroken) {
			t.Errorf("%s: the next call got %v, want ErrBroken", body, err)
		}
		if got, err := eval(t, New(Options{CPULimit: limit}), `await new Promise(r => setTimeout(r, 1)); return "fresh"`); err != nil || got != `"fresh"` {
			t.Errorf("a fresh runtime: %q %v", got, err)
		}
	}
}

func TestLoadOfAnEndlessTopLevelStopsAtTheCPULimit(t *testing.T) {
	p, err := Compile("loop.js", []byte("while (true) {}\nexport default {}"))
	if err != nil {
		t.Fatal(err)
	}
	rt := New(Options{CPULimit: 20 * time.Millisecond})
	if _, err := rt.Load(p); !errors.Is(err, ErrCPULimit) || !rt.Broken() {
		t.Errorf("got %v, broken %v", err, rt.Broken())
	}
}

func TestTheCPULimitCountsCPUTimeNotWallTime(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("per-thread CPU clocks are Linux's")
	}
	rt := New(Options{CPULimit: 30 * time.Millisecond})
	// A host function that blocks its thread without using CPU, as a descheduled VM would.
	rt.VM().Set("stall", func() { time.Sleep(100 * time.Millisecond) })
	if got, err := eval(t, rt, `stall(); return 1`); err != nil || got != "1" {
		t.Fatalf("got %q %v", got, err)
	}
	if rt.CPU() > 20*time.Millisecond {
		t.Errorf("CPU() = %v for a call that slept", rt.CPU())
	}
}

func TestWaitingDoesNotCountAgainstTheCPULimit(t *testing.T) {
	rt := New(Options{CPULimit: 20 * time.Millisecond})
	if got, err := eval(t, rt, `await new Promise(r => setTimeout(r, 60)); return 1`); err != nil || got != "1" {
		t.Fatalf("got %q %v", got, err)
	}
}

func TestCallEndsWithItsContext(t *testing.T) {
	for body, broken := range map[string]bool{`await new Promise(r => setTimeout(r, 10000))`: false, `for (;;) {}`: true} {
		rt := New(Options{})
		fn, _ := rt.VM().RunString("(async () => {" + body + "})")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		_, err := rt.Call(ctx, fn)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: got %v, want the context's error", body, err)
		}
		if rt.Broken() != broken {
			t.Errorf("%s: Broken() = %v, want %v", body, rt.Broken(), broken)
		}
		if got, err := eval(t, rt, `return 1`); !broken && (err != nil || got != "1") {
			t.Fatalf("%s: after: %q %v", body, got, err)
		}
	}
}

func TestAsyncSettlesOnTheLoopAndDropsResultsOfAnEndedCall(t *testing.T) {
	rt := New(Options{})
	release := make(chan struct{})
	rt.VM().Set("work", func(s string, fail bool) goja.Value {
		return rt.Async(func() (func() goja.Value, error) {
			if s == "slow" {
				<-release
			}
			if fail {
				return nil, errors.New("no " + s)
			}
			return func() goja.Value { return rt.VM().ToValue(s + "!") }, nil
		})
	})
	if got, err := eval(t, rt, `return [await work("a", false), await work("b", true).catch(e => e.message)]`); err != nil || got != `["a!","no b"]` {
		t.Fatalf("got %q %v", got, err)
	}
	fn, _ := rt.VM().RunString(`(async () => { globalThis.leaked = await work("slow", false) })`)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := rt.Call(ctx, fn); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	close(release)
	time.Sleep(10 * time.Millisecond)
	if got, err := eval(t, rt, `await new Promise(r => setTimeout(r, 5)); return typeof globalThis.leaked`); err != nil || got != `"undefined"` {
		t.Errorf("an ended call's result ran in the next: %q %v", got, err)
	}
}

func TestAsyncNowDoesItsWorkAtOnceAndSettlesOnTheLoopsNextTurn(t *testing.T) {
	rt := New(Options{})
	var did []string
	rt.VM().Set("work", func(s string, fail bool) goja.Value {
		return rt.AsyncNow(func() (func() goja.Value, error) {
			did = append(did, s)
			if fail {
				return nil, errors.New("no " + s)
			}
			return func() goja.Value { return rt.VM().ToValue(s + "!") }, nil
		})
	})
	// The promise is still pending when work returns: a microtask queued after it runs
	// first, as it would for Async's.
	got, err := eval(t, rt, `const order = []; const p = work("a", false).then(v => order.push(v));
queueMicrotask(() => order.push("microtask")); await p;
return [order, await work("b", true).catch(e => e.message)]`)
	if err != nil || got != `[["microtask","a!"],"no b"]` {
		t.Fatalf("got %q %v", got, err)
	}
	if strings.Join(did, ",") != "a,b" {
		t.Errorf("the work ran for %q, want a,b", did)
	}
}

func TestConsoleLogsWithTheCallsAttrs(t *testing.T) {
	var buf bytes.Buffer
	rt := New(Options{Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	fn, _ := rt.VM().RunString(`(() => { console.log("hello", {a: 1}, 2); console.error(new Error("e")) })`)
	ctx := WithLogAttrs(context.Background(), slog.String("request_id", "r1"))
	if _, err := rt.Call(ctx, fn); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{`level=INFO msg="hello {\"a\":1} 2" source=console request_id=r1`, `level=ERROR msg="Error: e`} {
		if !strings.Contains(out, want) {
			t.Errorf("log %q lacks %q", out, want)
		}
	}
}
