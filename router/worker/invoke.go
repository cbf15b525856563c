package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/dop251/goja"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/handlers"
	"github.com/interceptd/interceptd/router/worker/jsrt"
)

// Reasons a worker's failure is answered with (X-Interceptd-Error).
const (
	ReasonCPULimit  = "worker_cpu_limit"
	ReasonWallLimit = "worker_wall_limit"
	ReasonException = "worker_exception"
	ReasonBusy      = "worker_busy"
	ReasonMemory    = "worker_memory_limit"
)

// function is one of a version's functions as a router.Handler: key is its
// outboundByHost key, "" for outbound.
type function struct {
	v   *version
	key string
}

// invocation is what a runtime knows of the request it serves: for fetch()
// (subrequests, the incoming request for a fetch of it) and ctx.
type invocation struct {
	ctx         context.Context
	env         router.Env
	r           *http.Request
	url         string
	subrequests int
	seq         uint64 // its number on its runtime, which its ctx carries
	passThrough bool
	waitUntil   []goja.Value

	mu      sync.Mutex
	ended   bool
	holding []func() // Durable-Object gates this request holds
}

// hold registers release to run when the request ends, unless it has
// ended already (false).
func (inv *invocation) hold(release func()) bool {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if inv.ended {
		return false
	}
	inv.holding = append(inv.holding, release)
	return true
}

// end opens every gate the request still holds.
func (inv *invocation) end() {
	inv.mu.Lock()
	inv.ended = true
	held := inv.holding
	inv.holding = nil
	inv.mu.Unlock()
	for _, release := range held {
		release()
	}
}

func (f *function) label() string {
	if f.key == "" {
		return "outbound"
	}
	return f.key
}

// ServeHTTP implements router.Handler: the request runs on one runtime of
// the pool, under the worker's limits.
func (f *function) ServeHTTP(w http.ResponseWriter, r *http.Request, env router.Env) error {
	v, wk := f.v, f.v.w
	start := time.Now()
	ctx, cancel := context.WithTimeout(r.Context(), wk.cfg.Limits.Wall)
	defer cancel()
	inst, err := v.get(ctx)
	for errors.Is(err, errReplaced) {
		// Reloaded while this request waited: the new version serves it,
		// if it still has the function.
		r, ok := wk.cur.Load().routes[f.key]
		if !ok {
			return &router.Error{Status: http.StatusServiceUnavailable, Reason: ReasonBusy, Err: fmt.Errorf("the reloaded script has no function for %s", f.label())}
		}
		f = r.Handler.(*function)
		v = f.v
		inst, err = v.get(ctx)
	}
	if err != nil {
		wk.cfg.Metrics.invocation(wk.cfg.Name, f.label(), "busy", time.Since(start), 0)
		return &router.Error{Status: http.StatusServiceUnavailable, Reason: ReasonBusy, Err: fmt.Errorf("no runtime came free in time: %w", err)}
	}
	defer v.put(inst)
	inst.seq++
	scheme := "http://"
	if r.TLS != nil {
		scheme = "https://" // an intercepted HTTPS request
	}
	inv := &invocation{ctx: ctx, env: env, r: r, url: scheme + hostOf(r, env) + r.URL.RequestURI(), seq: inst.seq}
	inst.req.Store(inv)
	defer inst.req.Store(nil)
	defer inv.end()
	rt := inst.RT
	ctx = jsrt.WithLogAttrs(ctx, slog.String("request_id", env.RequestID), slog.String("sandbox", env.Sandbox),
		slog.String("function", f.label()))

	outcome := "ok"
	defer func() {
		wk.cfg.Metrics.invocation(wk.cfg.Name, f.label(), outcome, time.Since(start), rt.CPU())
	}()
	req, err := rt.NewRequest(r, inv.url)
	if err != nil {
		outcome = "bad_request"
		return router.Errorf(http.StatusBadRequest, "the request cannot be given to the worker: %v", err)
	}
	resp, err := rt.CallResponse(ctx, inst.fns[f.key], req, inst.Env, inst.newContext(inv))
	var notResponse *jsrt.ResponseError
	if errors.As(err, &notResponse) {
		err = &jsrt.Exception{Message: "TypeError: " + notResponse.Err.Error()}
	}
	if err == nil {
		outcome = "ok"
		if inst.scrub != nil {
			if err := scrubResponse(inst.scrub, resp); err != nil {
				outcome = "error"
				wk.log.Warn("worker response cannot be scrubbed of its secrets", "request_id", env.RequestID, "function", f.label())
				return &router.Error{Status: http.StatusBadGateway, Reason: "the worker's response is in a content coding that cannot be scrubbed of its secrets", Logged: true}
			}
		}
		werr := writeResponse(w, resp)
		inst.settle(ctx, inv)
		if werr != nil {
			return fmt.Errorf("%w: writing the worker's response: %w", router.ErrAborted, werr)
		}
		return nil
	}
	var ex *jsrt.Exception
	switch {
	case errors.Is(err, jsrt.ErrCPULimit):
		outcome = "cpu_limit"
		wk.log.Warn("worker cpu limit", "request_id", env.RequestID, "sandbox", env.Sandbox, "function", f.label(), "limit", wk.cfg.Limits.CPU)
		return &router.Error{Status: http.StatusServiceUnavailable, Reason: ReasonCPULimit, Err: err, Logged: true}
	case errors.Is(err, jsrt.ErrMemoryLimit):
		outcome = "memory_limit"
		wk.log.Warn("worker memory limit: the daemon's heap passed worker_heap_limit while this script ran", "request_id", env.RequestID, "sandbox", env.Sandbox, "function", f.label())
		return &router.Error{Status: http.StatusServiceUnavailable, Reason: ReasonMemory, Err: err, Logged: true}
	case errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil:
		outcome = "wall_limit"
		wk.log.Warn("worker wall time limit", "request_id", env.RequestID, "sandbox", env.Sandbox, "function", f.label(), "limit", wk.cfg.Limits.Wall)
		return &router.Error{Status: http.StatusServiceUnavailable, Reason: ReasonWallLimit, Err: err, Logged: true}
	case errors.As(err, &ex):
		outcome = "exception"
		// The stack is the operator's, for the log; the sandbox gets the
		// reason and the request id only.
		wk.log.Warn("worker exception", "request_id", env.RequestID, "sandbox", env.Sandbox, "function", f.label(),
			"error", ex.Message, "stack", ex.Stack)
		if inv.passThrough && wk.cfg.Fetch != nil {
			outcome = "passed_through"
			return wk.cfg.Fetch.passThrough(w, r, env)
		}
		return &router.Error{Status: http.StatusInternalServerError, Reason: ReasonException, Logged: true}
	}
	outcome = "error"
	return &router.Error{Status: http.StatusInternalServerError, Reason: ReasonException, Err: err}
}

func hostOf(r *http.Request, env router.Env) string {
	if r.Host != "" {
		return r.Host
	}
	return env.Dest.String()
}

// hop-by-hop fields a response from a script must not set.
var hopFields = []string{"Connection", "Keep-Alive", "Transfer-Encoding", "Upgrade", "Proxy-Connection", "Te", "Trailer"}

// writeResponse writes what the script returned, streaming a Go-backed
// body (a fetch()'s upstream, a bucket object) without holding it.
func writeResponse(w http.ResponseWriter, resp *jsrt.Response) error {
	h := w.Header()
	for k, vs := range resp.Header {
		h[k] = vs
	}
	for _, k := range hopFields {
		h.Del(k)
	}
	status := resp.Status
	if status < 200 || status > 599 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	if resp.Body == nil {
		return nil
	}
	if c, ok := resp.Body.(io.Closer); ok {
		defer c.Close()
	}
	_, err := io.Copy(w, resp.Body)
	return err
}

// scrubResponse masks the worker's secrets in its response's head and body.
func scrubResponse(s *handlers.Scrubber, resp *jsrt.Response) error {
	s.Header(resp.Header)
	if resp.Body == nil {
		return nil
	}
	rc, ok := resp.Body.(io.ReadCloser)
	if !ok {
		rc = io.NopCloser(resp.Body)
	}
	b, err := s.Body(resp.Header, rc)
	if err != nil {
		rc.Close()
		return err
	}
	resp.Body = b
	return nil
}

// ctxProg makes a runtime's ctx factory. A ctx carries its invocation's
// number under a symbol the script cannot name, and its methods live on a
// prototype that calls two natives made once per runtime: a request then
// costs one small object, not two Go functions (each a native function
// object, the costliest thing goja makes). A ctx kept past its request
// names an invocation that is over, and its calls do nothing.
var ctxProg = goja.MustCompile("ctx.js", `(function (waitUntil, passThrough, T, C) {
  "use strict";
  class ExecutionContext {
    get containerId() { return this[C]; }
    waitUntil(p) { waitUntil(this[T], p); }
    passThroughOnException() { passThrough(this[T]); }
  }
  Object.defineProperty(ExecutionContext.prototype, Symbol.toStringTag, { value: "ExecutionContext" });
  return ExecutionContext.prototype;
})`, true)

// ctxKeys are the symbols a ctx keeps its invocation's number (T) and its
// sandbox's name (C) under: made in Go, so that newContext sets them without
// running any JavaScript, and never given to a script.
type ctxKeys struct{ T, C *goja.Symbol }

// contextMaker runs ctxProg on the instance's runtime: the prototype of
// every ctx it makes.
func (inst *Instance) contextMaker() (*goja.Object, error) {
	vm := inst.RT.VM()
	current := func(n goja.Value) *invocation {
		if inv := inst.req.Load(); inv != nil && n.ToInteger() == int64(inv.seq) {
			return inv
		}
		return nil
	}
	waitUntil := func(c goja.FunctionCall) goja.Value {
		if inv := current(c.Argument(0)); inv != nil {
			inv.waitUntil = append(inv.waitUntil, c.Argument(1))
		}
		return goja.Undefined()
	}
	passThrough := func(c goja.FunctionCall) goja.Value {
		if inv := current(c.Argument(0)); inv != nil {
			inv.passThrough = true
		}
		return goja.Undefined()
	}
	f, err := vm.RunProgram(ctxProg)
	if err != nil {
		return nil, fmt.Errorf("making ctx: %w", err)
	}
	factory, _ := goja.AssertFunction(f)
	inst.ctxKeys = ctxKeys{T: goja.NewSymbol("invocation"), C: goja.NewSymbol("containerId")}
	proto, err := factory(goja.Undefined(), vm.ToValue(waitUntil), vm.ToValue(passThrough), inst.ctxKeys.T, inst.ctxKeys.C)
	if err != nil {
		return nil, fmt.Errorf("making ctx: %w", err)
	}
	return proto.ToObject(vm), nil
}

// newContext makes the ctx argument: containerId, waitUntil,
// passThroughOnException.
func (inst *Instance) newContext(inv *invocation) goja.Value {
	vm := inst.RT.VM()
	c := vm.NewObject()
	// Own symbol keys and the prototype: no JavaScript runs, and no setter a
	// script put on Object.prototype sees them.
	c.SetPrototype(inst.ctxProto)
	c.SetSymbol(inst.ctxKeys.C, inv.env.Sandbox)
	c.SetSymbol(inst.ctxKeys.T, inv.seq)
	return c
}

// settle waits (under the same limits) for what ctx.waitUntil was given,
// after the response went out; a failure there is logged, not answered.
func (inst *Instance) settle(ctx context.Context, inv *invocation) {
	if len(inv.waitUntil) == 0 {
		return
	}
	vm := inst.RT.VM()
	all := vm.Get("Promise").ToObject(vm).Get("allSettled")
	allF, _ := goja.AssertFunction(all)
	arr := vm.NewArray()
	for i, p := range inv.waitUntil {
		arr.Set(fmt.Sprint(i), p)
	}
	// A plain call, not Call: Call would drop the timers and host work the
	// handler's Call left running, which these promises wait on.
	p, err := allF(vm.Get("Promise"), arr)
	if err == nil {
		_, err = inst.RT.Wait(ctx, p)
	}
	if err != nil {
		slog.Default().Warn("worker waitUntil failed", "request_id", inv.env.RequestID, "error", err)
	}
}
