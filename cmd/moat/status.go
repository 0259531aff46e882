package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/moatnet/moat/agent"
)

func newStatusCommand() *cobra.Command {
	var socket, output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the running agent's policies, endpoints and proxy sync state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body, err := newAgentClient(socket).get(cmd.Context(), "/v1/status", nil)
			if err != nil {
				return err
			}
			defer body.Close()
			var st agent.Status
			if err := json.NewDecoder(body).Decode(&st); err != nil {
				return fmt.Errorf("decode agent status: %w", err)
			}
			if output == "text" {
				writeStatus(cmd.OutOrStdout(), st)
				return nil
			}
			return writeStructured(cmd.OutOrStdout(), output, st)
		},
	}
	cmd.Flags().StringVar(&socket, "agent", defaultAgentSocket, "moat-agent API socket")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text, json or yaml")
	return cmd
}

func writeStatus(w io.Writer, st agent.Status) {
	fmt.Fprintf(w, "Node:      %s (%s mode)\n", st.Node, orDash(st.Mode))
	fmt.Fprintf(w, "Revision:  %d (synced %s)\n", st.Revision, st.LastSync.Format("15:04:05"))
	switch {
	case !st.SourcesStaleSince.IsZero():
		fmt.Fprintf(w, "Sources:   STALE since %s (%s ago): the API does not answer; enforcement stays as it was\n",
			st.SourcesStaleSince.Format(time.RFC3339), time.Since(st.SourcesStaleSince).Round(time.Second))
	case !st.SourcesSynced:
		fmt.Fprintf(w, "Sources:   not synced yet: nothing compiled; the pinned maps keep enforcing\n")
	}
	if st.ConfigError != "" {
		fmt.Fprintf(w, "Config:    %s\n", st.ConfigError)
	}
	fmt.Fprintf(w, "Policies:  %d in force, %d with errors\n", st.Policies, len(st.PolicyErrors))
	for _, e := range st.PolicyErrors {
		fmt.Fprintf(w, "  error: %s\n", e)
	}
	remote := ""
	if st.RemoteEndpoints > 0 {
		remote = fmt.Sprintf(" (%d remote endpoints)", st.RemoteEndpoints)
	}
	fmt.Fprintf(w, "Identities: %d%s\n", st.Identities, remote)
	if st.LastError != "" {
		fmt.Fprintf(w, "Last error: %s\n", st.LastError)
	}
	fmt.Fprintf(w, "Endpoints: %d\n", len(st.Endpoints))
	for _, e := range st.Endpoints {
		fmt.Fprintf(w, "  %-30s identity %-6d ifindex %-4d ingress %-8s egress %s\n",
			e.Namespace+"/"+e.Name, e.Identity, e.Ifindex, enforcement(e.IngressEnforced, e.IngressEntries),
			enforcement(e.EgressEnforced, e.EgressEntries))
	}
	proxy := "ready"
	if !st.ProxyReady {
		proxy = "NOT READY: HTTP redirects drop (fail closed)"
	}
	fmt.Fprintf(w, "L7 proxy:  %s (xDS version %s)\n", proxy, orDash(st.XDSVersion))
	if st.ProxyError != "" {
		fmt.Fprintf(w, "  %s\n", st.ProxyError)
	}
	for _, n := range st.XDS {
		conn := "disconnected"
		if n.Connected {
			conn = "connected"
		}
		fmt.Fprintf(w, "  node %s: %s\n", n.Node, conn)
		for _, t := range n.Types {
			line := fmt.Sprintf("    %-45s sent %-4s acked %-4s", shortType(t.TypeURL), orDash(t.Sent), orDash(t.ACKed))
			if t.LastNACK != nil {
				line += fmt.Sprintf(" NACK of %s: %s", t.LastNACK.Version, t.LastNACK.Detail)
			}
			fmt.Fprintln(w, line)
		}
	}
	fmt.Fprintf(w, "Flows:     %d buffered, %d seen\n", st.FlowsBuffered, st.FlowsDelivered)
}

func enforcement(enforced bool, entries int) string {
	if !enforced {
		return fmt.Sprintf("open/%d", entries)
	}
	return fmt.Sprintf("deny/%d", entries)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func shortType(u string) string {
	if i := strings.LastIndex(u, "/"); i >= 0 {
		return u[i+1:]
	}
	return u
}
