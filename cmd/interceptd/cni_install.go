package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// Installing the plugin on a node (the DaemonSet's init container, or by
// hand): the binary as interceptd-cni in the runtime's CNI bin dir, and
// an interceptd-cni entry appended, last, to the plugins of the conflist
// the runtime uses, so that it runs chained after the cluster's primary
// plugin with that plugin's result.

func cniCmd(g *globals) *cobra.Command {
	return newGroup("cni", "install or remove the chained CNI plugin on this node", `Installs interceptd as the CNI plugin interceptd-cni, chained after the
node's primary plugin (docs/runtimes.md), or removes it.`,
		cniInstallCmd(g), cniUninstallCmd())
}

// cniPaths are where the runtime looks: its CNI bin and conf dirs, and
// the conflist to change ("" for the one it uses: the first in name
// order).
type cniPaths struct {
	binDir, confDir, conflist string
}

func (p *cniPaths) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&p.binDir, "bin-dir", "/opt/cni/bin", "the runtime's CNI plugin `dir`")
	cmd.Flags().StringVar(&p.confDir, "conf-dir", "/etc/cni/net.d", "the runtime's CNI config `dir`")
	cmd.Flags().StringVar(&p.conflist, "conflist", "", "the conflist `file` to change, in --conf-dir (default: the first in name order, the one the runtime uses)")
}

func cniInstallCmd(g *globals) *cobra.Command {
	var p cniPaths
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "install",
		Short: "install interceptd-cni and chain it after the node's primary plugin",
		Long: `Copies this binary to --bin-dir as interceptd-cni, and appends an
interceptd-cni entry (with the admin socket) as the last plugin of the
conflist the runtime uses. Running it again replaces the binary and the
entry; the other plugins and fields of the conflist are kept. The primary
plugin must give each container a veth of its own with a route to its
address (ptp does); ADD refuses other wiring, saying why.`,
		Example: `  sudo interceptd cni install
  interceptd cni install --bin-dir /host/opt/cni/bin --conf-dir /host/etc/cni/net.d --wait 5m`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("finding this binary: %w", err)
			}
			return cniInstall(cmd.OutOrStdout(), p, self, socketPath(g.socket), wait)
		},
	}
	p.flags(cmd)
	cmd.Flags().DurationVar(&wait, "wait", 0, "wait up to `duration` for the primary plugin's conflist (a primary plugin's own DaemonSet may write it after this runs)")
	return uses(cmd, flagSocket)
}

func cniUninstallCmd() *cobra.Command {
	var p cniPaths
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "remove interceptd-cni from the node's conflist and CNI bin dir",
		Long: `Removes every interceptd-cni entry from the conflist the runtime uses and
the interceptd-cni binary. Run it when interceptd leaves the node: containers
started while the entry is there and the daemon is not fail to start
(the plugin answers "try again later").`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return cniUninstall(cmd.OutOrStdout(), p) },
	}
	p.flags(cmd)
	return cmd
}

// findConflist is the conflist to change: the one named, else the first
// config in name order, which is the one kubelet's runtime (containerd,
// CRI-O) loads. A lone plugin config (.conf) cannot take a chained plugin.
func findConflist(p cniPaths) (string, error) {
	if p.conflist != "" {
		return filepath.Join(p.confDir, filepath.Base(p.conflist)), nil
	}
	ents, err := os.ReadDir(p.confDir)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", p.confDir, err)
	}
	var names []string
	for _, e := range ents {
		if ext := filepath.Ext(e.Name()); !e.IsDir() && (ext == ".conflist" || ext == ".conf" || ext == ".json") {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	if len(names) == 0 {
		return "", fmt.Errorf("%w in %s", errNoConflist, p.confDir)
	}
	if filepath.Ext(names[0]) != ".conflist" {
		return "", fmt.Errorf("%s is a single plugin's config, which takes no chained plugin: make it a .conflist (its config as the one entry of \"plugins\") or name one with --conflist", filepath.Join(p.confDir, names[0]))
	}
	return filepath.Join(p.confDir, names[0]), nil
}

var errNoConflist = errors.New("no CNI config")

// editConflist rewrites the conflist at path with edit applied to its
// plugins, atomically (a runtime reading it meanwhile sees the old or the
// new one), keeping every other field as it was. A nil edit only checks
// that it can be edited.
func editConflist(path string, edit func([]any) []any) (kept []string, err error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	var conf map[string]any
	if err := json.Unmarshal(raw, &conf); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	plugins, ok := conf["plugins"].([]any)
	if !ok {
		return nil, fmt.Errorf("%s has no \"plugins\" list", path)
	}
	if edit == nil {
		return nil, nil // a check only
	}
	plugins = edit(plugins)
	for _, pl := range plugins {
		if m, ok := pl.(map[string]any); ok {
			kept = append(kept, fmt.Sprint(m["type"]))
		}
	}
	conf["plugins"] = plugins
	out, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return nil, err
	}
	// Not named *.conflist until the rename: a runtime never loads it half written.
	return kept, writeAtomic(path, append(out, '\n'), 0o644)
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".interceptd-tmp")
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("setting the mode of %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("replacing %s: %w", path, err)
	}
	return nil
}

func withoutPlugin(plugins []any) []any {
	return slices.DeleteFunc(slices.Clone(plugins), func(pl any) bool {
		m, ok := pl.(map[string]any)
		return ok && m["type"] == cniName
	})
}

func cniInstall(w io.Writer, p cniPaths, self, socket string, wait time.Duration) error {
	path, err := findConflist(p)
	for deadline := time.Now().Add(wait); errors.Is(err, errNoConflist) && time.Now().Before(deadline); {
		time.Sleep(2 * time.Second)
		path, err = findConflist(p)
	}
	if err != nil {
		return err
	}
	// The conflist is checked before the binary goes in: a refused
	// install leaves the node as it was.
	if _, err := editConflist(path, nil); err != nil {
		return err
	}
	bin, err := os.ReadFile(self)
	if err != nil {
		return fmt.Errorf("reading this binary: %w", err)
	}
	dst := filepath.Join(p.binDir, cniName)
	if err := writeAtomic(dst, bin, 0o755); err != nil {
		return err
	}
	fmt.Fprintf(w, "installed %s\n", dst)
	types, err := editConflist(path, func(plugins []any) []any {
		// Last: the chained plugin gets every earlier plugin's result.
		return append(withoutPlugin(plugins), map[string]any{"type": cniName, "socket": socket})
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "chained %s in %s: plugins %s\n", cniName, path, strings.Join(types, ", "))
	if len(types) > 0 && types[0] != "ptp" {
		fmt.Fprintf(w, "note: the primary plugin is %s; interceptd-cni chains after a plugin that gives each container a veth of its own with a route to its address (ptp), and refuses other wiring at ADD, saying why\n", types[0])
	}
	return nil
}

func cniUninstall(w io.Writer, p cniPaths) error {
	path, err := findConflist(p)
	if err != nil && !errors.Is(err, errNoConflist) {
		return err
	}
	if err == nil {
		types, err := editConflist(path, withoutPlugin)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "removed %s from %s: plugins %s\n", cniName, path, strings.Join(types, ", "))
	}
	dst := filepath.Join(p.binDir, cniName)
	if err := os.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", dst, err)
	}
	fmt.Fprintf(w, "removed %s\n", dst)
	return nil
}
