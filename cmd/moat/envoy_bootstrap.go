package main

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moatnet/moat/agent"
	"github.com/moatnet/moat/envoy"
)

func newEnvoyBootstrapCommand(o *envoyOptions) *cobra.Command {
	var output, xdsSocket, alsSocket, stats string
	cmd := &cobra.Command{
		Use:   "bootstrap",
		Short: "Print the Envoy bootstrap (envoy -c) that points Envoy at moat-agent",
		Long: `Print the bootstrap for an Envoy driven by moat-agent: node ID (--node,
default this host's name, as the agent uses), ADS over the agent's xDS
socket, the access-log service, the admin interface at --admin and a
Prometheus listener. Nothing is contacted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := envoyCheckOutput(output, "yaml", "json"); err != nil {
				return err
			}
			node := o.node
			if node == "" {
				h, err := os.Hostname()
				if err != nil {
					return fmt.Errorf("learn the host name (or pass --node): %w", err)
				}
				node = h
			}
			cfg := envoy.BootstrapConfig{NodeName: node, XDSSocket: xdsSocket, AccessLogSocket: alsSocket}
			if path, ok := strings.CutPrefix(o.admin, "unix:"); ok || strings.HasPrefix(o.admin, "/") {
				if !ok {
					path = o.admin
				}
				cfg.AdminSocket = path
			} else {
				ap, err := netip.ParseAddrPort(o.admin)
				if err != nil {
					return fmt.Errorf("invalid --admin %q: want a socket path or IP:port: %w", o.admin, err)
				}
				cfg.AdminAddress = ap
			}
			if stats != "" {
				ap, err := netip.ParseAddrPort(stats)
				if err != nil {
					return fmt.Errorf("invalid --stats-address %q: want IP:port: %w", stats, err)
				}
				cfg.StatsAddress = ap
			}
			b, err := envoy.Bootstrap(cfg)
			if err != nil {
				return err
			}
			var out []byte
			if output == "json" {
				out, err = envoy.BootstrapJSON(b)
			} else {
				out, err = envoy.BootstrapYAML(b)
			}
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVarP(&output, "output", "o", "yaml", "output format: yaml or json")
	f.StringVar(&xdsSocket, "xds-socket", filepath.Join(agent.DefaultRunDir, agent.XDSSocket), "moat-agent's xDS (ADS) socket")
	f.StringVar(&alsSocket, "access-log-socket", filepath.Join(agent.DefaultRunDir, agent.AccessLogSocket), "moat-agent's access-log service socket")
	f.StringVar(&stats, "stats-address", "", "IP:port of the Prometheus stats listener (default "+envoy.DefaultStatsAddress.String()+")")
	return cmd
}
