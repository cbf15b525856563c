package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	sdnotify "github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"

	"github.com/interceptd/interceptd/internal/config"
	"github.com/interceptd/interceptd/internal/daemon"
)

// loadConfig reads --config (or the embedded default) and applies the flags
// that were set on top of it, then validates the result.
func loadConfig(path string, override func(*config.Config)) (*config.Config, error) {
	var cfg *config.Config
	var err error
	if path == "" {
		cfg = config.Default()
	} else if cfg, err = config.Load(path); err != nil {
		return nil, err
	}
	if override != nil {
		// Kept: a reload makes the same changes to the file it reads.
		cfg.Override(override)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("after flags: %w", err)
	}
	return cfg, nil
}

// procsPerCPU is how many of Go's processors (Ps) the daemon runs for each
// CPU it may use. Its goroutines spend most of their time in system calls
// that do the network stack's work: a write to a veth or loopback peer
// delivers the packet, the peer's softirq included, before it returns. The
// router makes those calls raw (router/wire/rawio.go), so a goroutine keeps its
// P for the whole call; with one P per CPU, a goroutine made ready waits
// for another's write to end even while a CPU could run it. Two per CPU
// forward about 9% more on the benchmark's passthrough path, with no more
// CPU per request (bench/README.md).
const procsPerCPU = 2

// setProcs raises GOMAXPROCS to procsPerCPU times Go's default (the CPUs,
// or the cgroup's CPU limit), unless the GOMAXPROCS environment variable
// chose it. It returns the value in force. Once set, Go no longer follows
// changes of the cgroup's CPU limit while the daemon runs; a restart does.
func setProcs() int {
	if os.Getenv("GOMAXPROCS") != "" {
		return runtime.GOMAXPROCS(0)
	}
	n := procsPerCPU * runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(n)
	return n
}

type serveOptions struct {
	config, dataDir, socket, metricsListen string
	upstreams                              []string
	level, format                          string
}

func serveCmd() *cobra.Command {
	var o serveOptions
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "run the daemon (root)",
		Long: `Runs the daemon: builds the rules, starts the DNS shim, the router, the TLS
front, the admin socket and the metrics listener, and serves until SIGINT or
SIGTERM. SIGHUP reloads what can change live. Without --config it runs the
embedded default config (interceptd config default prints it); the flags
override the config's fields.`,
		Example: `  sudo interceptd serve
  sudo interceptd serve --config /etc/interceptd/config.yaml --log-format json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return o.run() },
	}
	f := cmd.Flags()
	f.StringVar(&o.config, "config", "", "config `file` (default: the embedded default config)")
	f.StringVar(&o.dataDir, "data-dir", "", "data `dir` for the bbolt store (overrides data_dir)")
	f.StringVar(&o.socket, flagSocket, "", "admin socket `path` to serve (overrides admin_socket; default $INTERCEPTD_SOCKET or the config's)")
	f.StringVar(&o.metricsListen, "metrics-listen", "", "metrics `addr`, e.g. 127.0.0.1:9780 (overrides listen.metrics)")
	f.StringArrayVar(&o.upstreams, "dns-upstream", nil, "upstream resolver `ip:port`; repeatable (overrides dns.upstreams)")
	f.StringVar(&o.level, "log-level", "info", "log `level`: debug, info, warn, error")
	f.StringVar(&o.format, "log-format", "text", "log `format`: text or json")
	cmd.MarkFlagFilename("config", "yaml", "yml")
	cmd.MarkFlagDirname("data-dir")
	cmd.RegisterFlagCompletionFunc("log-level", cobra.FixedCompletions([]string{"debug", "info", "warn", "error"}, cobra.ShellCompDirectiveNoFileComp))
	cmd.RegisterFlagCompletionFunc("log-format", cobra.FixedCompletions([]string{"text", "json"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func (o *serveOptions) run() error {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.level)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	var h slog.Handler
	switch o.format {
	case "text":
		h = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})
	case "json":
		h = slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})
	default:
		return fmt.Errorf("--log-format %q: want text or json", o.format)
	}
	log := slog.New(h)
	slog.SetDefault(log)

	cfg, err := loadConfig(o.config, func(c *config.Config) {
		if o.dataDir != "" {
			c.DataDir = o.dataDir
		}
		if o.socket != "" {
			c.AdminSocket = o.socket
		} else if env := os.Getenv("INTERCEPTD_SOCKET"); env != "" {
			c.AdminSocket = env
		}
		if o.metricsListen != "" {
			c.Listen.Metrics = o.metricsListen
		}
		if len(o.upstreams) > 0 {
			c.DNS.Upstreams = o.upstreams
		}
	})
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		log.Warn("not running as root: creating namespaces and rules needs CAP_SYS_ADMIN and CAP_NET_ADMIN")
	}
	log.Debug("go processors", "gomaxprocs", setProcs(), "cpus", runtime.NumCPU())

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	d, err := daemon.Start(ctx, cfg, log)
	if err != nil {
		return err
	}
	// Under systemd (Type=notify): READY only now that the rules and every
	// listener are in place; keep-alives while the daemon answers; RELOADING
	// around SIGHUP; STOPPING on the way out. Outside systemd these are no-ops.
	notify(log, sdnotify.SdNotifyReady)
	go watchdog(ctx, d, log)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			notify(log, sdnotify.SdNotifyReloading)
			// The whole config file, then secrets and scripts; a refused
			// reload keeps the running config and says why in the log.
			d.ReloadConfig()
			notify(log, sdnotify.SdNotifyReady)
		}
	}()
	err = d.Wait(ctx)
	notify(log, sdnotify.SdNotifyStopping)
	return err
}

func cleanupCmd(g *globals) *cobra.Command {
	var cfgPath string
	var force bool
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "remove the namespaces, links, rules and routes a stopped daemon made",
		Long: `Removes every namespace, link, rule and route the daemon with this config made,
after it stopped (its sandboxes' namespaces only: those another daemon made are
left, and named). Refuses while a daemon answers on the admin socket, unless
--force.`,
		Example: `  sudo interceptd cleanup
  sudo interceptd cleanup --config /etc/interceptd/config.yaml`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return cleanup(cmd.OutOrStdout(), g, cfgPath, force) },
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "config `file` the daemon ran with (default: the embedded default)")
	cmd.Flags().BoolVar(&force, "force", false, "clean up even if a daemon answers on the admin socket")
	cmd.MarkFlagFilename("config", "yaml", "yml")
	return uses(cmd, flagSocket)
}

func cleanup(w io.Writer, g *globals, path string, force bool) error {
	cfg, err := loadConfig(path, nil)
	if err != nil {
		return err
	}
	if _, err := client(g.socket).List(); err == nil && !force {
		return fmt.Errorf("a daemon is running on %s: stop it first, or pass --force", socketPath(g.socket))
	}
	removed, left, err := daemon.Cleanup(cfg)
	for _, n := range removed {
		fmt.Fprintf(w, "removed namespace %s\n", n)
	}
	for _, n := range left {
		fmt.Fprintf(w, "left namespace %s: made by another daemon (this one's data dir is %s); that daemon's cleanup removes it\n", n, cfg.DataDir)
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "removed this daemon's links, rules and routes")
	return nil
}

func configCmd() *cobra.Command {
	def := &cobra.Command{
		Use:   "default",
		Short: "print the embedded default config",
		Long: `Prints the config the daemon runs without --config, every field commented:
a starting point for a config file.`,
		Example: `  interceptd config default > /etc/interceptd/config.yaml`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := cmd.OutOrStdout().Write(config.DefaultYAML())
			return err
		},
	}
	check := &cobra.Command{
		Use:     "check FILE",
		Short:   "validate a config file",
		Long:    `Reads and validates a config file as serve would, and names the field and line of what is wrong.`,
		Example: `  interceptd config check /etc/interceptd/config.yaml`,
		Args:    nArgs(1, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := config.Load(args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", args[0])
			return nil
		},
	}
	check.ValidArgsFunction = func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return []cobra.Completion{"yaml", "yml"}, cobra.ShellCompDirectiveFilterFileExt
	}
	return newGroup("config", "print the default config, or check a config file", "", def, check)
}

func notify(log *slog.Logger, state string) {
	if _, err := sdnotify.SdNotify(false, state); err != nil {
		log.Warn("sd_notify failed", "state", state, "error", err)
	}
}

// watchdog sends keep-alives at half the unit's WatchdogSec, but only while
// the daemon's own health check passes, so a wedged daemon gets restarted.
func watchdog(ctx context.Context, d *daemon.Daemon, log *slog.Logger) {
	interval, err := sdnotify.SdWatchdogEnabled(false)
	if err != nil || interval == 0 {
		return
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := d.Healthy(); err != nil {
				log.Error("health check failed: withholding the watchdog keep-alive", "error", err)
				continue
			}
			notify(log, sdnotify.SdNotifyWatchdog)
		}
	}
}
