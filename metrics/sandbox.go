package metrics

import (
	"sync"
	"time"

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
	// Grace is how long a deleted sandbox's series stay after Release, so
	// that a sandbox that lived less than a scrape interval (interceptd run,
	// a CI job) still reaches Prometheus; its slot is held meanwhile, so
	// the cap still bounds the labels. 0 drops them at once.
	Grace time.Duration

	mu      sync.Mutex
	names   map[string]bool
	vecs    []deleter
	leaving map[string]*time.Timer // released, their series kept until the timer
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
		if t, ok := s.leaving[sandbox]; ok {
			// Made again within the grace: it keeps its series.
			t.Stop()
			delete(s.leaving, sandbox)
		}
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

// SetGrace changes Grace (a config reload), for sandboxes released from now on.
func (s *SandboxLabels) SetGrace(d time.Duration) {
	s.mu.Lock()
	s.Grace = d
	s.mu.Unlock()
}

// Release drops a deleted sandbox's series and frees its slot, after Grace.
func (s *SandboxLabels) Release(sandbox string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.names[sandbox] {
		return
	}
	if s.Grace <= 0 {
		s.drop(sandbox)
		return
	}
	if _, ok := s.leaving[sandbox]; ok {
		return
	}
	if s.leaving == nil {
		s.leaving = map[string]*time.Timer{}
	}
	var t *time.Timer
	t = time.AfterFunc(s.Grace, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.leaving[sandbox] == t { // not made again meanwhile
			delete(s.leaving, sandbox)
			s.drop(sandbox)
		}
	})
	s.leaving[sandbox] = t
}

// drop deletes a sandbox's series and frees its slot; s.mu is held.
func (s *SandboxLabels) drop(sandbox string) {
	delete(s.names, sandbox)
	for _, v := range s.vecs {
		v.DeletePartialMatch(prometheus.Labels{"sandbox": sandbox})
	}
}
