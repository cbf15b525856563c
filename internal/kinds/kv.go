package kinds

import (
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/handlers"
	"github.com/interceptd/interceptd/store"
)

func init() { Register(Kind{Name: "kv", NewConfig: func() Config { return &KV{} }}) }

// KV is a kv handler: a Workers KV-style namespace.
type KV struct {
	// Namespace names the KV namespace. Default "default".
	Namespace string `yaml:"namespace"`
	// Bucket is not a kv field; it is decoded to say so.
	Bucket string `yaml:"bucket"`
	// Scope is shared (the default: every sandbox sees the same keys) or
	// sandbox (keys are private to the calling sandbox).
	Scope  string `yaml:"scope"`
	Limits Limits `yaml:"limits"`
}

func (c *KV) Space() string    { return orDefault(c.Namespace) }
func (c *KV) PerSandbox() bool { return c.Scope == "sandbox" }

func (c *KV) Validate(bad func(field, format string, args ...any)) {
	validateNamespaced(bad, "kv", c.Bucket, c.Limits)
	validateStore(bad, c.Scope, c.Space(), c.Limits, false)
}

func (c *KV) Build(d Deps) (router.Handler, error) {
	return &handlers.KV{Store: d.Stores, Kind: store.KindKV, Namespace: c.Space(), PerSandbox: c.PerSandbox(), Limits: c.Limits.store()}, nil
}

// validateNamespaced rejects the blob-only fields on kv and state handlers.
func validateNamespaced(bad func(field, format string, args ...any), kind, bucket string, l Limits) {
	if bucket != "" {
		bad("bucket", "a %s handler has a namespace, not a bucket", kind)
	}
	if l.MaxObjectBytes != 0 {
		bad("limits.max_object_bytes", "applies to blob handlers only")
	}
}
