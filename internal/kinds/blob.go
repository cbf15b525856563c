package kinds

import (
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/handlers"
)

func init() { Register(Kind{Name: "blob", NewConfig: func() Config { return &Blob{} }}) }

// Blob is a blob handler: an R2/S3-style bucket.
type Blob struct {
	// Bucket names the bucket. Default "default".
	Bucket string `yaml:"bucket"`
	// Namespace is not a blob field; it is decoded to say so.
	Namespace string `yaml:"namespace"`
	// Scope is shared (the default) or sandbox.
	Scope  string `yaml:"scope"`
	Limits Limits `yaml:"limits"`
}

func (c *Blob) Space() string    { return orDefault(c.Bucket) }
func (c *Blob) PerSandbox() bool { return c.Scope == "sandbox" }

func (c *Blob) Validate(bad func(field, format string, args ...any)) {
	if c.Namespace != "" {
		bad("namespace", "a blob handler has a bucket, not a namespace")
	}
	if c.Limits.MaxValueBytes != 0 || c.Limits.MaxMetadataBytes != 0 {
		bad("limits", "max_value_bytes and max_metadata_bytes apply to kv and state handlers only")
	}
	validateStore(bad, c.Scope, c.Space(), c.Limits, false)
}

func (c *Blob) Build(d Deps) (router.Handler, error) {
	return &handlers.Blob{Store: d.Stores, Bucket: c.Space(), PerSandbox: c.PerSandbox(), Limits: c.Limits.store()}, nil
}
