package worker

import (
	"github.com/dop251/goja"
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/handlers"
)

// Var is a plain string on env.
type Var string

// Value implements Binding.
func (v Var) Value(inst *Instance) (goja.Value, error) { return inst.RT.VM().ToValue(string(v)), nil }

// Secret is a secret's value on env, read when the runtime is made: a
// reload of the worker (SIGHUP reloads secrets, then workers) makes new
// runtimes with the new value. It never appears in logs or errors: an
// unavailable secret fails the load and names the binding, not the value.
// Nor does it reach a sandbox: every response of a worker with secrets is
// scrubbed of them (handlers.Scrubber), as the proxy handler's are.
type Secret struct{ handlers.Secret }

// Value implements Binding.
func (s Secret) Value(inst *Instance) (goja.Value, error) {
	b, err := s.Secret.Value(router.Env{})
	if err != nil {
		return nil, err
	}
	inst.secrets = append(inst.secrets, b)
	return inst.RT.VM().ToValue(string(b)), nil
}
