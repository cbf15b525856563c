package netns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Ownership. /run/netns is one directory for every network namespace on the
// host, so a daemon cannot tell its sandboxes' namespaces from another
// daemon's by their names: two daemons with one prefix (a test instance,
// deploy/try.sh beside the service, a staging daemon) would each sweep the
// other's. A daemon therefore writes, before it makes a namespace, a marker
// naming itself (Config.Owner: its data dir) in Config.OwnerDir, and removes
// a namespace it has no record of only when the marker names it. While it
// runs it holds a lock on its namespace prefix there, so a second daemon
// with the same prefix refuses to start and says whose it is; and it holds a
// lock on the network namespace it runs in (its links and rules), so that a
// second daemon started in that namespace refuses too (lockLinks).

// DefaultOwnerDir is where the daemon keeps its markers and prefix locks.
const DefaultOwnerDir = "/run/interceptd/netns-owners"

var (
	// ErrPrefixInUse is returned by Setup when another live daemon holds
	// the namespace prefix.
	ErrPrefixInUse = errors.New("namespace prefix in use")
	// ErrNamespaceInUse is returned by Setup when another live daemon runs
	// in the same network namespace (see lockLinks).
	ErrNamespaceInUse = errors.New("network namespace in use by another daemon")
)

func (m *Manager) markerPath(ns string) string { return filepath.Join(m.cfg.OwnerDir, ns) }

// mark records this daemon as the owner of the namespace ns, before it is
// made (a crash in between leaves a marker, and so a sweepable leftover).
func (m *Manager) mark(ns string) error {
	if m.cfg.OwnerDir == "" {
		return nil
	}
	if err := os.MkdirAll(m.cfg.OwnerDir, 0o755); err != nil {
		return fmt.Errorf("making %s: %w", m.cfg.OwnerDir, err)
	}
	if err := os.WriteFile(m.markerPath(ns), []byte(m.cfg.Owner+"\n"), 0o644); err != nil {
		return fmt.Errorf("writing the owner marker of %s: %w", ns, err)
	}
	return nil
}

func (m *Manager) unmark(ns string) {
	if m.cfg.OwnerDir != "" && ns != "" {
		os.Remove(m.markerPath(ns))
	}
}

// ownerOf reads the marker of the namespace ns: "" and false without one.
func (m *Manager) ownerOf(ns string) (string, bool) {
	b, err := os.ReadFile(m.markerPath(ns))
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}

// owns reports whether this daemon can prove the namespace ns is its own:
// its marker names this daemon. Without an OwnerDir (tests of the manager
// on a fake kernel) every namespace with the prefix is.
func (m *Manager) owns(ns string) bool {
	if m.cfg.OwnerDir == "" {
		return true
	}
	owner, ok := m.ownerOf(ns)
	return ok && owner == m.cfg.Owner
}

// lockPrefix takes the host-wide lock of the namespace prefix for as long
// as the manager lives (Close lets it go). A lock held by a live daemon is
// ErrPrefixInUse, naming that daemon.
func (m *Manager) lockPrefix() error {
	if m.cfg.OwnerDir == "" || m.cfg.NetnsPrefix == "" {
		return nil
	}
	f, holder, err := m.lockFile(m.cfg.NetnsPrefix+".lock", m.cfg.Owner)
	if err != nil {
		return err
	}
	if f == nil {
		return fmt.Errorf("%w: sandbox.netns_prefix %q is used by the running daemon of %s; give this daemon a prefix of its own",
			ErrPrefixInUse, m.cfg.NetnsPrefix, holder)
	}
	m.prefixLock = f
	return nil
}

// lockLinks takes the lock of the network namespace the daemon's links and
// rules live in. The namespace prefix lock cannot cover them: two daemons
// with different data dirs and prefixes, started in one network namespace,
// would each sweep the other's veths (one interface prefix) and replace the
// other's chains, sets and nftables table (one set of names per namespace,
// whatever the interface prefix), leaving the first's sandboxes with rules
// that are not its own. A lock held by a live daemon is ErrNamespaceInUse,
// naming that daemon.
func (m *Manager) lockLinks() error {
	if m.cfg.OwnerDir == "" {
		return nil
	}
	id, err := m.k.NamespaceID()
	if err != nil {
		return fmt.Errorf("identifying the daemon's network namespace: %w", err)
	}
	f, holder, err := m.lockFile("links-"+strings.NewReplacer(":", "-", "[", "", "]", "", "/", "-").Replace(id)+".lock",
		fmt.Sprintf("%s, interface prefix %q,", m.cfg.Owner, m.cfg.InterfacePrefix))
	if err != nil {
		return err
	}
	if f == nil {
		m.linksHolder = holder
		return fmt.Errorf("%w: this network namespace (%s) holds the links and rules of the running daemon of %s; two daemons in one network namespace would remove each other's links and replace each other's rules: run this one in a network namespace of its own",
			ErrNamespaceInUse, id, holder)
	}
	m.linksLock = f
	return nil
}

// lockFile takes the lock file name in OwnerDir and writes who into it with
// this process's pid. When a live daemon holds it, f is nil and holder is
// what that daemon wrote.
func (m *Manager) lockFile(name, who string) (f *os.File, holder string, err error) {
	if err := os.MkdirAll(m.cfg.OwnerDir, 0o755); err != nil {
		return nil, "", fmt.Errorf("making %s: %w", m.cfg.OwnerDir, err)
	}
	path := filepath.Join(m.cfg.OwnerDir, name)
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, "", fmt.Errorf("opening the lock %s: %w", path, err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			b, _ := os.ReadFile(path)
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, strings.TrimSpace(string(b)), nil
			}
			return nil, "", fmt.Errorf("locking %s: %w", path, err)
		}
		// The holder before us removes the file as it lets go (unlock):
		// a lock on a file no longer at path is no lock; take it again.
		held, err1 := f.Stat()
		there, err2 := os.Stat(path)
		if err1 != nil || err2 != nil || !os.SameFile(held, there) {
			f.Close()
			continue
		}
		f.Truncate(0)
		f.WriteAt([]byte(who+" (pid "+strconv.Itoa(os.Getpid())+")\n"), 0)
		return f, "", nil
	}
}

// linksHeldByOther reports whether the namespace lock that lockLinks could
// not take is another daemon's (not this data dir's, which `cleanup
// --force` runs beside).
func (m *Manager) linksHeldByOther() bool {
	return !strings.HasPrefix(m.linksHolder, m.cfg.Owner+", ")
}

func (m *Manager) unlockLinks() {
	unlock(&m.linksLock)
}

func (m *Manager) unlockPrefix() {
	unlock(&m.prefixLock)
}

// unlock removes a lock file and lets it go.
func unlock(f **os.File) {
	if *f != nil {
		os.Remove((*f).Name()) // while still held: see lockFile
		(*f).Close()
		*f = nil
	}
}

// sweepNamespaces removes the namespaces with the prefix that keep does not
// hold and that this daemon can prove are its own, and the resolv.conf
// directories of namespaces that are gone; it returns what it removed and
// what it left (another daemon's, or unproven).
func (m *Manager) sweepNamespaces(keep map[string]bool) (removed, left []string, err error) {
	if m.cfg.NetnsPrefix == "" {
		return nil, nil, nil
	}
	var errs []error
	ents, _ := os.ReadDir(m.cfg.NetnsDir)
	for _, e := range ents {
		n := e.Name()
		if !strings.HasPrefix(n, m.cfg.NetnsPrefix) || keep[n] {
			continue
		}
		if !m.owns(n) {
			owner, _ := m.ownerOf(n)
			if owner == "" {
				owner = "no marker: made by an older version, or not by interceptd"
			}
			m.log.Warn("leaving a namespace this daemon cannot prove it made", "netns", n, "owner", owner)
			left = append(left, n)
			continue
		}
		if err := m.k.RemoveNamespace(filepath.Join(m.cfg.NetnsDir, n)); err != nil {
			errs = append(errs, err)
			continue
		}
		m.removeResolvConf(n)
		m.unmark(n)
		removed = append(removed, n)
	}
	// resolv.conf directories whose namespace is gone serve no one; and
	// markers whose namespace is gone are this daemon's to drop.
	if m.cfg.ResolvConfDir != "" {
		dirs, _ := os.ReadDir(m.cfg.ResolvConfDir)
		for _, d := range dirs {
			n := d.Name()
			if strings.HasPrefix(n, m.cfg.NetnsPrefix) && !keep[n] && !exists(filepath.Join(m.cfg.NetnsDir, n)) {
				m.removeResolvConf(n)
			}
		}
	}
	if m.cfg.OwnerDir != "" {
		marks, _ := os.ReadDir(m.cfg.OwnerDir)
		for _, d := range marks {
			n := d.Name()
			if strings.HasPrefix(n, m.cfg.NetnsPrefix) && !strings.HasSuffix(n, ".lock") && !keep[n] &&
				!exists(filepath.Join(m.cfg.NetnsDir, n)) && m.owns(n) {
				m.unmark(n)
			}
		}
	}
	return removed, left, errors.Join(errs...)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return !errors.Is(err, fs.ErrNotExist)
}

// lostCheck is how often the manager checks that its sandboxes'
// namespaces are still there.
const lostCheck = 5 * time.Second

// watchLost notices a sandbox whose namespace disappeared under the daemon
// (someone ran `ip netns del`, another tool swept it): logged once, counted,
// and shown as lost by List and Get until the sandbox is deleted.
func (m *Manager) watchLost() {
	defer m.reaping.Done()
	every := m.lostEvery
	if every <= 0 {
		every = lostCheck
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.stopReap:
			return
		case <-t.C:
			m.checkLost()
		}
	}
}

func (m *Manager) checkLost() {
	m.mu.RLock()
	var check []*Sandbox
	for _, sb := range m.byName {
		if !sb.External && !sb.Lost {
			check = append(check, sb)
		}
	}
	m.mu.RUnlock()
	for _, sb := range check {
		if exists(sb.NetnsPath) {
			continue
		}
		m.mu.Lock()
		lost := !sb.Lost && m.byName[sb.Name] == sb
		if lost {
			sb.Lost = true
		}
		m.mu.Unlock()
		if lost {
			m.cfg.Metrics.lost()
			m.log.Warn("a sandbox's namespace disappeared under the daemon", "sandbox", sb.Name, "netns", sb.NetnsPath)
		}
	}
}

// Lost is how many sandboxes have lost their namespace.
func (m *Manager) Lost() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	n := 0
	for _, sb := range m.byName {
		if sb.Lost {
			n++
		}
	}
	return n
}
