// Package admintest holds an in-memory sandbox manager for tests of the
// admin API and of the CLI that talks to it: names are checked and policies
// compiled as netns.Manager does, and nothing touches the kernel.
package admintest

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/interceptd/interceptd/netns"
	"github.com/interceptd/interceptd/policy"
	"github.com/interceptd/interceptd/store"
)

// Sandboxes is the manager as the admin API sees it, in memory.
type Sandboxes struct {
	// Default is the policy of a sandbox created without one, as
	// netns.Config.DefaultPolicy.
	Default policy.Policy
	// DefaultWorker and Workers are netns.Config's: the worker of a
	// sandbox created without one named, and the names there are.
	DefaultWorker string
	Workers       []string

	mu       sync.Mutex
	m        map[string]netns.Sandbox
	checkErr error
}

func (f *Sandboxes) add(name, nsPath, ifName string, spec netns.Spec) (netns.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := spec.Policy
	worker := f.DefaultWorker
	if spec.Worker != nil {
		worker = *spec.Worker
	}
	if err := f.knownWorker(worker); err != nil {
		return netns.Sandbox{}, err
	}
	if !netns.ValidName(name) {
		return netns.Sandbox{}, fmt.Errorf("%w %q", netns.ErrInvalidName, name)
	}
	if _, ok := f.m[name]; ok {
		return netns.Sandbox{}, fmt.Errorf("%w: %s", netns.ErrExists, name)
	}
	pol := f.Default
	if p != nil {
		pol = *p
	}
	if _, err := pol.Compile(); err != nil {
		return netns.Sandbox{}, fmt.Errorf("%w: %w", netns.ErrInvalidPolicy, err)
	}
	if f.m == nil {
		f.m = map[string]netns.Sandbox{}
	}
	// Each sandbox on a /30 of its own, as the pool gives them.
	base := 4 * len(f.m)
	addr := netip.AddrFrom4([4]byte{10, 213, byte(base >> 8), byte(base + 2)})
	if err := spec.Limits.Validate(); err != nil {
		return netns.Sandbox{}, fmt.Errorf("%w: %v", netns.ErrInvalidLimits, err)
	}
	sb := netns.Sandbox{
		Name: name, Interface: ifName, Policy: pol, Addr: addr, Worker: worker, Limits: spec.Limits,
		Gateway: addr.Prev(), Subnet: netip.PrefixFrom(addr, 30).Masked(),
		MAC: fmt.Sprintf("02:00:0a:d5:%02x:%02x", byte(base>>8), byte(base+2)),
	}
	if nsPath != "" {
		sb.NetnsPath, sb.External = nsPath, true
	} else {
		sb.Netns = "icd-" + name
		sb.NetnsPath = "/run/netns/" + sb.Netns
	}
	f.m[name] = sb
	return sb, nil
}

// Create is netns.Manager's.
func (f *Sandboxes) Create(name string, p *policy.Policy) (netns.Sandbox, error) {
	return f.add(name, "", "", netns.Spec{Policy: p})
}

// Attach is netns.Manager's.
func (f *Sandboxes) Attach(name, nsPath, ifName string, p *policy.Policy) (netns.Sandbox, error) {
	return f.add(name, nsPath, ifName, netns.Spec{Policy: p})
}

// CreateSpec implements the admin API's manager.
func (f *Sandboxes) CreateSpec(name string, s netns.Spec) (netns.Sandbox, error) {
	return f.add(name, "", "", s)
}

// AttachSpec implements the admin API's manager.
func (f *Sandboxes) AttachSpec(name, nsPath, ifName string, s netns.Spec) (netns.Sandbox, error) {
	return f.add(name, nsPath, ifName, s)
}

func (f *Sandboxes) knownWorker(name string) error {
	if name == "" || slices.Contains(f.Workers, name) {
		return nil
	}
	return fmt.Errorf("%w %q: the config has no worker of that name", netns.ErrUnknownWorker, name)
}

// SetWorker implements the admin API's manager.
func (f *Sandboxes) SetWorker(name, worker string) (netns.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, ok := f.m[name]
	if !ok {
		return sb, fmt.Errorf("%w: %s", netns.ErrNotFound, name)
	}
	if err := f.knownWorker(worker); err != nil {
		return sb, err
	}
	sb.Worker = worker
	f.m[name] = sb
	return sb, nil
}

// Check reports a missing sandbox, else what SetCheckErr set.
func (f *Sandboxes) Check(name string) error {
	if _, ok := f.Get(name); !ok {
		return fmt.Errorf("%w: %s", netns.ErrNotFound, name)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.checkErr
}

// SetCheckErr makes Check fail with err (nil: pass again).
func (f *Sandboxes) SetCheckErr(err error) { f.mu.Lock(); f.checkErr = err; f.mu.Unlock() }

// SetPolicy implements the admin API's manager.
func (f *Sandboxes) SetPolicy(name string, p policy.Policy) (netns.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, ok := f.m[name]
	if !ok {
		return sb, fmt.Errorf("%w: %s", netns.ErrNotFound, name)
	}
	if _, err := p.Compile(); err != nil {
		return sb, fmt.Errorf("%w: %w", netns.ErrInvalidPolicy, err)
	}
	sb.Policy = p
	f.m[name] = sb
	return sb, nil
}

// SetLimits implements the admin API's manager.
func (f *Sandboxes) SetLimits(name string, l policy.Limits) (netns.Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, ok := f.m[name]
	if !ok {
		return sb, fmt.Errorf("%w: %s", netns.ErrNotFound, name)
	}
	if err := l.Validate(); err != nil {
		return sb, fmt.Errorf("%w: %v", netns.ErrInvalidLimits, err)
	}
	sb.Limits = l
	f.m[name] = sb
	return sb, nil
}

// Delete implements the admin API's manager.
func (f *Sandboxes) Delete(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.m[name]; !ok {
		return fmt.Errorf("%w: %s", netns.ErrNotFound, name)
	}
	delete(f.m, name)
	return nil
}

// Get implements the admin API's manager.
func (f *Sandboxes) Get(name string) (netns.Sandbox, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sb, ok := f.m[name]
	return sb, ok
}

// List implements the admin API's manager, sorted by name.
func (f *Sandboxes) List() []netns.Sandbox {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netns.Sandbox
	for _, sb := range f.m {
		out = append(out, sb)
	}
	slices.SortFunc(out, func(a, b netns.Sandbox) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Dir returns a new directory for a test's admin socket and store, removed
// when the test ends, with a store open in it. Not t.TempDir: a socket path
// must fit in 108 bytes, and test names make TempDir's paths long.
func Dir(t testing.TB, prefix string) (string, *store.DB) {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	db, err := store.Open(filepath.Join(dir, "data"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return dir, db
}
