package config

import (
	"os"
	"path/filepath"
	"testing"

	"go.yaml.in/yaml/v3"
)

// FuzzParse decodes arbitrary documents. Whatever Parse accepts must read
// back the same once written out: rendered as YAML and parsed again, it
// gives a config that renders to the same document. This holds the decoders
// (sizes, durations, defaults under the document) to the values they keep:
// a value read as something other than what it says, or one lost or
// altered by validation, shows as a difference.
func FuzzParse(f *testing.F) {
	for _, dir := range []string{"testdata/good", "testdata/bad"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
		for _, file := range files {
			b, _ := os.ReadFile(file)
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		c, err := Parse("fuzz.yaml", doc)
		if err != nil {
			return
		}
		out, err := yaml.Marshal(c)
		if err != nil {
			t.Fatalf("an accepted config does not render: %v", err)
		}
		again, err := Parse("rendered.yaml", out)
		if err != nil {
			t.Fatalf("an accepted config, rendered, is refused: %v\n%s", err, out)
		}
		// Compared as rendered: a nil and an empty map or list are the
		// same config.
		if out2, _ := yaml.Marshal(again); string(out2) != string(out) {
			t.Fatalf("an accepted config reads back different once rendered:\nfirst\n%s\nthen\n%s", out, out2)
		}
	})
}
