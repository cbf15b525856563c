package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/interceptd/interceptd/internal/config"
	"github.com/interceptd/interceptd/internal/daemon"
)

// cmdCA runs `interceptd ca`: prints the certificate of the CA that signs
// intercepted names' certificates (the one the config names, or the
// daemon's own in <data_dir>/ca, made now if it is not there yet), for
// clients in sandboxes to trust. The key is never printed.
func cmdCA(args []string) error {
	fs := flag.NewFlagSet("ca", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: interceptd ca [--config FILE] [--data-dir DIR]

Prints the PEM certificate of interceptd's CA: the CA that signs the
certificates the daemon presents for handlers marked https. Give it to the
clients in sandboxes (interceptd run does; docs/https.md shows the rest).
Made in <data_dir>/ca on first use if the config names no CA.

`)
		fs.PrintDefaults()
	}
	cfgPath := fs.String("config", "", "config `file` the daemon runs with (default: the embedded default)")
	dataDir := fs.String("data-dir", "", "data `dir` (overrides data_dir)")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return errUsage
	}
	cfg, err := loadConfig(*cfgPath, func(c *config.Config) {
		if *dataDir != "" {
			c.DataDir = *dataDir
		}
	})
	if err != nil {
		return err
	}
	ca, err := daemon.LoadCA(cfg)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(ca.CertPEM())
	return err
}
