package worker

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dop251/goja"
	"github.com/interceptd/interceptd/store"
	"github.com/interceptd/interceptd/store/backend"
)

// R2 is an R2 bucket on env, on a blob bucket of the store (shared scope),
// the same one the blob handler and `interceptd blob` use. Its JavaScript
// side (r2.js) follows Cloudflare's documented R2 API: get (range,
// onlyIf), head, put (httpMetadata, customMetadata, md5, onlyIf), delete
// (one key or many), list (prefix, delimiter, cursor, limit, include).
// Object bodies stream both ways: a get's body is read from the store as
// the script (or the response) reads it, and a put of request.body streams
// into the store without being held.
type R2 struct {
	// Store opens the bucket (the daemon passes backend.Bolt of its store).
	Store  backend.BlobBuckets
	Bucket string
	Limits store.Limits
}

//go:embed r2.js
var r2JS string

// r2Info is an object's description for r2.js.
type r2Info struct {
	Key      string            `json:"key"`
	Version  string            `json:"version"`
	Size     int64             `json:"size"`
	ETag     string            `json:"etag"`
	Uploaded int64             `json:"uploaded"` // unix ms
	HTTP     map[string]string `json:"http"`
	Custom   map[string]string `json:"custom"`
	Range    *[2]int64         `json:"range,omitempty"` // offset, length
}

func infoOf(oi store.ObjectInfo) r2Info {
	return r2Info{Key: oi.Key, Version: oi.Upload, Size: oi.Size, ETag: oi.ETag, Uploaded: oi.Uploaded.UnixMilli(),
		HTTP: nonNil(oi.HTTP), Custom: nonNil(oi.Custom)}
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// r2Cond is onlyIf as r2.js passes it.
type r2Cond struct {
	EtagMatches      []string `json:"etagMatches"`
	EtagDoesNotMatch []string `json:"etagDoesNotMatch"`
	UploadedBefore   int64    `json:"uploadedBefore"` // unix ms, 0: none
	UploadedAfter    int64    `json:"uploadedAfter"`
}

// holds reports whether cur meets the conditions, as R2 evaluates them:
// an etag list matches the object's etag (or "*"); a missing object fails
// etagMatches and passes the rest.
func (c *r2Cond) holds(cur *store.ObjectInfo) bool {
	if c == nil {
		return true
	}
	match := func(tags []string) bool {
		for _, t := range tags {
			t = strings.Trim(strings.TrimPrefix(t, "W/"), `"`)
			if t == "*" || (cur != nil && t == cur.ETag) {
				return true
			}
		}
		return false
	}
	if len(c.EtagMatches) > 0 && (cur == nil || !match(c.EtagMatches)) {
		return false
	}
	if len(c.EtagDoesNotMatch) > 0 && cur != nil && match(c.EtagDoesNotMatch) {
		return false
	}
	if cur != nil && c.UploadedBefore != 0 && !cur.Uploaded.Before(time.UnixMilli(c.UploadedBefore)) {
		return false
	}
	if cur != nil && c.UploadedAfter != 0 && !cur.Uploaded.After(time.UnixMilli(c.UploadedAfter)) {
		return false
	}
	return true
}

func parseCond(s string) (*r2Cond, error) {
	if s == "" {
		return nil, nil
	}
	var c r2Cond
	if err := json.Unmarshal([]byte(s), &c); err != nil {
		return nil, fmt.Errorf("onlyIf: %w", err)
	}
	return &c, nil
}

// Value implements Binding.
func (b *R2) Value(inst *Instance) (goja.Value, error) {
	vm := inst.RT.VM()
	bucket := b.Store.Blobs(b.Bucket, store.ScopeShared, b.Limits)
	native := vm.NewObject()
	jsonOf := func(v any) func() goja.Value {
		buf, _ := json.Marshal(v)
		return func() goja.Value { return vm.ToValue(string(buf)) }
	}
	null := func() goja.Value { return goja.Null() }
	native.Set("head", func(key string) goja.Value {
		return inst.RT.Async(func() (func() goja.Value, error) {
			oi, err := bucket.Head(key)
			if errors.Is(err, store.ErrNotFound) {
				return null, nil
			}
			if err != nil {
				return nil, r2Error("head", err)
			}
			return jsonOf(infoOf(oi)), nil
		})
	})
	// get resolves to [info, bodyHandle] (the body null when onlyIf failed),
	// or null when the object is absent. rng is [offset, length] or
	// [-suffix] or empty.
	native.Set("get", func(key, cond string, rng []int64) goja.Value {
		c, err := parseCond(cond)
		if err != nil {
			panic(vm.NewTypeError("R2 get: %v", err))
		}
		return inst.RT.Async(func() (func() goja.Value, error) {
			obj, err := bucket.Open(key)
			if errors.Is(err, store.ErrNotFound) {
				return null, nil
			}
			if err != nil {
				return nil, r2Error("get", err)
			}
			oi := obj.Info()
			info := infoOf(*oi)
			if !c.holds(oi) {
				obj.Close()
				return func() goja.Value { return vm.ToValue([]any{jsonOf(info)(), goja.Null()}) }, nil
			}
			var body io.Reader = obj
			if len(rng) > 0 {
				off, n := rng[0], int64(0)
				if len(rng) == 1 && off < 0 { // suffix
					off, n = max(oi.Size+off, 0), min(-off, oi.Size)
				} else if len(rng) == 2 {
					n = rng[1]
					if n < 0 || off+n > oi.Size {
						n = oi.Size - off
					}
				} else {
					n = oi.Size - off
				}
				if off < 0 || off > oi.Size {
					obj.Close()
					return nil, fmt.Errorf("R2 get: range offset %d outside the object's %d bytes", rng[0], oi.Size)
				}
				if _, err := obj.Seek(off, io.SeekStart); err != nil {
					obj.Close()
					return nil, r2Error("get", err)
				}
				body = struct {
					io.Reader
					io.Closer
				}{io.LimitReader(obj, n), obj}
				info.Range = &[2]int64{off, n}
			}
			return func() goja.Value {
				return vm.ToValue([]any{jsonOf(info)(), inst.RT.NewStream(body)})
			}, nil
		})
	})
	// put takes the body as a Request's (a Go-backed stream is passed on
	// unread) and resolves to the info, or null when onlyIf failed.
	native.Set("put", func(key string, carrier goja.Value, httpMeta, custom map[string]string, md5hex, cond string) goja.Value {
		c, err := parseCond(cond)
		if err != nil {
			panic(vm.NewTypeError("R2 put: %v", err))
		}
		req, err := inst.RT.ToRequest(context.Background(), carrier)
		if err != nil {
			panic(vm.NewTypeError("R2 put: %v", err))
		}
		opts := store.PutOptions{HTTP: httpMeta, Custom: custom, Size: req.ContentLength}
		if opts.Size == 0 && req.Body != nil && req.Body != http.NoBody {
			opts.Size = -1
		}
		if md5hex != "" {
			if opts.ContentMD5, err = hexBytes(md5hex); err != nil {
				panic(vm.NewTypeError("R2 put: md5: %v", err))
			}
		}
		if inv := inst.req.Load(); inv != nil && !inv.env.Operator {
			opts.Owner = inv.env.Sandbox
		}
		failed := false
		if c != nil {
			opts.Precondition = func(cur *store.ObjectInfo) error {
				if !c.holds(cur) {
					failed = true
					return store.ErrPreconditionFailed
				}
				return nil
			}
		}
		return inst.RT.Async(func() (func() goja.Value, error) {
			var body io.Reader = http.NoBody
			if req.Body != nil {
				body = req.Body
				defer req.Body.Close()
			}
			oi, err := bucket.Put(key, body, opts)
			if failed && errors.Is(err, store.ErrPreconditionFailed) {
				return null, nil
			}
			if err != nil {
				return nil, r2Error("put", err)
			}
			return jsonOf(infoOf(oi)), nil
		})
	})
	native.Set("delete", func(keys []string) goja.Value {
		if len(keys) > 1000 {
			panic(vm.NewTypeError("R2 delete: %d keys, at most 1000 in one call", len(keys)))
		}
		return inst.RT.Async(func() (func() goja.Value, error) {
			for _, k := range keys {
				if err := bucket.Delete(k); err != nil && !errors.Is(err, store.ErrNotFound) {
					return nil, r2Error("delete", err)
				}
			}
			return func() goja.Value { return goja.Undefined() }, nil
		})
	})
	native.Set("list", func(prefix, delimiter, cursor string, limit int) goja.Value {
		return inst.RT.Async(func() (func() goja.Value, error) {
			res, err := bucket.List(store.BlobListOptions{Prefix: prefix, Delimiter: delimiter, Cursor: cursor, Limit: limit})
			if err != nil {
				return nil, r2Error("list", err)
			}
			out := struct {
				Objects   []r2Info `json:"objects"`
				Truncated bool     `json:"truncated"`
				Cursor    string   `json:"cursor,omitempty"`
				Prefixes  []string `json:"delimitedPrefixes"`
			}{Objects: []r2Info{}, Truncated: res.Truncated, Cursor: res.Cursor, Prefixes: append([]string{}, res.DelimitedPrefixes...)}
			for _, oi := range res.Objects {
				out.Objects = append(out.Objects, infoOf(oi))
			}
			return jsonOf(out), nil
		})
	})
	factory, err := vm.RunString(r2JS)
	if err != nil {
		return nil, fmt.Errorf("r2.js: %w", err)
	}
	f, _ := goja.AssertFunction(factory)
	return f(goja.Undefined(), native)
}

func hexBytes(s string) ([]byte, error) {
	if len(s)%2 != 0 {
		return nil, errors.New("odd length")
	}
	b := make([]byte, len(s)/2)
	for i := range b {
		v, err := strconv.ParseUint(s[2*i:2*i+2], 16, 8)
		if err != nil {
			return nil, err
		}
		b[i] = byte(v)
	}
	return b, nil
}

func r2Error(op string, err error) error {
	if errors.Is(err, store.ErrUnavailable) {
		// As the blob handler answers it: the script (and whoever it
		// passes the message to) learns the store is down, the log where.
		slog.Warn("R2 binding: store unavailable", "op", op, "err", err)
		return fmt.Errorf("R2 %s failed: %w: the store's backend cannot be reached; try again", op, store.ErrUnavailable)
	}
	return fmt.Errorf("R2 %s failed: %w", op, err)
}
