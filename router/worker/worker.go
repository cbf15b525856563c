// Package worker runs operator-written JavaScript handlers: Cloudflare-style
// outbound Workers. A Worker is one script (an ES module: `export default {
// outbound, outboundByHost }` and Durable-Object classes) with its bindings
// (env) and limits; it serves a request on one runtime (router/worker/jsrt)
// taken from its pool, and it is a router.Program, so the router can ask it
// which of its functions serves a sandbox's request.
//
// It imports the router's contract, jsrt, the store and policy; the bindings
// (KV, R2 buckets, Durable Objects, secrets, vars) are in this package.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dop251/goja"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/handlers"
	"github.com/interceptd/interceptd/router/worker/jsrt"
)

// Limits bound one invocation.
type Limits struct {
	// CPU is the JavaScript running time per request (default 50 ms);
	// waiting for I/O does not count.
	CPU time.Duration
	// Wall is the whole request's time (default 30 s).
	Wall time.Duration
	// Subrequests is how many fetch() calls one request may make (default 50).
	Subrequests int
	// Runtimes is the most runtimes the pool keeps (default 8).
	Runtimes int
}

func (l Limits) withDefaults() Limits {
	if l.CPU == 0 {
		l.CPU = 50 * time.Millisecond
	}
	if l.Wall == 0 {
		l.Wall = 30 * time.Second
	}
	if l.Subrequests == 0 {
		l.Subrequests = 50
	}
	if l.Runtimes == 0 {
		l.Runtimes = 8
	}
	return l
}

// Config is one worker.
type Config struct {
	Name   string
	Script string // the file
	// Bindings become env's properties, by name.
	Bindings map[string]Binding
	Limits   Limits
	// HTTPS marks the outboundByHost functions' routes for HTTPS
	// interception (router.Route.HTTPS); never the outbound's.
	HTTPS bool
	// Fetch serves the script's fetch() to the network (see Fetcher);
	// nil refuses every fetch.
	Fetch   *Fetcher
	Metrics *Metrics
	Logger  *slog.Logger
}

// Binding makes one env property in a runtime.
type Binding interface {
	// Value makes the binding's JS value in inst's runtime; called once per
	// runtime, after the script is loaded (a Durable-Object binding needs
	// its class from the exports).
	Value(inst *Instance) (goja.Value, error)
}

// Worker is a loaded worker: its script's version in force and a pool of
// runtimes that run it.
type Worker struct {
	cfg Config
	log *slog.Logger

	cur atomic.Pointer[version]
}

// version is one load of the script: what it exports and the runtimes
// running it. A reload makes a new version; requests in flight finish on
// the old one, whose runtimes are dropped as they come back.
type version struct {
	w        *Worker
	prog     *jsrt.Program
	hosts    []string // outboundByHost's keys, in the script's order
	patterns router.HostPatterns[router.Route]
	outbound bool
	routes   map[string]router.Route // by outboundByHost key, and "" for outbound
	pool     chan *Instance
	made     atomic.Int32
	closed   atomic.Bool
	done     chan struct{} // closed with the version: its waiters go to the next
}

// New loads cfg's script. Its error names the file, line and column of a
// script that does not compile, or what its exports lack.
func New(cfg Config) (*Worker, error) {
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	w := &Worker{cfg: cfg, log: cfg.Logger.With("worker", cfg.Name)}
	v, err := w.load()
	if err != nil {
		return nil, err
	}
	w.cur.Store(v)
	return w, nil
}

// Script is the worker's script file.
func (w *Worker) Script() string { return w.cfg.Script }

// Name is the worker's name.
func (w *Worker) Name() string { return w.cfg.Name }

// Reload reads and compiles the script again and swaps it in; requests in
// flight finish on the old version. A script that fails to load keeps the
// old one in force, and the error says why (file, line, column).
func (w *Worker) Reload() error {
	v, err := w.load()
	if err != nil {
		w.cfg.Metrics.reload(w.cfg.Name, false)
		return err
	}
	old := w.cur.Swap(v)
	old.close()
	w.cfg.Metrics.reload(w.cfg.Name, true)
	w.log.Info("worker reloaded", "script", w.cfg.Script, "hosts", len(v.hosts))
	return nil
}

// Hosts are the keys of the script's outboundByHost.
func (w *Worker) Hosts() []string { return w.cur.Load().hosts }

// HasOutbound reports whether the script exports an outbound function.
func (w *Worker) HasOutbound() bool { return w.cur.Load().outbound }

// Match implements router.Program.
func (w *Worker) Match(host string, dest netip.AddrPort) (router.Route, bool) {
	_, r, ok := w.cur.Load().patterns.Match(host, dest)
	return r, ok
}

// MatchName reports whether the DNS name (lowercase, no trailing dot) is
// one of the script's outboundByHost name keys serves, and that key's host
// part (its virtual address's name): see router.HostPatterns.MatchName.
func (w *Worker) MatchName(name string) (string, bool) { return w.cur.Load().patterns.MatchName(name) }

// Names are the host parts of the script's name keys: what needs a virtual
// address.
func (w *Worker) Names() []string { return w.cur.Load().patterns.Names() }

// Outbound implements router.Program.
func (w *Worker) Outbound() (router.Route, bool) {
	v := w.cur.Load()
	r, ok := v.routes[""]
	return r, ok
}

// Check compiles and loads the script in file without a daemon, and lists
// what it exports (outbound, outboundByHost's keys, classes).
func Check(file string) ([]string, error) {
	src, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	prog, err := jsrt.Compile(file, src)
	if err != nil {
		return nil, err
	}
	rt := jsrt.New(jsrt.Options{CPULimit: time.Second})
	ex, err := rt.Load(prog)
	if err != nil {
		return nil, err
	}
	hosts, outbound, err := handlersOf(rt, ex)
	if err != nil {
		return nil, err
	}
	var out []string
	if outbound {
		out = append(out, "outbound")
	}
	for _, h := range hosts {
		out = append(out, "outboundByHost: "+h)
	}
	for _, n := range ex.Names() {
		if n != "default" {
			out = append(out, "export: "+n)
		}
	}
	return out, nil
}

func (w *Worker) load() (*version, error) {
	src, err := os.ReadFile(w.cfg.Script)
	if err != nil {
		return nil, fmt.Errorf("worker %s: %w", w.cfg.Name, err)
	}
	prog, err := jsrt.Compile(w.cfg.Script, src)
	if err != nil {
		return nil, fmt.Errorf("worker %s: %w", w.cfg.Name, err)
	}
	v := &version{w: w, prog: prog, pool: make(chan *Instance, w.cfg.Limits.Runtimes), routes: map[string]router.Route{}, done: make(chan struct{})}
	// The first runtime is made now: it proves the script loads and says
	// what it exports.
	inst, err := v.newInstance()
	if err != nil {
		return nil, fmt.Errorf("worker %s: %w", w.cfg.Name, err)
	}
	v.hosts, v.outbound = inst.hosts, inst.outbound
	for _, h := range v.hosts {
		r := router.Route{Name: router.WorkerLabel(w.cfg.Name), Handler: &function{v: v, key: h}, Function: h, HTTPS: w.cfg.HTTPS}
		if err := v.patterns.Add(h, r); err != nil {
			return nil, fmt.Errorf("worker %s: outboundByHost key %q: %w", w.cfg.Name, h, err)
		}
		v.routes[h] = r
	}
	if v.outbound {
		v.routes[""] = router.Route{Name: router.WorkerOutboundLabel(w.cfg.Name), Handler: &function{v: v, key: ""}, Function: "outbound"}
	}
	v.pool <- inst
	return v, nil
}

// Instance is one runtime running one version of the script, with what it
// exported and the env its bindings made.
type Instance struct {
	w *Worker

	RT      *jsrt.Runtime
	Exports *jsrt.Exports
	// Env is the env object passed to every function.
	Env *goja.Object

	fns      map[string]goja.Value // by outboundByHost key, "" for outbound
	secrets  [][]byte              // the secret bindings' values
	scrub    *handlers.Scrubber    // masks them in responses; nil without secrets
	hosts    []string
	outbound bool
	req      atomic.Pointer[invocation] // the request the runtime serves now
	seq      uint64                     // the last invocation's number (see newContext)
	ctxProto *goja.Object               // every ctx's prototype (see ctxProg)
	ctxKeys  ctxKeys
}

func (v *version) newInstance() (*Instance, error) {
	w := v.w
	inst := &Instance{w: w, fns: map[string]goja.Value{}}
	inst.RT = jsrt.New(jsrt.Options{
		CPULimit: w.cfg.Limits.CPU,
		Logger:   w.log,
		Fetch: func(ctx context.Context, req *http.Request) (*http.Response, error) {
			return inst.fetch(ctx, req)
		},
	})
	ex, err := inst.RT.Load(v.prog)
	if err != nil {
		return nil, err
	}
	inst.Exports = ex
	if inst.hosts, inst.outbound, err = handlersOf(inst.RT, ex); err != nil {
		return nil, err
	}
	def := ex.Default.ToObject(inst.RT.VM())
	// The functions are called as methods of their objects (this is the default
	// export, or outboundByHost), bound in JS: a Go wrapper would cost each request
	// a crossing into Go and back.
	bindOf, _ := goja.AssertFunction(inst.RT.VM().Get("Function").ToObject(inst.RT.VM()).Get("prototype").ToObject(inst.RT.VM()).Get("bind"))
	var bindErr error
	bind := func(this *goja.Object, fn goja.Value) goja.Value {
		f, err := bindOf(fn, this)
		if _, ok := goja.AssertFunction(f); err != nil || !ok {
			// Only a script that replaced Function.prototype.bind gets here.
			bindErr = fmt.Errorf("binding the handler functions to their objects: Function.prototype.bind failed: %v", err)
			return fn
		}
		return f
	}
	if inst.outbound {
		inst.fns[""] = bind(def, def.Get("outbound"))
	}
	if len(inst.hosts) > 0 {
		by := def.Get("outboundByHost").ToObject(inst.RT.VM())
		for _, h := range inst.hosts {
			inst.fns[h] = bind(by, by.Get(h))
		}
	}
	if bindErr != nil {
		return nil, bindErr
	}
	inst.Env = inst.RT.VM().NewObject()
	names := make([]string, 0, len(w.cfg.Bindings))
	for n := range w.cfg.Bindings {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		val, err := w.cfg.Bindings[n].Value(inst)
		if err != nil {
			return nil, fmt.Errorf("binding %s: %w", n, err)
		}
		inst.Env.Set(n, val)
	}
	if inst.ctxProto, err = inst.contextMaker(); err != nil {
		return nil, err
	}
	inst.scrub = handlers.NewScrubber(inst.secrets)
	v.made.Add(1)
	w.cfg.Metrics.runtimes(w.cfg.Name, 1)
	return inst, nil
}

// handlersOf reads outbound and outboundByHost from a module's default
// export.
func handlersOf(rt *jsrt.Runtime, ex *jsrt.Exports) (hosts []string, outbound bool, err error) {
	if ex.Default == nil || goja.IsUndefined(ex.Default) || goja.IsNull(ex.Default) {
		return nil, false, errors.New("the script has no default export: want export default { outbound, outboundByHost }")
	}
	def := ex.Default.ToObject(rt.VM())
	if fn := def.Get("outbound"); fn != nil && !goja.IsUndefined(fn) {
		if _, ok := goja.AssertFunction(fn); !ok {
			return nil, false, errors.New("the default export's outbound is not a function")
		}
		outbound = true
	}
	if by := def.Get("outboundByHost"); by != nil && !goja.IsUndefined(by) {
		o := by.ToObject(rt.VM())
		for _, k := range o.Keys() {
			if _, ok := goja.AssertFunction(o.Get(k)); !ok {
				return nil, false, fmt.Errorf("outboundByHost[%q] is not a function", k)
			}
			hosts = append(hosts, strings.ToLower(k))
		}
	}
	if !outbound && len(hosts) == 0 {
		return nil, false, errors.New("the default export has neither outbound nor outboundByHost")
	}
	return hosts, outbound, nil
}

// get takes a runtime from the pool, or makes one while the pool is not
// full; otherwise it waits (counted) until one comes back or ctx ends.
func (v *version) get(ctx context.Context) (*Instance, error) {
	select {
	case inst := <-v.pool:
		return inst, nil
	default:
	}
	if int(v.made.Load()) < cap(v.pool) {
		return v.newInstance()
	}
	v.w.cfg.Metrics.poolWait(v.w.cfg.Name)
	select {
	case inst := <-v.pool:
		return inst, nil
	case <-v.done:
		return nil, errReplaced
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// errReplaced: the version was replaced (a reload) while a request waited
// for one of its runtimes; the request goes to the new version.
var errReplaced = errors.New("the worker was reloaded")

// put gives a runtime back, or drops it: when it is broken (interrupted)
// or its version has been replaced.
func (v *version) put(inst *Instance) {
	if inst.RT.Broken() || v.closed.Load() {
		v.made.Add(-1)
		v.w.cfg.Metrics.runtimes(v.w.cfg.Name, -1)
		return
	}
	select {
	case v.pool <- inst:
	default:
		v.made.Add(-1)
		v.w.cfg.Metrics.runtimes(v.w.cfg.Name, -1)
	}
}

func (v *version) close() {
	v.closed.Store(true)
	close(v.done)
	for {
		select {
		case <-v.pool:
			v.made.Add(-1)
			v.w.cfg.Metrics.runtimes(v.w.cfg.Name, -1)
		default:
			return
		}
	}
}
