package kinds

import (
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/handlers"
)

func init() { Register(Kind{Name: "deny", NewConfig: func() Config { return &Deny{} }}) }

// Deny is a deny handler: it answers as policy denies (the config's deny
// section). It has no fields of its own.
type Deny struct{}

func (*Deny) Validate(func(field, format string, args ...any)) {}

func (*Deny) Build(d Deps) (router.Handler, error) {
	return &handlers.Deny{Status: d.DenyStatus, Body: d.DenyBody}, nil
}
