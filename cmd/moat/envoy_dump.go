package main

import (
	"fmt"
	"slices"
	"strings"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/moatnet/moat/envoy"
)

// envoyDumpSections maps --type to the config dump sections it keeps:
// the whole-section message and the per-resource shape of ?resource=.
func envoyDumpSections(typ string) []proto.Message {
	switch typ {
	case "bootstrap":
		return []proto.Message{&adminv3.BootstrapConfigDump{}}
	case "listeners":
		return []proto.Message{&adminv3.ListenersConfigDump{}, &adminv3.ListenersConfigDump_DynamicListener{}, &adminv3.ListenersConfigDump_StaticListener{}}
	case "clusters":
		return []proto.Message{&adminv3.ClustersConfigDump{}, &adminv3.ClustersConfigDump_DynamicCluster{}, &adminv3.ClustersConfigDump_StaticCluster{}}
	case "routes":
		return []proto.Message{&adminv3.RoutesConfigDump{}, &adminv3.RoutesConfigDump_DynamicRouteConfig{}, &adminv3.RoutesConfigDump_StaticRouteConfig{}}
	case "endpoints":
		return []proto.Message{&adminv3.EndpointsConfigDump{}}
	}
	return nil
}

func envoyDumpTypes() []string {
	return []string{"all", "bootstrap", "listeners", "clusters", "routes", "endpoints"}
}

func newEnvoyConfigDumpCommand(o *envoyOptions) *cobra.Command {
	var output, typ string
	cmd := &cobra.Command{
		Use:   "config-dump",
		Short: "Print the proxy's config dump, whole or one section",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := envoyCheckOutput(output, "json", "yaml"); err != nil {
				return err
			}
			if !slices.Contains(envoyDumpTypes(), typ) {
				return fmt.Errorf("invalid --type %q: want %s", typ, envoyJoinOr(envoyDumpTypes()))
			}
			dump, err := o.fetchDump(cmd)
			if err != nil {
				return err
			}
			if typ != "all" {
				dump = envoyFilterDump(dump, envoyDumpSections(typ))
				if len(dump.GetConfigs()) == 0 {
					fmt.Fprintf(cmd.ErrOrStderr(), "warning: the config dump has no %s section\n", typ)
				}
			}
			raw, err := envoyProtoJSON(dump)
			if err != nil {
				return err
			}
			return writeStructured(cmd.OutOrStdout(), output, raw)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "json", "output format: json or yaml")
	cmd.Flags().StringVar(&typ, "type", "all", "section: "+strings.Join(envoyDumpTypes(), ", "))
	return cmd
}

func envoyFilterDump(d *adminv3.ConfigDump, keep []proto.Message) *adminv3.ConfigDump {
	out := &adminv3.ConfigDump{}
	for _, a := range d.GetConfigs() {
		for _, k := range keep {
			if a.MessageIs(k) {
				out.Configs = append(out.Configs, a)
				break
			}
		}
	}
	return out
}

func newEnvoyDiffCommand(o *envoyOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "diff",
		Short: "Show how the proxy's listeners, routes and clusters differ from what moat-agent intends",
		Long: `Compare the resources moat-agent serves the node with what the proxy runs,
resource by resource: missing, unexpected, rejected (with the proxy's
reason), and a line diff ("-" intended, "+" applied) of each resource that
differs.

Exit status: 0 when the proxy runs exactly what is intended, 1 otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, c, done, err := o.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			node, err := o.nodeName(ctx, c, nil)
			if err != nil {
				return err
			}
			want, err := o.intended(ctx, node)
			if err != nil {
				return err
			}
			dump, err := o.dump(ctx, cmd, c)
			if err != nil {
				return err
			}
			d, err := envoy.Diff(want.Resources, dump)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if d == "" {
				fmt.Fprintf(w, "The proxy runs what moat-agent intends for node %s (version %s).\n", node, orDash(want.Version))
				return nil
			}
			fmt.Fprintf(w, "Node %s, intended version %s:\n%s", node, orDash(want.Version), d)
			return &exitError{code: 1, msg: "the proxy at " + c.Addr() + " differs from what moat-agent intends"}
		},
	}
}
