package kinds

import (
	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/handlers"
)

func init() { Register(Kind{Name: "respond", NewConfig: func() Config { return &Respond{} }}) }

// Respond is a respond handler: a fixed answer.
type Respond struct {
	Status  int               `yaml:"status"`
	Headers map[string]string `yaml:"headers"`
	Body    string            `yaml:"body"`
}

func (c *Respond) Validate(bad func(field, format string, args ...any)) {
	if c.Status != 0 && (c.Status < 100 || c.Status > 599) {
		bad("status", "%d is not an HTTP status", c.Status)
	}
}

func (c *Respond) Build(Deps) (router.Handler, error) {
	return &handlers.Respond{Status: c.Status, Headers: c.Headers, Body: c.Body}, nil
}
