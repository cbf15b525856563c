package jsrt

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/dop251/goja"
	"github.com/evanw/esbuild/pkg/api"
)

// Program is a compiled module, shareable by any number of runtimes.
type Program struct {
	name string
	prog *goja.Program
}

// Name is the file name the program was compiled from.
func (p *Program) Name() string { return p.name }

// CompileError is a script that does not compile; Error names file:line:column.
type CompileError struct {
	File         string
	Line, Column int // 1-based
	Message      string
}

func (e *CompileError) Error() string {
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Column, e.Message)
}

// Compile transforms an ES module (or TypeScript, by a .ts/.mts extension) to CommonJS
// with esbuild and compiles it for goja. esbuild lowers syntax past ES2017 that goja
// lacks; imports are not bundled, so a script is one file (require throws). The inline
// source map keeps stacks pointing at the original lines.
func Compile(filename string, source []byte) (*Program, error) {
	loader := api.LoaderJS
	switch strings.ToLower(filepath.Ext(filename)) {
	case ".ts", ".mts", ".cts":
		loader = api.LoaderTS
	}
	res := api.Transform(string(source), api.TransformOptions{
		Loader:     loader,
		Format:     api.FormatCommonJS,
		Target:     api.ES2017,
		Sourcefile: filename,
		Sourcemap:  api.SourceMapInline,
		Platform:   api.PlatformNeutral,
	})
	if len(res.Errors) > 0 {
		m := res.Errors[0]
		e := &CompileError{File: filename, Line: 1, Column: 1, Message: m.Text}
		if m.Location != nil {
			e.Line, e.Column = m.Location.Line, m.Location.Column+1
		}
		return nil, e
	}
	// One line of wrapper before the code, so that goja's own positions (the source map
	// aside) are off by a line at most; the source map maps the rest.
	src := "(function (exports, require, module) {" + string(res.Code) + "\n})"
	prog, err := goja.Compile(filename, src, false)
	if err != nil {
		return nil, &CompileError{File: filename, Line: 1, Column: 1, Message: err.Error()}
	}
	return &Program{name: filename, prog: prog}, nil
}

// Exports are what a module exports, as values of the runtime that loaded it.
type Exports struct {
	// Default is the default export, or nil.
	Default goja.Value
	// Named are the other exports (classes, functions, values) by name.
	Named map[string]goja.Value
}

// Names lists the export names, "default" included, sorted.
func (e *Exports) Names() []string {
	var n []string
	if e.Default != nil {
		n = append(n, "default")
	}
	for k := range e.Named {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// Load runs the module once in this runtime (its top level under the CPU limit) and
// returns its exports.
func (rt *Runtime) Load(p *Program) (*Exports, error) {
	rt.begin(context.Background())
	defer rt.end()
	var wrapper goja.Value
	if err := rt.run(func() (err error) { wrapper, err = rt.vm.RunProgram(p.prog); return err }); err != nil {
		return nil, fmt.Errorf("loading %s: %w", p.name, err)
	}
	fn, _ := goja.AssertFunction(wrapper)
	module := rt.vm.NewObject()
	exports := rt.vm.NewObject()
	if err := module.Set("exports", exports); err != nil {
		return nil, err
	}
	require := rt.vm.ToValue(func(name string) goja.Value {
		panic(rt.vm.NewTypeError("%s: require(%q): a worker script is one module; imports are not supported", p.name, name))
	})
	if err := rt.run(func() error { _, err := fn(goja.Undefined(), exports, require, module); return err }); err != nil {
		return nil, fmt.Errorf("loading %s: %w", p.name, err)
	}
	obj := module.Get("exports").ToObject(rt.vm)
	ex := &Exports{Named: map[string]goja.Value{}}
	for _, k := range obj.Keys() {
		v := obj.Get(k)
		if k == "default" {
			ex.Default = v
			continue
		}
		ex.Named[k] = v
	}
	return ex, nil
}
