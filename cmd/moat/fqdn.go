package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/moatnet/moat/agent"
)

// fqdn.go owns `moat fqdn`: the running agent's FQDN cache (the addresses
// its DNS proxy learned for names that toFQDNs selectors select).

func newFQDNCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fqdn",
		Short: "Inspect the agent's DNS proxy state",
	}
	cmd.AddCommand(newFQDNCacheCommand(), newFQDNFlushCommand())
	return cmd
}

func newFQDNCacheCommand() *cobra.Command {
	var socket, output string
	cmd := &cobra.Command{
		Use:   "cache",
		Short: "List the learned names and addresses with their TTL left and identities",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			body, err := newAgentClient(socket).get(cmd.Context(), "/v1/fqdn/cache", nil)
			if err != nil {
				return err
			}
			defer body.Close()
			var c agent.FQDNCache
			if err := json.NewDecoder(body).Decode(&c); err != nil {
				return fmt.Errorf("decode fqdn cache: %w", err)
			}
			if output == "text" {
				return writeFQDNCache(cmd.OutOrStdout(), c)
			}
			return writeStructured(cmd.OutOrStdout(), output, c)
		},
	}
	cmd.Flags().StringVar(&socket, "agent", defaultAgentSocket, "moat-agent API socket")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text, json or yaml")
	return cmd
}

func writeFQDNCache(w io.Writer, c agent.FQDNCache) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tIP\tTTL LEFT\tIDENTITY")
	for _, e := range c.Entries {
		id := "-"
		if e.Identity != 0 {
			id = fmt.Sprint(uint32(e.Identity))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Name, e.IP, e.TTL, id)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d entries; %d learned addresses in %d identities\n", len(c.Entries), c.LearnedAddresses, c.LearnedIdentities)
	return err
}
