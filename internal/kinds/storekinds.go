package kinds

import (
	"regexp"

	"github.com/interceptd/interceptd/store"
)

// Limits bound what a store handler keeps. Zero keeps the default. The
// fields that do not apply to a kind are rejected by its Validate with a
// hint, rather than as unknown fields.
type Limits struct {
	MaxKeyBytes      int   `yaml:"max_key_bytes"`      // default 512
	MaxValueBytes    int   `yaml:"max_value_bytes"`    // default 25 MiB (kv, state)
	MaxMetadataBytes int   `yaml:"max_metadata_bytes"` // default 1024 (kv, state)
	MaxObjectBytes   int64 `yaml:"max_object_bytes"`   // default 5 GiB (blob)
}

func (l Limits) store() store.Limits {
	return store.Limits{
		MaxKeyBytes: l.MaxKeyBytes, MaxValueBytes: l.MaxValueBytes,
		MaxMetadataBytes: l.MaxMetadataBytes, MaxObjectBytes: l.MaxObjectBytes,
	}.WithDefaults()
}

var spaceRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

func orDefault(s string) string {
	if s == "" {
		return "default"
	}
	return s
}

// validateStore checks what kv, state and blob handlers share: scope, the
// namespace or bucket name, and limits.
func validateStore(bad func(field, format string, args ...any), scope, space string, l Limits, alwaysPerSandbox bool) {
	switch {
	case scope == "" || scope == "sandbox":
	case scope == "shared" && !alwaysPerSandbox:
	case scope == "shared":
		bad("scope", "state is always per sandbox; leave scope out or say sandbox")
	default:
		bad("scope", "%q: want shared or sandbox", scope)
	}
	if !spaceRE.MatchString(space) {
		bad("namespace", "%q: use 1-64 of [A-Za-z0-9_.-]", space)
	}
	if l.MaxKeyBytes < 0 || l.MaxValueBytes < 0 || l.MaxMetadataBytes < 0 || l.MaxObjectBytes < 0 {
		bad("limits", "limits must not be negative")
	}
}
