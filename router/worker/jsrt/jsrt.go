// Package jsrt is one JavaScript runtime for Workers: a goja VM, an event loop that runs
// for the length of a Call, the Web APIs a Worker script expects (Request, Response,
// Headers, URL, fetch, TextEncoder, crypto, structuredClone, console, timers), and
// module loading through esbuild. It knows nothing of interceptd's stores or router:
// the host injects bindings (through VM and Async) and the fetch function.
//
// A Runtime is used by one goroutine at a time. Scripts share its globals across Calls,
// as a Cloudflare isolate is reused across requests; isolating sandboxes from each other
// is the pool's job (router/worker), not this package's.
//
// Not there (yet): imports between modules (a script is one file), Blob, FormData,
// AbortController, WritableStream/TransformStream, crypto.subtle beyond digest, encodings
// other than UTF-8, and immutable headers on fetched responses. A runtime interrupted by
// its CPU limit is Broken and must be replaced (see ErrCPULimit).
package jsrt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"sync"
	"time"

	"github.com/dop251/goja"
)

// ErrCPULimit is returned by Call when the script ran JavaScript for longer than
// Options.CPULimit. The runtime is then Broken: goja does not unwind an async function
// interrupted mid-run cleanly (its promise jobs stop running afterwards), and the
// interrupted code may have left globals half-mutated, so the pool must replace it.
var ErrCPULimit = errors.New("worker exceeded its cpu time limit")

// ErrBroken is returned by Call and Load on a runtime that was interrupted (CPU limit, or
// its context ending while JavaScript ran). Replace the runtime.
var ErrBroken = errors.New("the runtime was interrupted and must be replaced")

// ErrNeverSettled is returned by Call when the function's promise is still pending and
// nothing (no timer, no host work) is left that could settle it.
var ErrNeverSettled = errors.New("the promise never settled: nothing left to wait for")

// Exception is an uncaught JavaScript exception or rejection. Message and Stack are for
// the operator's log; never show them to a sandbox.
type Exception struct {
	Message string // "TypeError: x is not a function"
	Stack   string // the JS stack, with positions in the original source
}

func (e *Exception) Error() string { return e.Message }

// Options configure a Runtime.
type Options struct {
	// CPULimit bounds the CPU time spent running JavaScript in one Call and its Wait
	// (waiting for timers and host work does not count); 0 means no limit. It is the CPU
	// time of the thread running each JS segment (on Linux; wall time elsewhere), so a
	// busy host that deschedules the VM does not use up a script's budget. Host
	// functions the script calls count: they run on the same thread.
	CPULimit time.Duration
	// Logger receives console.*, with the attrs given by WithLogAttrs on the Call's context.
	// nil discards.
	Logger *slog.Logger
	// Fetch serves the global fetch(). Its context is the Call's. The request body is the
	// JS body's reader: a Go-backed stream (from NewRequest or an earlier fetch) is passed
	// on unread. nil makes fetch() reject.
	Fetch func(ctx context.Context, req *http.Request) (*http.Response, error)
}

// Runtime is one goja VM with its event loop. Not safe for concurrent use.
type Runtime struct {
	vm   *goja.Runtime
	opts Options
	fns  *boundary // JS functions of webapi.js the Go side calls

	// The loop: jobs posted from other goroutines (timers, Async) wait in queue until the
	// Call's goroutine runs them; gen tags them with the Call that made them, so that the
	// results of an aborted Call never run in the next.
	mu      sync.Mutex
	queue   []job
	wake    chan struct{}
	gen     uint64
	pending int // timers and host work the current Call may still wait for
	timers  map[int64]*time.Timer
	timerID int64

	ctx      context.Context
	callDone chan struct{} // closed when the current Call ends
	owned    []*stream     // Go bodies the runtime closes if the script drops them
	cpuLeft  time.Duration
	cpuUsed  time.Duration

	lastURL struct { // parseAbsURL's last answer, never changed once made
		in    string
		parts map[string]any
	}

	intMu    sync.Mutex // guards armed against a limit timer firing as a segment ends
	armed    bool
	spanning uint64 // the span measuring the loop's CPU time (see span), 0 for none; guarded by intMu too
	spans    uint64 // spans started, for their ids
	spent    bool   // the limit's timer found the budget spent; guarded by intMu
	spanEnd  func() // ends the current span (see span), nil outside one
	spanLoop bool   // the current span is the loop's, which a wait pauses
	endSpans func() // endSpan as a func value, made once
	running  int    // nesting depth of run, so nested segments are not double-counted
	broken   bool   // interrupted mid-run: see ErrBroken
}

type job struct {
	gen uint64
	fn  func() error
}

type cpuInterrupt struct{}
type ctxInterrupt struct{}

// New makes a runtime with the Web APIs installed.
func New(opts Options) *Runtime {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	rt := &Runtime{
		vm:     goja.New(),
		opts:   opts,
		wake:   make(chan struct{}, 1),
		timers: map[int64]*time.Timer{},
		ctx:    context.Background(),
		// No Call yet: a stream reader made now must not wait for one.
		callDone: make(chan struct{}),
	}
	close(rt.callDone)
	rt.endSpans = rt.endSpan
	rt.vm.SetFieldNameMapper(goja.UncapFieldNameMapper())
	if err := rt.installWebAPI(); err != nil {
		// The polyfill is embedded and tested; failing to run it is a bug in this package.
		panic(fmt.Sprintf("jsrt: installing the web apis: %v", err))
	}
	return rt
}

// VM returns the goja runtime, for hosts installing bindings. Use it only on the goroutine
// that calls Call, and only between or during Calls.
func (rt *Runtime) VM() *goja.Runtime { return rt.vm }

// Broken reports that the runtime was interrupted while running JavaScript (ErrCPULimit,
// or the Call's context ending mid-run) and must be replaced; its Calls return ErrBroken.
func (rt *Runtime) Broken() bool { return rt.broken }

// CPU returns the CPU time the most recent Call (and its Wait) spent running JavaScript.
func (rt *Runtime) CPU() time.Duration { return rt.cpuUsed }

type logAttrsKey struct{}

// WithLogAttrs returns a context whose Calls log console.* with attrs (e.g. request_id).
func WithLogAttrs(ctx context.Context, attrs ...slog.Attr) context.Context {
	prev, _ := ctx.Value(logAttrsKey{}).([]slog.Attr)
	return context.WithValue(ctx, logAttrsKey{}, append(append([]slog.Attr(nil), prev...), attrs...))
}

// Call invokes fn(args...) and runs the event loop until the promise it returns settles
// (a non-promise value returns at once). It returns the value, an *Exception for an
// uncaught exception or a rejection, ErrCPULimit, ErrNeverSettled, or ctx.Err().
//
// What the Call started and did not wait for (timers, host work, ctx.waitUntil-style
// promises) stays alive after a successful Call, for Wait; the next Call drops it. A Call
// that fails ends it all at once.
func (rt *Runtime) Call(ctx context.Context, fn goja.Value, args ...goja.Value) (goja.Value, error) {
	f, ok := goja.AssertFunction(fn)
	if !ok {
		return nil, fmt.Errorf("calling a %s: not a function", typeName(fn))
	}
	rt.begin(ctx)
	end := rt.span(true)
	defer end()
	return rt.call(f, args)
}

// call is Call after begin, inside its span.
func (rt *Runtime) call(f goja.Callable, args []goja.Value) (goja.Value, error) {
	var res goja.Value
	err := rt.run(func() (err error) { res, err = f(goja.Undefined(), args...); return err })
	if err == nil {
		res, err = rt.await(res)
	}
	if err != nil {
		rt.end()
		return nil, err
	}
	return res, nil
}

// ResponseError is CallResponse's error when the call succeeded but what it returned
// could not be converted (ToResponse's error).
type ResponseError struct{ Err error }

func (e *ResponseError) Error() string { return e.Err.Error() }
func (e *ResponseError) Unwrap() error { return e.Err }

// CallResponse is Call and then ToResponse of its value, with the loop and the
// conversion measured as one span of the thread's CPU clock (see span) rather than two:
// a request's common case. A failure of the conversion is a *ResponseError.
func (rt *Runtime) CallResponse(ctx context.Context, fn goja.Value, args ...goja.Value) (*Response, error) {
	f, ok := goja.AssertFunction(fn)
	if !ok {
		return nil, fmt.Errorf("calling a %s: not a function", typeName(fn))
	}
	rt.begin(ctx)
	end := rt.span(true)
	defer end()
	v, err := rt.call(f, args)
	if err != nil {
		return nil, err
	}
	res, err := rt.ToResponse(v)
	if err != nil {
		return nil, &ResponseError{err}
	}
	return res, nil
}

// Wait runs the loop of the last Call on until v settles, under that Call's CPU budget,
// and returns v's value as Call does. Use it for work that finishes after the response,
// e.g. Promise.allSettled of the promises a handler gave ctx.waitUntil, after ToResponse.
// Wait ends the Call: what is still pending afterwards is dropped.
func (rt *Runtime) Wait(ctx context.Context, v goja.Value) (goja.Value, error) {
	if rt.broken {
		return nil, ErrBroken
	}
	rt.ctx = ctx
	defer rt.end()
	end := rt.span(true)
	defer end()
	return rt.await(v)
}

// await runs the loop until v (if it is a promise) settles.
func (rt *Runtime) await(v goja.Value) (goja.Value, error) {
	p, ok := v.Export().(*goja.Promise)
	if !ok {
		return v, nil
	}
	for {
		switch p.State() {
		case goja.PromiseStateFulfilled:
			return p.Result(), nil
		case goja.PromiseStateRejected:
			return nil, rt.exception(p.Result())
		}
		rt.mu.Lock()
		jobs := rt.queue
		rt.queue = nil
		idle := len(jobs) == 0 && rt.pending == 0
		rt.mu.Unlock()
		if idle {
			return nil, ErrNeverSettled
		}
		if len(jobs) == 0 {
			paused := rt.spanEnd != nil && rt.spanLoop
			if paused {
				rt.endSpan()
			}
			select {
			case <-rt.wake:
			case <-rt.ctx.Done():
				return nil, rt.ctx.Err()
			}
			if paused {
				rt.span(true) // ended by the caller's end, which ends the current span
			}
			continue
		}
		for _, j := range jobs {
			if j.gen != rt.gen {
				continue
			}
			if err := rt.run(j.fn); err != nil {
				return nil, err
			}
		}
	}
}

func (rt *Runtime) begin(ctx context.Context) {
	rt.end()
	rt.ctx = ctx
	rt.callDone = make(chan struct{})
	rt.cpuLeft = rt.opts.CPULimit
	rt.cpuUsed = 0
	rt.intMu.Lock()
	rt.spent = false
	rt.intMu.Unlock()
}

// end drops what the last Call left behind: timers, late host results (by bumping gen),
// readers waiting on the loop, and the Go bodies the script dropped.
func (rt *Runtime) end() {
	rt.mu.Lock()
	rt.gen++
	rt.pending = 0
	rt.queue = nil
	for id, t := range rt.timers {
		t.Stop()
		delete(rt.timers, id)
	}
	rt.mu.Unlock()
	select {
	case <-rt.callDone:
	default:
		close(rt.callDone)
	}
	rt.release()
}

// maxQueue bounds the jobs waiting for a loop that no one runs (a Call that returned with
// an interval still armed, and no Wait): past it, jobs are dropped.
const maxQueue = 1 << 14

// post queues fn to run on the loop of the Call that made gen (dropped if that Call ended).
func (rt *Runtime) post(gen uint64, fn func() error) {
	rt.mu.Lock()
	if gen == rt.gen && len(rt.queue) < maxQueue {
		rt.queue = append(rt.queue, job{gen, fn})
	}
	rt.mu.Unlock()
	select {
	case rt.wake <- struct{}{}:
	default:
	}
}

// run runs one segment of JavaScript, charging the CPU time of its thread to the Call's
// budget and interrupting it when the budget or the context runs out. Inside a span of
// the loop (Call, Wait, parts) the span measures it; alone, it is a span of its own.
func (rt *Runtime) run(f func() error) error {
	if rt.running > 0 {
		return rt.convert(f())
	}
	if rt.broken {
		return ErrBroken
	}
	rt.intMu.Lock()
	spent := rt.spent
	rt.intMu.Unlock()
	if rt.opts.CPULimit > 0 && (rt.cpuLeft <= 0 || spent) {
		return ErrCPULimit
	}
	end := rt.span(false)
	rt.intMu.Lock()
	rt.armed = true
	rt.intMu.Unlock()
	leave := enterGuard(rt)
	rt.running++
	err := f()
	rt.running--
	leave()
	rt.intMu.Lock()
	rt.armed = false
	rt.vm.ClearInterrupt()
	rt.intMu.Unlock()
	end()
	return rt.convert(err)
}

// span starts charging the CPU time of the goroutine's thread to the Call's budget,
// until the returned end: one pair of clock reads, one limit timer and one context hook
// however many segments of JavaScript run in it. The thread stays pinned for the span,
// so its clock counts the loop's work only. The loop's span pauses while the loop waits
// (for timers, host work; see await), so that a waiting runtime holds no thread, and
// resumes after. Segments (run) are interrupted as the timer finds the budget spent;
// between them, the next run refuses to start.
//
// loop asks for a span of the whole loop (Call, Wait, parts): where the clock is wall
// time, which would count the waiting, there is none, and each run is a span of its own.
// Spans do not nest: inside one, span returns a no-op.
func (rt *Runtime) span(loop bool) (end func()) {
	if rt.spanning != 0 {
		return func() {}
	}
	now, unpin, cpu := threadClock()
	if loop && !cpu {
		unpin()
		return func() {}
	}
	// A timer of an ended span may still fire: it acts only on its own span.
	rt.spans++
	id := rt.spans
	rt.intMu.Lock()
	rt.spanning = id
	rt.intMu.Unlock()
	start := now()
	interrupt := func(v any) {
		rt.intMu.Lock()
		if rt.armed && rt.spanning == id {
			rt.vm.Interrupt(v)
		}
		rt.intMu.Unlock()
	}
	var limit *time.Timer
	if left := rt.cpuLeft; rt.opts.CPULimit > 0 {
		// The timer runs on wall time, which is at least the CPU time; when it fires
		// early (the thread was descheduled, or the loop waited) it waits for the CPU
		// time still left. Only then does it read the clock.
		var check func()
		check = func() {
			used := now() - start
			rt.intMu.Lock()
			mine := rt.spanning == id
			if mine && used < left {
				limit.Reset(left - used)
			}
			if mine && used >= left {
				rt.spent = true
			}
			rt.intMu.Unlock()
			if used >= left {
				interrupt(cpuInterrupt{})
			}
		}
		rt.intMu.Lock()
		limit = time.AfterFunc(left, check)
		rt.intMu.Unlock()
	}
	stop := context.AfterFunc(rt.ctx, func() { interrupt(ctxInterrupt{}) })
	rt.spanLoop = loop
	rt.spanEnd = func() {
		spent := now() - start
		rt.intMu.Lock()
		rt.spanning = 0
		if limit != nil {
			limit.Stop()
		}
		rt.intMu.Unlock()
		stop()
		unpin()
		rt.cpuLeft -= spent
		rt.cpuUsed += spent
	}
	return rt.endSpans
}

// endSpan ends the current span, if there is one.
func (rt *Runtime) endSpan() {
	if f := rt.spanEnd; f != nil {
		rt.spanEnd = nil
		f()
	}
}

// convert turns a goja error into this package's errors.
func (rt *Runtime) convert(err error) error {
	if err == nil {
		return nil // before the targets below, which escape to the heap
	}
	var ie *goja.InterruptedError
	var ex *goja.Exception
	switch {
	case errors.As(err, &ie):
		rt.broken = true
		switch ie.Value().(type) {
		case cpuInterrupt:
			return ErrCPULimit
		case memInterrupt:
			return ErrMemoryLimit
		case ctxInterrupt:
			if rt.ctx.Err() != nil {
				return rt.ctx.Err()
			}
		}
		return err
	case errors.As(err, &ex):
		e := rt.exception(ex.Value())
		if e.Stack == "" {
			e.Stack = ex.String()
		}
		return e
	}
	return err
}

// exception describes a thrown value: an Error's "Name: message" and stack, or the value
// as a string. Getters that throw here (a hostile error object) leave the generic text.
func (rt *Runtime) exception(v goja.Value) *Exception {
	e := &Exception{Message: "uncaught " + typeName(v)}
	rt.vm.Try(func() {
		o, ok := v.(*goja.Object)
		if !ok {
			if v != nil {
				e.Message = "uncaught " + v.String()
			}
			return
		}
		if st := o.Get("stack"); st != nil && !goja.IsUndefined(st) {
			e.Stack = st.String()
		}
		if m := o.Get("message"); m != nil && !goja.IsUndefined(m) {
			e.Message = m.String()
			if n := o.Get("name"); n != nil && !goja.IsUndefined(n) {
				e.Message = n.String() + ": " + e.Message
			}
			return
		}
		e.Message = "uncaught " + o.String()
	})
	return e
}

func typeName(v goja.Value) string {
	switch {
	case v == nil || goja.IsUndefined(v):
		return "undefined"
	case goja.IsNull(v):
		return "null"
	}
	if _, ok := goja.AssertFunction(v); ok {
		return "function"
	}
	if _, ok := v.(*goja.Object); ok {
		return "object"
	}
	switch v.ExportType().Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int64, reflect.Float64:
		return "number"
	}
	return v.ExportType().String()
}

// Async runs work off the loop and returns a Promise the loop settles: with the value the
// returned func makes (called on the loop, so it may use the VM), or rejected with an
// Error carrying err's text. Use it for host functions that do I/O; call it on the loop
// (from a host function during a Call). The Call waits for the promise's work.
func (rt *Runtime) Async(work func() (func() goja.Value, error)) goja.Value {
	p, gen, settle := rt.promise()
	go func() {
		make, err := work()
		rt.post(gen, func() error { return settle(make, err) })
	}()
	return p
}

// AsyncNow is Async for host work quick enough to do on the loop, such as a read from
// the store: work runs at once, on the script's thread and in its CPU time, and the
// promise settles on the loop's next turn, as Async's would, without a goroutine and
// the wake-up of the loop that a goroutine's result costs.
func (rt *Runtime) AsyncNow(work func() (func() goja.Value, error)) goja.Value {
	p, gen, settle := rt.promise()
	make, err := work()
	// The loop itself takes this job from the queue before it next waits, so it needs
	// no wake-up (see await).
	rt.mu.Lock()
	if gen == rt.gen && len(rt.queue) < maxQueue {
		rt.queue = append(rt.queue, job{gen, func() error { return settle(make, err) }})
	}
	rt.mu.Unlock()
	return p
}

// promise makes the promise of a host function's work, counted as pending for the
// current Call, and the settle to run on the loop when the work is done.
func (rt *Runtime) promise() (goja.Value, uint64, func(make func() goja.Value, err error) error) {
	p, resolve, reject := rt.vm.NewPromise()
	rt.mu.Lock()
	gen := rt.gen
	rt.pending++
	rt.mu.Unlock()
	return rt.vm.ToValue(p), gen, func(make func() goja.Value, err error) error {
		rt.pending--
		if err != nil {
			return reject(rt.jsError(err))
		}
		var v goja.Value
		if ex := rt.vm.Try(func() { v = make() }); ex != nil {
			return reject(ex.Value())
		}
		return resolve(v)
	}
}

// jsError makes a JS Error carrying err's text, for a host function's failure.
func (rt *Runtime) jsError(err error) goja.Value {
	v, _ := rt.vm.New(rt.vm.Get("Error"), rt.vm.ToValue(err.Error()))
	return v
}
