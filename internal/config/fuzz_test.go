package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse decodes arbitrary documents: no panic, and whatever is accepted
// validates.
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
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted a config that does not validate: %v", err)
		}
	})
}
