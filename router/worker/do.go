package worker

import (
	"context"
	_ "embed"
	"fmt"
	"sync"

	"github.com/dop251/goja"
	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
)

// DurableObject binds a Durable-Object namespace: the class the script
// exports of that name, with one storage per object id in the store
// (key-value in bbolt, SQL in a SQLite file per object: store/dosql).
//
// Calls to one id run one at a time, across every runtime of the worker
// (the input-gate model): a call waits for the one before it to settle.
// An object is constructed for each call (new Class(state, env)), on the
// runtime of the request that calls it: what it keeps in memory lasts for
// that call, what it keeps in state.storage lasts. (Cloudflare keeps an
// object in memory while it is in use; interceptd does not, so that no
// object's memory lives in a runtime another sandbox's request uses next.)
type DurableObject struct {
	// Store opens the class (the daemon passes backend.Bolt of its store).
	Store backend.ObjectClasses
	Class string

	mu    sync.Mutex
	gates map[string]*gate // by object id
}

// gate serialises the calls to one object.
type gate struct {
	ch   chan struct{}
	refs int
}

//go:embed do.js
var doJS string

// Value implements Binding.
func (b *DurableObject) Value(inst *Instance) (goja.Value, error) {
	vm := inst.RT.VM()
	cls, ok := inst.Exports.Named[b.Class]
	if !ok {
		return nil, fmt.Errorf("the script exports no class %s for this Durable-Object binding", b.Class)
	}
	if _, ok := goja.AssertConstructor(cls); !ok {
		return nil, fmt.Errorf("the script's export %s is not a class", b.Class)
	}
	objects := b.Store.Objects(b.Class)
	storage := func(id string) backend.ObjectStorage { return objects.Storage(id) }
	throw := func(err error) { panic(vm.NewGoError(err)) }
	native := vm.NewObject()
	native.Set("env", func() goja.Value { return inst.Env })
	native.Set("idFromName", func(name string) string { return store.ObjectIDFromName(b.Class, name) })
	native.Set("newUniqueId", func() string { return store.NewObjectID() })
	// idFromString takes an id's hex form, or a sandbox's name (what
	// ctx.containerId is): that sandbox's own object, owned by it, so that
	// `sandbox delete --purge` removes it.
	native.Set("idFromString", func(s string) string {
		if store.CheckObjectID(s) == nil {
			return s
		}
		id := store.SandboxObjectID(b.Class, s)
		if _, err := objects.Create(id, s); err != nil {
			throw(err)
		}
		return id
	})
	native.Set("lock", func(id string) goja.Value {
		inv := inst.req.Load()
		return inst.RT.Async(func() (func() goja.Value, error) {
			release, waited, err := b.enter(inv, id)
			inst.w.cfg.Metrics.doCall(inst.w.cfg.Name, b.Class, waited, err)
			if err != nil {
				return nil, err
			}
			return func() goja.Value { return vm.ToValue(release) }, nil
		})
	})
	native.Set("get", func(id string, keys []string) goja.Value {
		return inst.RT.Async(func() (func() goja.Value, error) {
			m, err := storage(id).Get(keys...)
			if err != nil {
				return nil, err
			}
			return func() goja.Value { return stringMap(vm, m) }, nil
		})
	})
	native.Set("put", func(id string, entries map[string]string) goja.Value {
		m := make(map[string][]byte, len(entries))
		for k, v := range entries {
			m[k] = []byte(v)
		}
		return inst.RT.Async(func() (func() goja.Value, error) {
			if err := storage(id).Put(m); err != nil {
				return nil, err
			}
			return func() goja.Value { return goja.Undefined() }, nil
		})
	})
	native.Set("delete", func(id string, keys []string) goja.Value {
		return inst.RT.Async(func() (func() goja.Value, error) {
			n, err := storage(id).Delete(keys...)
			if err != nil {
				return nil, err
			}
			return func() goja.Value { return vm.ToValue(n) }, nil
		})
	})
	native.Set("list", func(id string, o map[string]any) goja.Value {
		opts := store.ObjectListOptions{Start: str(o["start"]), StartAfter: str(o["startAfter"]), End: str(o["end"]),
			Prefix: str(o["prefix"]), Reverse: o["reverse"] == true, Limit: int(num(o["limit"]))}
		return inst.RT.Async(func() (func() goja.Value, error) {
			es, err := storage(id).List(opts)
			if err != nil {
				return nil, err
			}
			return func() goja.Value {
				arr := make([]any, len(es))
				for i, e := range es {
					arr[i] = []any{e.Key, string(e.Value)}
				}
				return vm.ToValue(arr)
			}, nil
		})
	})
	native.Set("deleteAll", func(id string) goja.Value {
		return inst.RT.Async(func() (func() goja.Value, error) {
			if err := storage(id).DeleteAll(); err != nil {
				return nil, err
			}
			return func() goja.Value { return goja.Undefined() }, nil
		})
	})
	// A transaction buffers in Go (store.ObjectTxn): its reads see its
	// writes, and commit writes all or nothing. Its calls are quick (no
	// I/O before the commit), so they are synchronous here.
	native.Set("begin", func(id string) goja.Value {
		tx := storage(id).Begin()
		o := vm.NewObject()
		o.Set("get", func(keys []string) goja.Value {
			m, err := tx.Get(keys...)
			if err != nil {
				throw(err)
			}
			return stringMap(vm, m)
		})
		o.Set("put", func(entries map[string]string) {
			m := make(map[string][]byte, len(entries))
			for k, v := range entries {
				m[k] = []byte(v)
			}
			if err := tx.Put(m); err != nil {
				throw(err)
			}
		})
		o.Set("delete", func(keys []string) int {
			n, err := tx.Delete(keys...)
			if err != nil {
				throw(err)
			}
			return n
		})
		o.Set("list", func(o map[string]any) goja.Value {
			es, err := tx.List(store.ObjectListOptions{Start: str(o["start"]), StartAfter: str(o["startAfter"]), End: str(o["end"]),
				Prefix: str(o["prefix"]), Reverse: o["reverse"] == true, Limit: int(num(o["limit"]))})
			if err != nil {
				throw(err)
			}
			arr := make([]any, len(es))
			for i, e := range es {
				arr[i] = []any{e.Key, string(e.Value)}
			}
			return vm.ToValue(arr)
		})
		o.Set("rollback", func() { tx.Rollback() })
		o.Set("commit", func() goja.Value {
			return inst.RT.Async(func() (func() goja.Value, error) {
				if err := tx.Commit(); err != nil {
					return nil, err
				}
				return func() goja.Value { return goja.Undefined() }, nil
			})
		})
		return o
	})
	// sql.exec is synchronous, as Cloudflare's is: the query runs on the
	// loop (each call is one SQLite transaction).
	native.Set("sql", func(id, query string, args []any) goja.Value {
		for i, a := range args {
			if ab, ok := a.(goja.ArrayBuffer); ok {
				args[i] = ab.Bytes()
			}
		}
		c, err := storage(id).Exec(query, args...)
		if err != nil {
			throw(err)
		}
		rows := make([]any, len(c.Rows))
		for i, r := range c.Rows {
			row := make([]any, len(r))
			for j, v := range r {
				if b, ok := v.([]byte); ok {
					row[j] = vm.NewArrayBuffer(b)
				} else {
					row[j] = v
				}
			}
			rows[i] = row
		}
		o := vm.NewObject()
		o.Set("columns", c.Columns)
		o.Set("rows", rows)
		o.Set("rowsRead", c.RowsRead)
		o.Set("rowsWritten", c.RowsWritten)
		return o
	})
	factory, err := vm.RunString(doJS)
	if err != nil {
		return nil, fmt.Errorf("do.js: %w", err)
	}
	f, _ := goja.AssertFunction(factory)
	return f(goja.Undefined(), native, cls)
}

// enter waits for the object's gate and returns the function that opens
// it again. The gate is also opened when the request ends, if the script
// never did (an exception, a limit): a call never holds an object past
// its request.
func (b *DurableObject) enter(inv *invocation, id string) (release func(), waited bool, err error) {
	b.mu.Lock()
	if b.gates == nil {
		b.gates = map[string]*gate{}
	}
	g := b.gates[id]
	if g == nil {
		g = &gate{ch: make(chan struct{}, 1)}
		b.gates[id] = g
	}
	g.refs++
	b.mu.Unlock()
	leave := func() {
		b.mu.Lock()
		if g.refs--; g.refs == 0 {
			delete(b.gates, id)
		}
		b.mu.Unlock()
	}
	ctx := context.Background()
	if inv != nil {
		ctx = inv.ctx
	}
	select {
	case g.ch <- struct{}{}:
	default:
		waited = true // another call to the object runs: this one waits its turn
		select {
		case g.ch <- struct{}{}:
		case <-ctx.Done():
			leave()
			return nil, true, fmt.Errorf("waiting for the Durable Object: %w", ctx.Err())
		}
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			<-g.ch
			leave()
		})
	}
	if inv != nil && !inv.hold(release) {
		release() // the request ended while this call waited
		return nil, waited, fmt.Errorf("the request ended while waiting for the Durable Object")
	}
	return release, waited, nil
}

func stringMap(vm *goja.Runtime, m map[string][]byte) goja.Value {
	o := make(map[string]any, len(m))
	for k, v := range m {
		o[k] = string(v)
	}
	return vm.ToValue(o)
}

func str(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return ""
}

func num(v any) float64 {
	switch n := v.(type) {
	case int64:
		return float64(n)
	case float64:
		return n
	}
	return 0
}
