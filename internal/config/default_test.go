package config

import (
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/interceptd/interceptd/internal/kinds"
	"go.yaml.in/yaml/v3"
)

// configFields lists the dotted paths of every field a config file can set,
// from the structs that decode it: "[]" for an element of a list, "*" for a
// map's value, and each handler kind's own fields under handlers[].
func configFields() []string {
	out := map[string]bool{}
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch {
		case t == reflect.TypeFor[time.Duration](), t == reflect.TypeFor[Size]():
			return
		case t == reflect.TypeFor[Handler]():
			for _, f := range []string{"host", "kind", "https"} {
				out[prefix+"."+f] = true
			}
			for _, n := range kinds.Names() {
				k, _ := kinds.Lookup(n)
				walk(reflect.TypeOf(k.NewConfig()), prefix)
			}
			return
		case t.Kind() == reflect.Slice:
			walk(t.Elem(), prefix+"[]")
			return
		case t.Kind() == reflect.Map:
			walk(t.Elem(), prefix+".*")
			return
		case t.Kind() != reflect.Struct:
			return
		}
		for i := range t.NumField() {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || tag[0] == "-" {
				continue
			}
			if slices := strings.Join(tag[1:], ","); tag[0] == "" && strings.Contains(slices, "inline") {
				walk(f.Type, prefix)
				continue
			}
			if tag[0] == "" {
				continue
			}
			p := strings.TrimPrefix(prefix+"."+tag[0], ".")
			out[p] = true
			walk(f.Type, p)
		}
	}
	walk(reflect.TypeFor[Config](), "")
	paths := make([]string, 0, len(out))
	for p := range out {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	return paths
}

// documented is what the embedded default says of its fields: the comment
// of each key it has (by dotted path, as configFields), and all its
// comments together, where a field it leaves out is shown commented.
type documented struct {
	own      map[string]string // key path → its head and line comments
	comments string
}

func readDefault(t *testing.T) documented {
	var root yaml.Node
	if err := yaml.Unmarshal(defaultYAML, &root); err != nil {
		t.Fatal(err)
	}
	d := documented{own: map[string]string{}}
	var all []string
	var walk func(n *yaml.Node, prefix string)
	walk = func(n *yaml.Node, prefix string) {
		all = append(all, n.HeadComment, n.LineComment, n.FootComment)
		switch n.Kind {
		case yaml.DocumentNode, yaml.SequenceNode:
			p := prefix
			if n.Kind == yaml.SequenceNode {
				p += "[]"
			}
			for _, c := range n.Content {
				walk(c, p)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := strings.TrimPrefix(prefix+"."+k.Value, ".")
				d.own[p] += k.HeadComment + k.LineComment + v.LineComment
				all = append(all, k.HeadComment, k.LineComment, k.FootComment)
				walk(v, p)
			}
		}
	}
	walk(&root, "")
	d.comments = strings.Join(all, "\n")
	return d
}

// says tells whether the default documents the field at path: a comment of
// its own, one of an enclosing key that names it, or (for a field the
// default leaves out) a commented example that writes it ("name:").
func (d documented) says(path string) bool {
	parts := strings.Split(path, ".")
	name := strings.TrimSuffix(parts[len(parts)-1], "[]")
	word := regexp.MustCompile(`\b` + regexp.QuoteMeta(name) + `\b`)
	if _, present := d.own[path]; !present {
		return strings.Contains(d.comments, name+":")
	}
	if strings.TrimSpace(d.own[path]) != "" {
		return true
	}
	for i := len(parts) - 1; i > 0; i-- {
		if word.MatchString(d.own[strings.TrimSuffix(strings.Join(parts[:i], "."), "[]")]) {
			return true
		}
	}
	return false
}

func TestTheDefaultConfigCommentsEveryField(t *testing.T) {
	d := readDefault(t)
	fields := configFields()
	section := func(p string) bool {
		for _, f := range fields {
			if strings.HasPrefix(f, p+".") || strings.HasPrefix(f, p+"[].") {
				return true
			}
		}
		return false
	}
	for _, p := range fields {
		if section(p) {
			continue // said by its fields
		}
		if strings.HasPrefix(p, "workers[].bindings.*.") {
			// Each binding kind is one line of the workers example.
			p = strings.Replace(p, "workers[].bindings.*.", "workers[].bindings.", 1)
		}
		if !d.says(p) {
			t.Errorf("config default says nothing of %s: comment it in internal/config/default.yaml", p)
		}
	}
	// The handlers' comment names every kind there is.
	for _, k := range kinds.Names() {
		if !regexp.MustCompile(`\b` + k + `\b`).MatchString(d.own["handlers"]) {
			t.Errorf("the handlers comment of config default does not name the kind %s", k)
		}
	}
}

// The test above must see a field that has no comment.
func TestTheCommentCheckFindsAnUncommentedField(t *testing.T) {
	d := documented{own: map[string]string{"data_dir": "", "quota": "bytes and keys", "quota.kv": "", "quota.kv.bytes": ""}, comments: "# tls: {ca_cert: FILE}"}
	for path, want := range map[string]bool{
		"data_dir": false, "quota.kv.bytes": true, "tls.ca_cert": true, "tls.ca_key": false, "listen.pprof": false,
	} {
		if got := d.says(path); got != want {
			t.Errorf("says(%s) = %v, want %v", path, got, want)
		}
	}
}
