package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/moatnet/moat/envoy"
)

// envoyStatus is the output of `moat envoy status`.
type envoyStatus struct {
	Admin   string `json:"admin"`
	State   string `json:"state"`
	Version string `json:"version,omitempty"`
	Uptime  string `json:"uptime,omitempty"`
	Node    string `json:"node,omitempty"`
	// IntendedVersion is the xDS version moat-agent serves the node.
	IntendedVersion string           `json:"intendedVersion,omitempty"`
	Sync            []envoy.TypeSync `json:"sync,omitempty"`
	// SyncError says why the sync state is unknown.
	SyncError string `json:"syncError,omitempty"`
}

// problem returns why the proxy is not ready and in sync, "" if it is.
func (s *envoyStatus) problem() string {
	var p []string
	if s.State != envoy.AdminStateLive {
		p = append(p, "not ready ("+s.State+")")
	}
	if s.SyncError != "" {
		p = append(p, "sync state unknown")
	}
	for _, ts := range s.Sync {
		if ts.State != envoy.SyncSynced {
			p = append(p, envoy.SyncTypeName(ts.TypeURL)+" "+string(ts.State))
		}
	}
	return strings.Join(p, ", ")
}

func newEnvoyStatusCommand(o *envoyOptions) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Readiness, uptime and, per resource type, whether the proxy runs what moat-agent intends",
		Long: `Show whether the proxy is ready, how long it has been up and, for listeners,
routes and clusters, whether it runs exactly what moat-agent intends:
SYNCED, STALE (missing, different or unexpected resources, listed) or NACKED
(the proxy rejected an update; its reason is shown).

Exit status: 0 when the proxy is LIVE and every type is SYNCED, 2 when it is
not, 1 on errors.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := envoyCheckOutput(output, "text", "json", "yaml"); err != nil {
				return err
			}
			ctx, c, done, err := o.connect(cmd)
			if err != nil {
				return err
			}
			defer done()

			st := &envoyStatus{Admin: c.Addr()}
			if st.State, err = c.Ready(ctx); err != nil {
				return err
			}
			info, err := c.ServerInfo(ctx)
			if err != nil {
				return err
			}
			st.Version = info.GetVersion()
			if u := info.GetUptimeCurrentEpoch(); u != nil {
				st.Uptime = u.AsDuration().Round(time.Second).String()
			}
			if st.Node, err = o.nodeName(ctx, c, info); err != nil {
				return err
			}
			if err := o.fillSync(ctx, cmd, c, st); err != nil {
				st.SyncError = err.Error()
			}

			if output == "text" {
				writeEnvoyStatus(cmd.OutOrStdout(), st)
			} else if err := writeStructured(cmd.OutOrStdout(), output, st); err != nil {
				return err
			}
			if p := st.problem(); p != "" {
				return &exitError{code: 2, msg: "proxy at " + c.Addr() + " is not ready and in sync: " + p}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text, json or yaml")
	return cmd
}

func (o *envoyOptions) fillSync(ctx context.Context, cmd *cobra.Command, c *envoy.AdminClient, st *envoyStatus) error {
	want, err := o.intended(ctx, st.Node)
	if err != nil {
		return err
	}
	st.IntendedVersion = want.Version
	dump, err := o.dump(ctx, cmd, c)
	if err != nil {
		return err
	}
	st.Sync, err = envoy.CompareSync(want.Resources, dump)
	return err
}

func writeEnvoyStatus(w io.Writer, st *envoyStatus) {
	fmt.Fprintf(w, "Proxy:     %s\n", st.Admin)
	fmt.Fprintf(w, "State:     %s\n", st.State)
	if st.Version != "" {
		fmt.Fprintf(w, "Version:   %s\n", st.Version)
	}
	fmt.Fprintf(w, "Uptime:    %s\n", orDash(st.Uptime))
	fmt.Fprintf(w, "Node:      %s\n", st.Node)
	if st.SyncError != "" {
		fmt.Fprintf(w, "Sync:      unknown: %s\n", st.SyncError)
		return
	}
	fmt.Fprintf(w, "Intended:  version %s (moat-agent)\n", orDash(st.IntendedVersion))
	for _, ts := range st.Sync {
		fmt.Fprintf(w, "  %-10s %s\n", envoy.SyncTypeName(ts.TypeURL), ts.Summary())
	}
}
