package worker

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/dop251/goja"
	"github.com/interceptd/interceptd/router/worker/jsrt"
	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
)

// KV is a Workers KV namespace on env, on the same store namespace the kv
// handler and `interceptd kv` use (shared scope): a value written by one is
// read by the others. Its JavaScript side (kv.js) follows Cloudflare's
// documented API: get (text, json, arrayBuffer, stream; bulk with an array
// of keys), getWithMetadata, put (expiration, expirationTtl, metadata),
// delete, list (prefix, limit, cursor).
type KV struct {
	// Store opens the namespace (the daemon passes backend.Bolt of its
	// store).
	Store     backend.KVSpaces
	Namespace string
	Limits    store.Limits
}

//go:embed kv.js
var kvJS string

// maxBulkGet is how many keys one bulk get may name, as Workers KV allows.
const maxBulkGet = 100

// Value implements Binding.
func (b *KV) Value(inst *Instance) (goja.Value, error) {
	vm := inst.RT.VM()
	kv := b.Store.Keys(store.KindKV, b.Namespace, store.ScopeShared, b.Limits)
	native := vm.NewObject()
	// entry resolves to {value: ArrayBuffer, metadata: string|null,
	// expiration: number|null}, or null when the key is absent or expired.
	entryValue := func(e store.Entry) goja.Value {
		o := vm.NewObject()
		o.Set("value", vm.NewArrayBuffer(e.Value))
		if e.Metadata != nil {
			o.Set("metadata", string(e.Metadata))
		} else {
			o.Set("metadata", goja.Null())
		}
		if !e.Expires.IsZero() {
			o.Set("expiration", e.Expires.Unix())
		} else {
			o.Set("expiration", goja.Null())
		}
		return o
	}
	native.Set("get", func(keys []string) goja.Value {
		if len(keys) > maxBulkGet {
			panic(vm.NewTypeError("KV get: %d keys, at most %d in one call", len(keys), maxBulkGet))
		}
		// A read of the store takes microseconds: on the loop, it is cheaper
		// than the goroutine and the wake-up Async costs.
		return inst.RT.AsyncNow(func() (func() goja.Value, error) {
			found := make([]*store.Entry, len(keys))
			for i, k := range keys {
				e, err := kv.Get(k)
				if errors.Is(err, store.ErrNotFound) {
					continue
				}
				if err != nil {
					return nil, kvError("get", err)
				}
				found[i] = &e
			}
			return func() goja.Value {
				arr := make([]any, len(keys))
				for i, e := range found {
					if e == nil {
						arr[i] = goja.Null()
					} else {
						arr[i] = entryValue(*e)
					}
				}
				return vm.ToValue(arr)
			}, nil
		})
	})
	// getText is get(key) and get(key, "text"), the common case, in one step:
	// the string or null, without the entry object, the ArrayBuffer and the
	// TextDecoder that kv.js would make of them.
	native.Set("getText", func(c goja.FunctionCall) goja.Value {
		key := c.Argument(0).String()
		return inst.RT.AsyncNow(func() (func() goja.Value, error) {
			e, err := kv.Get(key)
			if errors.Is(err, store.ErrNotFound) {
				return func() goja.Value { return goja.Null() }, nil
			}
			if err != nil {
				return nil, kvError("get", err)
			}
			return func() goja.Value { return vm.ToValue(jsrt.DecodeText(e.Value)) }, nil
		})
	})
	native.Set("put", func(key string, value goja.ArrayBuffer, expiration, ttl goja.Value, metadata goja.Value) goja.Value {
		e := store.Entry{Value: append([]byte(nil), value.Bytes()...)}
		if inv := inst.req.Load(); inv != nil && !inv.env.Operator {
			e.Owner = inv.env.Sandbox
		}
		exp, err := expiryOf(expiration, ttl)
		if err != nil {
			panic(vm.NewTypeError("KV put: %v", err))
		}
		e.Expires = exp
		if metadata != nil && !goja.IsUndefined(metadata) && !goja.IsNull(metadata) {
			e.Metadata = []byte(metadata.String())
		}
		return inst.RT.Async(func() (func() goja.Value, error) {
			if err := kv.Put(key, e); err != nil {
				return nil, kvError("put", err)
			}
			return func() goja.Value { return goja.Undefined() }, nil
		})
	})
	native.Set("delete", func(key string) goja.Value {
		return inst.RT.Async(func() (func() goja.Value, error) {
			if err := kv.Delete(key); err != nil {
				return nil, kvError("delete", err)
			}
			return func() goja.Value { return goja.Undefined() }, nil
		})
	})
	native.Set("list", func(prefix, cursor string, limit int) goja.Value {
		return inst.RT.Async(func() (func() goja.Value, error) {
			res, err := kv.List(store.ListOptions{Prefix: prefix, Cursor: cursor, Limit: limit})
			if err != nil {
				return nil, kvError("list", err)
			}
			b, err := json.Marshal(res)
			if err != nil {
				return nil, err
			}
			return func() goja.Value { return vm.ToValue(string(b)) }, nil
		})
	})
	factory, err := inst.RT.VM().RunString(kvJS)
	if err != nil {
		return nil, fmt.Errorf("kv.js: %w", err)
	}
	f, _ := goja.AssertFunction(factory)
	return f(goja.Undefined(), native)
}

// expiryOf judges put's expiration (unix seconds) and expirationTtl
// (seconds from now) as the kv handler does (store.ParseExpiry).
func expiryOf(expiration, ttl goja.Value) (time.Time, error) {
	str := func(v goja.Value, name string) (string, error) {
		if v == nil || goja.IsUndefined(v) || goja.IsNull(v) {
			return "", nil
		}
		f := v.ToFloat()
		if math.IsNaN(f) || f != math.Trunc(f) {
			return "", fmt.Errorf("%s must be an integer number of seconds, not %s", name, v)
		}
		return fmt.Sprint(int64(f)), nil
	}
	e, err := str(expiration, "expiration")
	if err != nil {
		return time.Time{}, err
	}
	t, err := str(ttl, "expirationTtl")
	if err != nil {
		return time.Time{}, err
	}
	return store.ParseExpiry(t, e, time.Now())
}

// kvError is a store failure as the script sees it: the store's own
// words (which name the limit), never a path.
// An engine that cannot be reached (etcd) is said in the words the kv
// handler answers 503 with: its address and its own error are the host's
// business, not the script's.
func kvError(op string, err error) error {
	if errors.Is(err, store.ErrUnavailable) {
		return fmt.Errorf("KV %s failed: %w: the store's backend cannot be reached; try again", op, store.ErrUnavailable)
	}
	return fmt.Errorf("KV %s failed: %w", op, err)
}
