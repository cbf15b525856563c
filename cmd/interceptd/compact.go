package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/interceptd/interceptd/store"
)

// storeCompactCmd is `interceptd store compact`: offline, on the data dir
// of the config the daemon runs with.
func storeCompactCmd() *cobra.Command {
	var cfgPath, dataDir string
	cmd := &cobra.Command{
		Use:   "compact",
		Short: "rewrite a stopped daemon's store without the space deleted data left",
		Long: `Rewrites the store of a stopped daemon (the data dir of its config) without
the free pages deleted data left, and prints the sizes before and after.`,
		Example: `  sudo systemctl stop interceptd
  sudo interceptd store compact --config /etc/interceptd/config.yaml`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadOffline(cfgPath, dataDir)
			if err != nil {
				return err
			}
			res, err := store.Compact(cfg.DataDir)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "compacted %s: %d → %d bytes (%.1f → %.1f MiB, %.1f MiB given back)\n", res.Path, res.Before, res.After,
				float64(res.Before)/(1<<20), float64(res.After)/(1<<20), float64(res.Before-res.After)/(1<<20))
			return nil
		},
	}
	addConfigFlags(cmd, &cfgPath, &dataDir)
	// The store command's own --check and --admin-socket are not this one's.
	return uses(cmd)
}
