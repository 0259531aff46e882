package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/moatnet/moat/envoy"
)

// defaultEnvoyAdmin is where the chart's Envoy serves its admin interface.
const defaultEnvoyAdmin = "/run/moat/envoy-admin.sock"

// envoyOptions are the flags every `moat envoy` subcommand shares.
type envoyOptions struct {
	admin   string
	agent   string
	node    string
	timeout time.Duration
}

func newEnvoyCommand() *cobra.Command {
	o := &envoyOptions{}
	cmd := &cobra.Command{
		Use:   "envoy",
		Short: "Inspect the node's L7 proxy (Envoy or l7proxy) through its admin interface",
		Long: `Inspect the node's L7 proxy through its admin interface: readiness, the
listeners, routes and clusters it runs, whether they are what moat-agent
intends (SYNCED, STALE, or NACKED with Envoy's reason), config dumps, stats,
and the bootstrap moat gives Envoy.`,
		Args: cobra.NoArgs,
	}
	f := cmd.PersistentFlags()
	f.StringVar(&o.admin, "admin", defaultEnvoyAdmin, "proxy admin interface: unix socket path (/path or unix:/path) or host:port")
	f.StringVar(&o.agent, "agent", defaultAgentSocket, "moat-agent API socket (for the intended resources)")
	f.StringVar(&o.node, "node", "", "xDS node name (default: the node ID the proxy reports)")
	f.DurationVar(&o.timeout, "timeout", 10*time.Second, "time limit for the whole command")
	cmd.AddCommand(
		newEnvoyStatusCommand(o),
		newEnvoyResourceCommand(o, "listeners"),
		newEnvoyResourceCommand(o, "routes"),
		newEnvoyResourceCommand(o, "clusters"),
		newEnvoyConfigDumpCommand(o),
		newEnvoyStatsCommand(o),
		newEnvoyDiffCommand(o),
		newEnvoyBootstrapCommand(o),
	)
	return cmd
}

// connect bounds the command by --timeout and opens the admin client; done
// releases both.
func (o *envoyOptions) connect(cmd *cobra.Command) (ctx context.Context, c *envoy.AdminClient, done func(), err error) {
	if o.timeout <= 0 {
		return nil, nil, nil, fmt.Errorf("invalid --timeout %s: must be positive", o.timeout)
	}
	if c, err = envoy.NewAdminClient(o.admin); err != nil {
		return nil, nil, nil, fmt.Errorf("invalid --admin: %w", err)
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
	return ctx, c, func() { c.Close(); cancel() }, nil
}

// fetchDump connects, reads the config dump (see dump) and disconnects: for
// commands that need nothing else from the proxy.
func (o *envoyOptions) fetchDump(cmd *cobra.Command) (*adminv3.ConfigDump, error) {
	ctx, c, done, err := o.connect(cmd)
	if err != nil {
		return nil, err
	}
	defer done()
	return o.dump(ctx, cmd, c)
}

// dump reads the config dump and warns on stderr about extension types
// moat cannot decode (their settings show as empty).
func (o *envoyOptions) dump(ctx context.Context, cmd *cobra.Command, c *envoy.AdminClient) (*adminv3.ConfigDump, error) {
	raw, err := c.ConfigDumpRaw(ctx, "")
	if err != nil {
		return nil, err
	}
	d, unknown, err := envoy.ParseConfigDump(raw)
	if err != nil {
		return nil, fmt.Errorf("parse /config_dump from %s: %w", c.Addr(), err)
	}
	if len(unknown) > 0 {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: the config dump uses types moat does not know; their settings are left out: %s\n", strings.Join(unknown, ", "))
	}
	return d, nil
}

// nodeName returns --node, or else the node ID the proxy reports.
func (o *envoyOptions) nodeName(ctx context.Context, c *envoy.AdminClient, info *adminv3.ServerInfo) (string, error) {
	if o.node != "" {
		return o.node, nil
	}
	if info == nil {
		var err error
		if info, err = c.ServerInfo(ctx); err != nil {
			return "", fmt.Errorf("learn the node name (or pass --node): %w", err)
		}
	}
	if id := info.GetNode().GetId(); id != "" {
		return id, nil
	}
	return "", errors.New("the proxy reports no node ID: pass --node")
}

// intended fetches what moat-agent serves the node.
func (o *envoyOptions) intended(ctx context.Context, node string) (*envoy.IntendedResources, error) {
	body, err := newAgentClient(o.agent).get(ctx, envoy.IntendedResourcesPath, url.Values{"node": {node}})
	if err != nil {
		return nil, err
	}
	defer body.Close()
	data, err := io.ReadAll(body)
	if err != nil {
		return nil, fmt.Errorf("read intended resources from moat-agent: %w", err)
	}
	r, err := envoy.UnmarshalIntended(data)
	if err != nil {
		return nil, fmt.Errorf("moat-agent %s: %w", envoy.IntendedResourcesPath, err)
	}
	return r, nil
}

// envoyCheckOutput rejects an -o value outside allowed.
func envoyCheckOutput(output string, allowed ...string) error {
	if slices.Contains(allowed, output) {
		return nil
	}
	return fmt.Errorf("invalid --output %q: want %s", output, envoyJoinOr(allowed))
}

func envoyJoinOr(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// envoyProtoJSON renders an admin or xDS proto for writeStructured, which uses
// encoding/json and so does not know protobuf's JSON mapping. nil renders
// as null.
func envoyProtoJSON(m proto.Message) (json.RawMessage, error) {
	if m == nil || !m.ProtoReflect().IsValid() {
		return json.RawMessage("null"), nil
	}
	b, err := envoy.MarshalAdminJSON(m)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(b), nil
}
