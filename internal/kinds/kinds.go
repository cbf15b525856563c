// Package kinds is the registry of handler kinds. A kind is one file that
// registers its name, its config struct (decoded strictly from the handler's
// YAML, validated by itself) and how that config builds a router.Handler.
// The config package decodes handlers through it and the daemon builds them
// through it, so adding a kind touches nothing else.
package kinds

import (
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/interceptd/interceptd/router"
	"github.com/interceptd/interceptd/router/forward"
	"github.com/interceptd/interceptd/router/handlers"
	"github.com/interceptd/interceptd/store/backend"
)

// Config is one kind's configuration: the fields of a handler entry other
// than host and kind, decoded strictly into the kind's own struct.
type Config interface {
	// Validate reports, through bad, what decoding cannot check. field is
	// relative to the handler entry ("upstream", "inject[0].header"), so
	// the error names handlers[i].field.
	Validate(bad func(field, format string, args ...any))
	// Build makes the handler this config describes.
	Build(d Deps) (router.Handler, error)
}

// Store is implemented by the configs of kinds that keep data in the store:
// the admin API and the CLI show where.
type Store interface {
	// Space is the namespace or bucket, defaults applied.
	Space() string
	// PerSandbox reports whether data is keyed by the calling sandbox.
	PerSandbox() bool
}

// Deps are what a handler may need from the daemon.
type Deps struct {
	// Host is the handler's hostname, normalized ("*" for the catch-all).
	Host    string
	Stores  backend.Stores // the daemon's stores, through the storage contract
	Resolve func(string) ([]netip.Addr, time.Duration, error)
	// Metrics counts the failures of handlers that forward.
	Metrics *forward.Metrics
	Logger  *slog.Logger
	// DenyStatus and DenyBody are the config's deny answer.
	DenyStatus int
	DenyBody   string
	// Reloadable keeps a secret that a reload (SIGHUP) reads again; nil
	// when nothing reloads.
	Reloadable func(*handlers.FileSecret)
}

// Kind is one handler kind.
type Kind struct {
	// Name is what a handler's kind field says.
	Name string
	// NewConfig returns a pointer to a new, zero config struct of the kind;
	// its yaml tags are the fields a handler of the kind may have.
	NewConfig func() Config
}

var (
	mu    sync.RWMutex
	kinds = map[string]Kind{}
	order []string
)

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)

// Register adds a kind. It panics on a bad or taken name: registration is a
// programming decision made in init.
func Register(k Kind) {
	mu.Lock()
	defer mu.Unlock()
	if !nameRE.MatchString(k.Name) || k.NewConfig == nil {
		panic(fmt.Sprintf("kinds: bad registration %q", k.Name))
	}
	if _, dup := kinds[k.Name]; dup {
		panic(fmt.Sprintf("kinds: %q registered twice", k.Name))
	}
	kinds[k.Name] = k
	order = append(order, k.Name)
}

// Lookup returns the kind called name.
func Lookup(name string) (Kind, bool) {
	mu.RLock()
	defer mu.RUnlock()
	k, ok := kinds[name]
	return k, ok
}

// Names lists the registered kinds: the built-in ones in their documented
// order, then the others sorted.
func Names() []string {
	mu.RLock()
	defer mu.RUnlock()
	out := make([]string, 0, len(order))
	var extra []string
	for _, n := range order {
		if builtin[n] {
			out = append(out, n)
		} else {
			extra = append(extra, n)
		}
	}
	sort.Strings(extra)
	sort.SliceStable(out, func(i, j int) bool { return builtinRank[out[i]] < builtinRank[out[j]] })
	return append(out, extra...)
}

// The built-in kinds, in the order errors and docs list them.
var (
	builtinOrder = []string{"kv", "blob", "state", "proxy", "respond", "deny"}
	builtin      = map[string]bool{}
	builtinRank  = map[string]int{}
)

func init() {
	for i, n := range builtinOrder {
		builtin[n], builtinRank[n] = true, i
	}
}
