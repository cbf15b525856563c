package main

import (
	"github.com/spf13/cobra"

	"github.com/interceptd/interceptd/internal/config"
	"github.com/interceptd/interceptd/internal/daemon"
)

// caCmd is `interceptd ca`: prints the certificate of the CA that signs
// intercepted names' certificates (the one the config names, or the
// daemon's own in <data_dir>/ca, made now if it is not there yet), for
// clients in sandboxes to trust. The key is never printed.
func caCmd() *cobra.Command {
	var cfgPath, dataDir string
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "print interceptd's CA certificate (PEM), for clients to trust",
		Long: `Prints the PEM certificate of interceptd's CA: the CA that signs the
certificates the daemon presents for handlers marked https. Give it to the
clients in sandboxes (interceptd run does; docs/https.md shows the rest).
Made in <data_dir>/ca on first use if the config names no CA.`,
		Example: `  interceptd ca > interceptd-ca.pem
  interceptd ca --config /etc/interceptd/config.yaml`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadOffline(cfgPath, dataDir)
			if err != nil {
				return err
			}
			ca, err := daemon.LoadCA(cfg)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(ca.CertPEM())
			return err
		},
	}
	addConfigFlags(cmd, &cfgPath, &dataDir)
	return cmd
}

// loadOffline loads the config of the commands that addConfigFlags gives
// --config and --data-dir.
func loadOffline(cfgPath, dataDir string) (*config.Config, error) {
	return loadConfig(cfgPath, func(c *config.Config) {
		if dataDir != "" {
			c.DataDir = dataDir
		}
	})
}

// addConfigFlags adds --config and --data-dir, for the commands that work
// on the daemon's files without the daemon.
func addConfigFlags(cmd *cobra.Command, cfgPath, dataDir *string) {
	cmd.Flags().StringVar(cfgPath, "config", "", "config `file` the daemon runs with (default: the embedded default)")
	cmd.Flags().StringVar(dataDir, "data-dir", "", "data `dir` (overrides data_dir)")
	cmd.MarkFlagFilename("config", "yaml", "yml")
	cmd.MarkFlagDirname("data-dir")
}
