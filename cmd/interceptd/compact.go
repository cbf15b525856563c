package main

import (
	"flag"
	"fmt"

	"github.com/interceptd/interceptd/internal/config"
	"github.com/interceptd/interceptd/store"
)

// cmdStoreCompact runs `interceptd store compact`: offline, on the data dir
// of the config the daemon runs with.
func cmdStoreCompact(args []string) error {
	fs := flag.NewFlagSet("store compact", flag.ContinueOnError)
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
	res, err := store.Compact(cfg.DataDir)
	if err != nil {
		return err
	}
	fmt.Printf("compacted %s: %d → %d bytes (%.1f → %.1f MiB, %.1f MiB given back)\n", res.Path, res.Before, res.After,
		float64(res.Before)/(1<<20), float64(res.After)/(1<<20), float64(res.Before-res.After)/(1<<20))
	return nil
}
