package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Worker is a JavaScript (or TypeScript) module whose functions answer
// intercepted HTTP for the sandboxes that name it (`sandbox create
// --worker`, default_worker): its outbound takes what no other handler
// does, its outboundByHost maps host patterns to functions.
type Worker struct {
	// Name is how sandboxes and the CLI name the worker; it is also the
	// worker's metric label, so names are short: 1-32 of [a-z0-9_-],
	// starting with a letter.
	Name string `yaml:"name"`
	// Script is the module's path, relative to the config file's
	// directory unless absolute.
	Script string `yaml:"script"`
	// Bindings are the worker's env: each name (a JavaScript identifier)
	// is bound to exactly one of a KV namespace, a blob bucket, a
	// Durable-Object class the script exports, a secret or a plain string.
	Bindings map[string]Binding `yaml:"bindings"`
	// Limits bound each request the worker serves.
	Limits WorkerLimits `yaml:"limits"`
	// CAFile, when set, is the CA bundle the worker's fetch() verifies https
	// upstreams against instead of the system's roots (as a proxy
	// handler's ca_file).
	CAFile string `yaml:"ca_file"`
	// HTTPS: the worker's outboundByHost functions answer https:// on port
	// 443 too (the daemon terminates TLS for their names with its CA); its
	// outbound never does (HTTPS is intercepted by name). Needs listen.https.
	HTTPS bool `yaml:"https"`

	// Path is Script resolved against the config file's directory.
	Path string `yaml:"-"`
	// fromDoc: decoded from a document, limits' defaults in place (a
	// Worker built in code may leave them zero, for the defaults).
	fromDoc bool
}

// WorkerLimits bound one request to a worker. Each is positive; a field
// the config leaves out takes its default.
type WorkerLimits struct {
	// CPUMs is the CPU time, in milliseconds, the script may spend running
	// JavaScript for one request (not time waiting for I/O). Default 50.
	CPUMs int `yaml:"cpu_ms"`
	// WallMs is the wall time, in milliseconds, one request may take, I/O
	// included. Default 30000.
	WallMs int `yaml:"wall_ms"`
	// Subrequests is how many fetch() calls one request may make. Default 50.
	Subrequests int `yaml:"subrequests"`
}

// Defaults of WorkerLimits.
const (
	DefaultWorkerCPUMs       = 50
	DefaultWorkerWallMs      = 30000
	DefaultWorkerSubrequests = 50
)

// DefaultWorkerLimits are the limits of a worker entry that sets none.
func DefaultWorkerLimits() WorkerLimits {
	return WorkerLimits{CPUMs: DefaultWorkerCPUMs, WallMs: DefaultWorkerWallMs, Subrequests: DefaultWorkerSubrequests}
}

// CPU is the CPU-time limit, the default for a zero value.
func (l WorkerLimits) CPU() time.Duration {
	return time.Duration(cmpOr(l.CPUMs, DefaultWorkerCPUMs)) * time.Millisecond
}

// Wall is the wall-time limit, the default for a zero value.
func (l WorkerLimits) Wall() time.Duration {
	return time.Duration(cmpOr(l.WallMs, DefaultWorkerWallMs)) * time.Millisecond
}

// MaxSubrequests is the subrequest limit, the default for a zero value.
func (l WorkerLimits) MaxSubrequests() int { return cmpOr(l.Subrequests, DefaultWorkerSubrequests) }

func cmpOr(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// workerEntry is Worker as the document writes it (no UnmarshalYAML of
// its own, so decoding it does not recurse).
type workerEntry Worker

// UnmarshalYAML decodes a worker entry with its limits' defaults in
// place, so that a field the entry leaves out keeps its default. It takes
// the older unmarshal callback, which decodes with the document's decoder:
// unknown fields stay errors and lines stay the document's.
func (w *Worker) UnmarshalYAML(unmarshal func(any) error) error {
	e := workerEntry{Limits: DefaultWorkerLimits()}
	if err := unmarshal(&e); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			for i, m := range te.Errors {
				te.Errors[i] = strings.ReplaceAll(m, " in type config.workerEntry", " in a worker")
			}
		}
		return err
	}
	*w = Worker(e)
	w.fromDoc = true
	return nil
}

// Binding is one name of a worker's env: exactly one field is set.
type Binding struct {
	// KV binds a KV namespace (the one the kv handler and `interceptd kv`
	// use of that name).
	KV string `yaml:"kv,omitempty"`
	// Blob binds a blob bucket (the blob handler's, of that name).
	Blob string `yaml:"blob,omitempty"`
	// DurableObject binds the Durable-Object class of that name, which the
	// script exports.
	DurableObject string `yaml:"durable_object,omitempty"`
	// Secret binds a secret as a string: a systemd credential's name (read
	// from $CREDENTIALS_DIRECTORY, as the proxy handler's credential), or
	// an absolute path to a file. Read at start and again on SIGHUP; never
	// in the config itself, never logged.
	Secret string `yaml:"secret,omitempty"`
	// Var binds a plain string.
	Var *string `yaml:"var,omitempty"`
}

// Kind is the binding's kind: "kv", "blob", "durable_object", "secret" or
// "var"; "" when none or more than one is set (Validate says so).
func (b Binding) Kind() string {
	var kinds []string
	for _, k := range []struct {
		name string
		set  bool
	}{{"kv", b.KV != ""}, {"blob", b.Blob != ""}, {"durable_object", b.DurableObject != ""}, {"secret", b.Secret != ""}, {"var", b.Var != nil}} {
		if k.set {
			kinds = append(kinds, k.name)
		}
	}
	if len(kinds) != 1 {
		return ""
	}
	return kinds[0]
}

// Value is the binding's one value: the namespace, bucket, class, secret
// name or the var's string.
func (b Binding) Value() string {
	switch b.Kind() {
	case "kv":
		return b.KV
	case "blob":
		return b.Blob
	case "durable_object":
		return b.DurableObject
	case "secret":
		return b.Secret
	case "var":
		return *b.Var
	}
	return ""
}

var (
	workerNameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)
	// A JavaScript identifier as bindings are named: ASCII only, which
	// every Workers binding name is in practice.
	jsIdentRE = regexp.MustCompile(`^[A-Za-z_$][A-Za-z0-9_$]*$`)
	// Store names as the kv and blob handlers take them (kinds.spaceRE).
	spaceNameRE  = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)
	credentialRE = regexp.MustCompile(`^[A-Za-z0-9_.@-]{1,255}$`)
)

// jsReserved are the words a binding may not be named: env.NAME would be
// fine, but destructuring ({ NAME } = env) would not.
var jsReserved = map[string]bool{
	"await": true, "break": true, "case": true, "catch": true, "class": true, "const": true, "continue": true,
	"debugger": true, "default": true, "delete": true, "do": true, "else": true, "enum": true, "export": true,
	"extends": true, "false": true, "finally": true, "for": true, "function": true, "if": true, "implements": true,
	"import": true, "in": true, "instanceof": true, "interface": true, "let": true, "new": true, "null": true,
	"package": true, "private": true, "protected": true, "public": true, "return": true, "static": true,
	"super": true, "switch": true, "this": true, "throw": true, "true": true, "try": true, "typeof": true,
	"var": true, "void": true, "while": true, "with": true, "yield": true,
}

// validateWorkers checks the workers and default_worker; bad reports a
// field's problem.
func (c *Config) validateWorkers(bad func(field, format string, args ...any)) {
	// The document's line of a field, or of the nearest enclosing one
	// the document has (a missing field's entry), where Parse knows it.
	at := func(field string) string {
		for field != "" {
			if l := c.lines[field]; l > 0 {
				return fmt.Sprintf(" (line %d)", l)
			}
			field = field[:max(strings.LastIndexAny(field, ".["), 0)]
		}
		return ""
	}
	names := map[string]bool{}
	for i, w := range c.Workers {
		f := fmt.Sprintf("workers[%d]", i)
		switch {
		case w.Name == "":
			bad(f+".name", "missing%s", at(f+".name"))
		case !workerNameRE.MatchString(w.Name):
			bad(f+".name", "%q must be 1-32 of [a-z0-9_-], starting with a letter%s", w.Name, at(f+".name"))
		case names[w.Name]:
			bad(f+".name", "%q is configured twice%s", w.Name, at(f+".name"))
		}
		names[w.Name] = true
		if w.Script == "" {
			bad(f+".script", "missing: the path of the worker's module%s", at(f))
		}
		if w.HTTPS && c.Listen.HTTPS == "" {
			bad(f+".https", "needs listen.https: port 443 is not intercepted without it%s", at(f+".https"))
		}
		for _, l := range []struct {
			field string
			v     int
		}{{"cpu_ms", w.Limits.CPUMs}, {"wall_ms", w.Limits.WallMs}, {"subrequests", w.Limits.Subrequests}} {
			if l.v < 0 || (l.v == 0 && w.fromDoc) {
				bad(f+".limits."+l.field, "%d: must be positive%s", l.v, at(f+".limits."+l.field))
			}
		}
		for name, b := range w.Bindings {
			g := f + ".bindings." + name
			if !jsIdentRE.MatchString(name) || jsReserved[name] {
				bad(g, "%q is not a JavaScript identifier a binding can have%s", name, at(g))
			}
			switch k, v := b.Kind(), b.Value(); k {
			case "":
				bad(g, "set exactly one of kv, blob, durable_object, secret, var%s", at(g))
			case "kv", "blob":
				if !spaceNameRE.MatchString(v) {
					bad(g+"."+k, "%q must be 1-64 of [A-Za-z0-9_.-]%s", v, at(g+"."+k))
				}
			case "durable_object":
				if !jsIdentRE.MatchString(v) || jsReserved[v] {
					bad(g+".durable_object", "%q is not the name of a class the script can export%s", v, at(g))
				}
			case "secret":
				if !filepath.IsAbs(v) && (!credentialRE.MatchString(v) || v == "." || v == "..") {
					bad(g+".secret", "%q is neither a credential name nor an absolute file path%s", v, at(g))
				}
			}
		}
	}
	if c.DefaultWorker != "" && !names[c.DefaultWorker] {
		bad("default_worker", "%q is not a configured worker%s", c.DefaultWorker, at("default_worker"))
	}
}

// resolveScripts sets each worker's Path: Script against the directory of
// the config file named configPath.
func (c *Config) resolveScripts(configPath string) {
	for i := range c.Workers {
		w := &c.Workers[i]
		if w.Script == "" || filepath.IsAbs(w.Script) {
			w.Path = w.Script
			continue
		}
		w.Path = filepath.Join(filepath.Dir(configPath), w.Script)
	}
}

// Worker returns the configured worker of that name.
func (c *Config) Worker(name string) (Worker, bool) {
	for _, w := range c.Workers {
		if w.Name == name {
			return w, true
		}
	}
	return Worker{}, false
}
