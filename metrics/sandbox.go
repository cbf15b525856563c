package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Label values used when a sandbox cannot have its own.
const (
	// OtherSandbox is the label of sandboxes beyond the cap.
	OtherSandbox = "_other"
	// NoSandbox labels traffic from a source that is not a sandbox.
	NoSandbox = "_none"
)

// SandboxLabels hands out bounded "sandbox" label values: a sandbox's own
// name for the first Max sandboxes that ask, OtherSandbox after that. When a
// sandbox is deleted its series are dropped and its slot freed, so churn does
// not exhaust the cap. Sandbox names are chosen by operators, never by the
// traffic, and the cap bounds their number.
type SandboxLabels struct {
	Max int

	mu    sync.Mutex
	names map[string]bool
	vecs  []deleter
}

type deleter interface {
	DeletePartialMatch(prometheus.Labels) int
}

// NewSandboxLabels returns a label allocator with a cap of max sandboxes.
func NewSandboxLabels(max int) *SandboxLabels {
	return &SandboxLabels{Max: max, names: map[string]bool{}}
}

// Track registers vectors whose series carry the sandbox label, so Release
// can drop them.
func (s *SandboxLabels) Track(vecs ...deleter) {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.vecs = append(s.vecs, vecs...)
	s.mu.Unlock()
}

// Get returns the label value for a sandbox.
func (s *SandboxLabels) Get(sandbox string) string {
	if sandbox == "" {
		return NoSandbox
	}
	if s == nil {
		return OtherSandbox
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.names[sandbox] {
		return sandbox
	}
	if len(s.names) < s.Max {
		s.names[sandbox] = true
		return sandbox
	}
	return OtherSandbox
}

// Peek returns the label a sandbox holds now without taking a slot: its
// name if it has one, OtherSandbox otherwise. For series about sandboxes
// that may be gone (what they stored).
func (s *SandboxLabels) Peek(sandbox string) string {
	if s == nil || sandbox == "" {
		return OtherSandbox
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.names[sandbox] {
		return sandbox
	}
	return OtherSandbox
}

// Release drops a deleted sandbox's series and frees its slot.
func (s *SandboxLabels) Release(sandbox string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.names[sandbox] {
		return
	}
	delete(s.names, sandbox)
	for _, v := range s.vecs {
		v.DeletePartialMatch(prometheus.Labels{"sandbox": sandbox})
	}
}
