package main

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"os/user"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// `interceptd run` gives its command a network namespace, not a sandbox:
// the command shares the host's filesystem, so as root it could use the
// admin socket and read the store and the secret files. Unless --privileged,
// the command therefore runs as an unprivileged user with no capabilities.
// `run` starts `ip netns exec NS interceptd run-exec ... -- CMD`: ip joins the
// namespace and mounts the sandbox's resolv.conf (which needs root), then
// run-exec drops to the user and execs CMD in place, so signals and the exit
// status reach `run` as before.

// runUser is who `interceptd run` runs its command as.
type runUser struct {
	UID, GID int
	Groups   []int  // supplementary groups
	Name     string // for USER and LOGNAME; empty if the UID has no account
	Home     string
}

// nobody is the user a command runs as when neither --user nor sudo names
// one and the host has no "nobody" account.
var nobody = runUser{UID: 65534, GID: 65534, Groups: []int{65534}, Name: "nobody", Home: "/"}

// accounts looks users and groups up; tests replace the host's.
type accounts struct {
	byName   func(string) (*user.User, error)
	byID     func(string) (*user.User, error)
	group    func(string) (*user.Group, error)
	groupIDs func(*user.User) ([]string, error)
}

var hostAccounts = accounts{user.Lookup, user.LookupId, user.LookupGroup, (*user.User).GroupIds}

// chooseUser resolves who runs the command: spec (--user NAME|UID[:GROUP|GID])
// if given, else the user who ran sudo (SUDO_USER, unless root), else nobody.
// Root is refused: running as root is --privileged.
func chooseUser(spec string, getenv func(string) string, a accounts) (runUser, error) {
	var (
		u   runUser
		err error
	)
	switch sudo := getenv("SUDO_USER"); {
	case spec != "":
		if u, err = a.parse(spec); err != nil {
			return runUser{}, fmt.Errorf("--user %q: %w", spec, err)
		}
	case sudo != "" && sudo != "root":
		if u, err = a.sudoUser(sudo, getenv); err != nil {
			return runUser{}, fmt.Errorf("SUDO_USER %q: %w (choose one with --user)", sudo, err)
		}
	default:
		if u, err = a.named("nobody"); err != nil {
			u = nobody
		}
	}
	if u.UID == 0 {
		return runUser{}, errors.New("will not run the command as root: that is --privileged")
	}
	return u, nil
}

// parse reads NAME|UID[:GROUP|GID]. A UID without an account runs with its
// own number as its group unless one is given; a group given replaces the
// supplementary groups.
func (a accounts) parse(spec string) (runUser, error) {
	name, group, hasGroup := strings.Cut(spec, ":")
	var u runUser
	if id, ok := parseID(name); ok {
		var err error
		if u, err = a.fromEntry(a.byID(name)); err != nil {
			u = runUser{UID: id, GID: id, Groups: []int{id}, Home: "/"}
		}
	} else if name == "" {
		return runUser{}, errors.New("no user")
	} else {
		var err error
		if u, err = a.named(name); err != nil {
			return runUser{}, err
		}
	}
	if hasGroup {
		gid, ok := parseID(group)
		if !ok {
			g, err := a.group(group)
			if err != nil {
				return runUser{}, fmt.Errorf("no group %q", group)
			}
			if gid, ok = parseID(g.Gid); !ok {
				return runUser{}, fmt.Errorf("group %q has GID %q", group, g.Gid)
			}
		}
		u.GID, u.Groups = gid, []int{gid}
	}
	return u, nil
}

// sudoUser is the account sudo names, or its SUDO_UID and SUDO_GID if the
// name has no account here.
func (a accounts) sudoUser(name string, getenv func(string) string) (runUser, error) {
	u, err := a.named(name)
	if err == nil {
		return u, nil
	}
	uid, okU := parseID(getenv("SUDO_UID"))
	gid, okG := parseID(getenv("SUDO_GID"))
	if !okU || !okG {
		return runUser{}, err
	}
	return runUser{UID: uid, GID: gid, Groups: []int{gid}, Name: name, Home: "/"}, nil
}

func (a accounts) named(name string) (runUser, error) {
	u, err := a.fromEntry(a.byName(name))
	if err != nil {
		return runUser{}, fmt.Errorf("no user %q", name)
	}
	return u, nil
}

func (a accounts) fromEntry(e *user.User, err error) (runUser, error) {
	if err != nil {
		return runUser{}, err
	}
	uid, okU := parseID(e.Uid)
	gid, okG := parseID(e.Gid)
	if !okU || !okG {
		return runUser{}, fmt.Errorf("user %q has UID %q and GID %q", e.Username, e.Uid, e.Gid)
	}
	u := runUser{UID: uid, GID: gid, Groups: []int{gid}, Name: e.Username, Home: e.HomeDir}
	if ids, err := a.groupIDs(e); err == nil {
		u.Groups = u.Groups[:0]
		for _, s := range ids {
			if g, ok := parseID(s); ok {
				u.Groups = append(u.Groups, g)
			}
		}
	}
	if u.Home == "" {
		u.Home = "/"
	}
	return u, nil
}

// parseID reads a UID or GID: digits, below 2^32-1 (which means "none").
func parseID(s string) (int, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == math.MaxUint32 {
		return 0, false
	}
	return int(n), true
}

// args are the run-exec arguments that carry u.
func (u runUser) args() []string {
	groups := make([]string, len(u.Groups))
	for i, g := range u.Groups {
		groups[i] = strconv.Itoa(g)
	}
	return []string{"--uid", strconv.Itoa(u.UID), "--gid", strconv.Itoa(u.GID),
		"--groups", strings.Join(groups, ","), "--home", u.Home, "--login", u.Name}
}

// runExecCmd is the second half of `interceptd run`, started by ip netns
// exec inside the sandbox's namespaces: it drops to the user its flags name,
// with no capabilities (unless --privileged), and execs the command in its
// own place; before that, if `run` passed it interceptd's CA, it makes the
// command trust it (runtrust.go). Not a command for people: `run` calls it.
func runExecCmd() *cobra.Command {
	var o runExecOptions
	cmd := &cobra.Command{
		Use:    "run-exec [flags] -- CMD [ARGS...]",
		Short:  "run's second half, inside the sandbox (run calls it)",
		Hidden: true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 || (!o.privileged && (o.uid <= 0 || o.gid < 0)) {
				return usageErrorf(cmd, "run-exec is run's own: use interceptd run")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error { return o.run(args) },
	}
	cmd.Flags().SetInterspersed(false)
	f := cmd.Flags()
	f.IntVar(&o.uid, "uid", -1, "")
	f.IntVar(&o.gid, "gid", -1, "")
	f.StringVar(&o.groups, "groups", "", "")
	f.StringVar(&o.home, "home", "/", "")
	f.StringVar(&o.login, "login", "", "")
	f.BoolVar(&o.privileged, "privileged", false, "")
	return cmd
}

type runExecOptions struct {
	uid, gid            int
	groups, home, login string
	privileged          bool
}

func (o *runExecOptions) run(args []string) error {
	// Trust in interceptd's CA first, while still root.
	env := os.Environ()
	if ca := os.Getenv(caEnv); ca != "" {
		var err error
		if env, err = trustCA([]byte(ca), env); err != nil {
			return fmt.Errorf("making the command trust interceptd's CA: %w", err)
		}
	}
	if o.privileged {
		path, err := exec.LookPath(args[0])
		if err != nil {
			return notRunnable(err)
		}
		return execFailed(syscall.Exec(path, args, env))
	}
	u := runUser{UID: o.uid, GID: o.gid, Home: o.home, Name: o.login}
	for _, s := range strings.Split(o.groups, ",") {
		if g, ok := parseID(s); ok {
			u.Groups = append(u.Groups, g)
		}
	}
	path, err := dropPrivileges(u, args[0])
	if err != nil {
		return err
	}
	return execFailed(syscall.Exec(path, args, runEnv(env, u)))
}

// notRunnable says, as a shell does, why a command cannot be run and exits
// with the shell's status: 127 when it is not found, 126 when it is there
// but cannot be executed.
func notRunnable(err error) error {
	fmt.Fprintf(os.Stderr, "interceptd run: %v\n", err)
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
		return exitError{127}
	}
	return exitError{126}
}

// execFailed is what an exec that returned means: the command was found
// but could not be executed (not an executable format, say): 126.
func execFailed(err error) error {
	if err == nil {
		return nil
	}
	fmt.Fprintf(os.Stderr, "interceptd run: %v\n", err)
	return exitError{126}
}

// dropPrivileges makes the calling thread, which then execs, u with no
// capabilities at all and no way to gain any (setuid binaries and file
// capabilities included), and returns the path of cmd as u finds it.
// It does not return the thread to other goroutines: the bounding set,
// the inheritable and ambient sets and no_new_privs are per thread, and
// only the thread that execs passes them on.
func dropPrivileges(u runUser, cmd string) (string, error) {
	runtime.LockOSThread()
	// The bounding set caps what any later exec can grant: empty it, up to
	// the last capability this kernel knows (EINVAL past it).
	for c := 0; c < 64; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			if errors.Is(err, unix.EINVAL) {
				break
			}
			return "", fmt.Errorf("dropping capability %d from the bounding set: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return "", fmt.Errorf("clearing ambient capabilities: %w", err)
	}
	// Groups before the GID before the UID: each needs the privilege the
	// next one gives up. The syscall package applies them to every thread.
	if err := syscall.Setgroups(u.Groups); err != nil {
		return "", fmt.Errorf("setting groups %v: %w", u.Groups, err)
	}
	if err := syscall.Setresgid(u.GID, u.GID, u.GID); err != nil {
		return "", fmt.Errorf("setting gid %d: %w", u.GID, err)
	}
	// From root to a UID that is not 0 in all three: the kernel clears the
	// permitted and effective sets.
	if err := syscall.Setresuid(u.UID, u.UID, u.UID); err != nil {
		return "", fmt.Errorf("setting uid %d: %w", u.UID, err)
	}
	// The inheritable set survives a UID change: clear it, and with it
	// anything left.
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var none [2]unix.CapUserData
	if err := unix.Capset(&hdr, &none[0]); err != nil {
		return "", fmt.Errorf("clearing capabilities: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return "", fmt.Errorf("setting no_new_privs: %w", err)
	}
	// Check, rather than trust, that nothing is left.
	var left [2]unix.CapUserData
	if err := unix.Capget(&hdr, &left[0]); err != nil {
		return "", fmt.Errorf("reading capabilities back: %w", err)
	}
	if left != none || syscall.Getuid() != u.UID || syscall.Geteuid() != u.UID {
		return "", fmt.Errorf("privileges not dropped: uid %d, euid %d, capabilities %+v", syscall.Getuid(), syscall.Geteuid(), left)
	}
	// A working directory the user cannot enter (root's home, say) would
	// fail the command in odd places: start it at home, or at /, instead.
	if unix.Access(".", unix.X_OK) != nil {
		if os.Chdir(u.Home) != nil {
			os.Chdir("/")
		}
	}
	path, err := exec.LookPath(cmd)
	if err != nil {
		return "", notRunnable(err)
	}
	return path, nil
}

// runEnv is env with HOME, USER and LOGNAME those of u (USER and LOGNAME
// dropped if u has no account name).
func runEnv(env []string, u runUser) []string {
	out := make([]string, 0, len(env)+3)
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if k != "HOME" && k != "USER" && k != "LOGNAME" {
			out = append(out, kv)
		}
	}
	out = append(out, "HOME="+u.Home)
	if u.Name != "" {
		out = append(out, "USER="+u.Name, "LOGNAME="+u.Name)
	}
	return out
}
