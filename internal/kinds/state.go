package kinds

import (
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/handlers"
	"github.com/interceptd/interceptd/store"
)

func init() { Register(Kind{Name: "state", NewConfig: func() Config { return &State{} }}) }

// State is a state handler: Durable Object-style storage with
// transactions, always private to the calling sandbox.
type State struct {
	// Namespace names the state namespace. Default "default".
	Namespace string `yaml:"namespace"`
	// Bucket is not a state field; it is decoded to say so.
	Bucket string `yaml:"bucket"`
	// Scope may only say sandbox: state is always per sandbox.
	Scope  string `yaml:"scope"`
	Limits Limits `yaml:"limits"`
}

func (c *State) Space() string  { return orDefault(c.Namespace) }
func (*State) PerSandbox() bool { return true }

func (c *State) Validate(bad func(field, format string, args ...any)) {
	validateNamespaced(bad, "state", c.Bucket, c.Limits)
	validateStore(bad, c.Scope, c.Space(), c.Limits, true)
}

func (c *State) Build(d Deps) (router.Handler, error) {
	return &handlers.KV{Store: d.Stores, Kind: store.KindState, Namespace: c.Space(), PerSandbox: true, Transactions: true, Limits: c.Limits.store()}, nil
}
