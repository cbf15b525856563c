package main

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// `interceptd run` makes its command trust interceptd's CA, with no change
// to the command: `run` fetches the CA certificate from the daemon (GET
// /v1/ca) and hands it to run-exec in caEnv; run-exec, still root and in the
// private mount namespace `ip netns exec` made for it, writes a bundle of the
// host's system roots plus that CA on a tmpfs of its own and bind-mounts it,
// read-only, over every system bundle path that exists, then points the
// usual variables at it. The mounts live and die with the command's mount
// namespace: the host's bundle is never written.

// caEnv carries the CA's PEM from `run` to run-exec; run-exec removes it
// from the command's environment.
const caEnv = "INTERCEPTD_RUN_CA"

// systemBundles are where distributions keep the system's CA bundle (Go's
// crypto/x509 list). The first that exists is the base of the command's
// bundle; every one that exists is covered by it.
var systemBundles = []string{
	"/etc/ssl/certs/ca-certificates.crt",                // Debian, Ubuntu, Gentoo, Alpine
	"/etc/pki/tls/certs/ca-bundle.crt",                  // Fedora, RHEL 6
	"/etc/ssl/ca-bundle.pem",                            // openSUSE
	"/etc/pki/tls/cacert.pem",                           // OpenELEC
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", // CentOS, RHEL 7
	"/etc/ssl/cert.pem",                                 // Alpine, Arch
}

// trustVars are the variables that name a CA bundle for the clients that
// read one: OpenSSL, Go and Python's ssl; Node (added to its own roots);
// requests; curl; git.
var trustVars = []string{"SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO"}

// stagingDirs are where the bundle's tmpfs is mounted while the bundle is
// written and bound over the system paths, then detached: the first that
// exists. Only this mount namespace ever sees it there.
var stagingDirs = []string{"/tmp", "/run", "/mnt"}

// parsePEMCerts returns the certificates in a PEM text, and an error if it
// holds none or one does not parse.
func parsePEMCerts(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return certs, nil
}

// buildBundle is the system bundle followed by ca (PEM), which must hold a
// certificate: the system's roots unchanged, and one more.
func buildBundle(system, ca []byte) ([]byte, error) {
	if _, err := parsePEMCerts(ca); err != nil {
		return nil, fmt.Errorf("interceptd's CA: %w", err)
	}
	var b bytes.Buffer
	b.Grow(len(system) + len(ca) + 64)
	b.Write(system)
	if len(system) > 0 && system[len(system)-1] != '\n' {
		b.WriteByte('\n')
	}
	b.WriteString("# interceptd's CA (added by interceptd run)\n")
	b.Write(bytes.TrimSpace(ca))
	b.WriteByte('\n')
	return b.Bytes(), nil
}

// findBundles returns the first of paths that is a regular file (after
// symbolic links), and every one that is, each real file once: the paths to
// mount over. A bundle that is a link to another is covered by the mount over
// the other.
func findBundles(paths []string, resolve func(string) (string, error)) (base string, targets []string) {
	seen := map[string]bool{}
	for _, p := range paths {
		real, err := resolve(p)
		if err != nil {
			continue
		}
		if base == "" {
			base = p
		}
		if !seen[real] {
			seen[real] = true
			targets = append(targets, real)
		}
	}
	return base, targets
}

// regularFile resolves p's links and returns the real path if it is a
// regular file.
func regularFile(p string) (string, error) {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", real)
	}
	return real, nil
}

// trustEnv is env without caEnv and with every trust variable set to bundle.
func trustEnv(env []string, bundle string) []string {
	out := make([]string, 0, len(env)+len(trustVars))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if k == caEnv || slices.Contains(trustVars, k) {
			continue
		}
		out = append(out, kv)
	}
	if bundle != "" {
		for _, k := range trustVars {
			out = append(out, k+"="+bundle)
		}
	}
	return out
}

// sharedMounts returns the mount points in a /proc/self/mountinfo that
// propagate mounts to a peer group ("shared:N"): a mount made under one of
// them would show up outside this mount namespace.
func sharedMounts(mountinfo io.Reader) ([]string, error) {
	var shared []string
	sc := bufio.NewScanner(mountinfo)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source super
		f := strings.Fields(sc.Text())
		if len(f) < 7 {
			continue
		}
		for _, opt := range f[6:] {
			if opt == "-" {
				break
			}
			if strings.HasPrefix(opt, "shared:") {
				shared = append(shared, unescapeMountinfo(f[4]))
				break
			}
		}
	}
	return shared, sc.Err()
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// checkPrivateMounts refuses to mount anything unless this process is in a
// mount namespace of its own (not its parent's: `interceptd run`'s, the
// host's) whose mounts propagate nowhere, as `ip netns exec` leaves it.
func checkPrivateMounts() error {
	self, err := os.Stat("/proc/self/ns/mnt")
	if err != nil {
		return err
	}
	parent, err := os.Stat(fmt.Sprintf("/proc/%d/ns/mnt", os.Getppid()))
	if err == nil && os.SameFile(self, parent) {
		return errors.New("not in a mount namespace of its own (run-exec is started by ip netns exec)")
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	shared, err := sharedMounts(f)
	if err != nil {
		return err
	}
	if len(shared) > 0 {
		return fmt.Errorf("mounts here propagate outside this namespace (shared: %s)", strings.Join(shared, " "))
	}
	return nil
}

// trustCA makes the commands of this mount namespace trust ca besides the
// system's roots, and returns their environment: env with the trust
// variables naming the bundle. Without a system bundle on the host it
// changes nothing and says so.
func trustCA(ca []byte, env []string) ([]string, error) {
	base, targets := findBundles(systemBundles, regularFile)
	if base == "" {
		fmt.Fprintf(os.Stderr, "interceptd run: no system CA bundle (%s): the command does not trust interceptd's CA\n", strings.Join(systemBundles, ", "))
		return trustEnv(env, ""), nil
	}
	system, err := os.ReadFile(base)
	if err != nil {
		return nil, err
	}
	bundle, err := buildBundle(system, ca)
	if err != nil {
		return nil, err
	}
	if err := checkPrivateMounts(); err != nil {
		return nil, err
	}
	stage := ""
	for _, d := range stagingDirs {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			stage = d
			break
		}
	}
	if stage == "" {
		return nil, fmt.Errorf("no directory to stage the bundle in (%s)", strings.Join(stagingDirs, ", "))
	}
	size := strconv.Itoa(len(bundle) + 64*1024)
	if err := unix.Mount("tmpfs", stage, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0755,size="+size); err != nil {
		return nil, fmt.Errorf("mounting a tmpfs on %s: %w", stage, err)
	}
	// Detached once the bundle is bound over the targets: the binds keep
	// the tmpfs alive, and stage shows what it showed before.
	defer unix.Unmount(stage, unix.MNT_DETACH)
	file := filepath.Join(stage, "ca-bundle.crt")
	if err := os.WriteFile(file, bundle, 0o644); err != nil {
		return nil, err
	}
	for _, t := range targets {
		if err := unix.Mount(file, t, "", unix.MS_BIND, ""); err != nil {
			return nil, fmt.Errorf("binding the bundle over %s: %w", t, err)
		}
		if err := unix.Mount("", t, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return nil, fmt.Errorf("making %s read-only: %w", t, err)
		}
	}
	return trustEnv(env, base), nil
}

// runExecEnv is the environment `run` starts `ip netns exec` with: its own,
// with caEnv carrying ca, or without caEnv when there is none.
func runExecEnv(env []string, ca []byte) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k != caEnv {
			out = append(out, kv)
		}
	}
	if len(ca) > 0 {
		out = append(out, caEnv+"="+string(ca))
	}
	return out
}
