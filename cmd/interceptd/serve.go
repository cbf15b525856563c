package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	sdnotify "github.com/coreos/go-systemd/v22/daemon"

	"github.com/interceptd/interceptd/internal/config"
	"github.com/interceptd/interceptd/internal/daemon"
)

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

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
		override(cfg)
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

func cmdServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "config `file` (default: the embedded default config)")
	dataDir := fs.String("data-dir", "", "data `dir` for the bbolt store (overrides data_dir)")
	sock := fs.String("admin-socket", "", "admin socket `path` (overrides admin_socket)")
	metricsListen := fs.String("metrics-listen", "", "metrics `addr`, e.g. 127.0.0.1:9780 (overrides listen.metrics)")
	var upstreams stringList
	fs.Var(&upstreams, "dns-upstream", "upstream resolver `ip:port`; repeatable (overrides dns.upstreams)")
	level := fs.String("log-level", "info", "log `level`: debug, info, warn, error")
	format := fs.String("log-format", "text", "log `format`: text or json")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "serve takes no arguments, got %q\n", fs.Args())
		return errUsage
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	var h slog.Handler
	switch *format {
	case "text":
		h = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})
	case "json":
		h = slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})
	default:
		return fmt.Errorf("--log-format %q: want text or json", *format)
	}
	log := slog.New(h)
	slog.SetDefault(log)

	cfg, err := loadConfig(*cfgPath, func(c *config.Config) {
		if *dataDir != "" {
			c.DataDir = *dataDir
		}
		if *sock != "" {
			c.AdminSocket = *sock
		} else if env := os.Getenv("INTERCEPTD_SOCKET"); env != "" {
			c.AdminSocket = env
		}
		if *metricsListen != "" {
			c.Listen.Metrics = *metricsListen
		}
		if len(upstreams) > 0 {
			c.DNS.Upstreams = upstreams
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

func cmdCleanup(args []string) error {
	fs := flag.NewFlagSet("cleanup", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "config `file` the daemon ran with (default: the embedded default)")
	force := fs.Bool("force", false, "clean up even if a daemon answers on the admin socket")
	sock := adminSocketFlag(fs)
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	cfg, err := loadConfig(*cfgPath, nil)
	if err != nil {
		return err
	}
	if _, err := client(*sock).List(); err == nil && !*force {
		return fmt.Errorf("a daemon is running on %s: stop it first, or pass --force", socketPath(*sock))
	}
	removed, left, err := daemon.Cleanup(cfg)
	for _, n := range removed {
		fmt.Printf("removed namespace %s\n", n)
	}
	for _, n := range left {
		fmt.Printf("left namespace %s: made by another daemon (this one's data dir is %s); that daemon's cleanup removes it\n", n, cfg.DataDir)
	}
	if err != nil {
		return err
	}
	fmt.Println("removed this daemon's links, rules and routes")
	return nil
}

func cmdConfig(args []string) error {
	switch {
	case len(args) == 1 && args[0] == "default":
		os.Stdout.Write(config.DefaultYAML())
		return nil
	case len(args) == 2 && args[0] == "check":
		if _, err := config.Load(args[1]); err != nil {
			return err
		}
		fmt.Printf("%s: ok\n", args[1])
		return nil
	}
	fmt.Fprintln(os.Stderr, "usage: interceptd config default | check FILE")
	return errUsage
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
