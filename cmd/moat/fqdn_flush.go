package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moatnet/moat/agent"
	"github.com/moatnet/moat/policy/fqdn"
)

// fqdn_flush.go owns `moat fqdn flush`: drop entries of the running agent's
// FQDN cache so that the next query for the name is learned afresh; the
// addresses leave the ipcache (unless another name still holds them) before
// the command returns.

func newFQDNFlushCommand() *cobra.Command {
	var socket, name, endpoint, output string
	cmd := &cobra.Command{
		Use:   "flush",
		Short: "Drop learned names from the agent's FQDN cache (all, or --name / --endpoint)",
		Long: `Drop learned names from the agent's FQDN cache. The next query for a dropped
name is learned again; until then connections to its old addresses are
dropped like those to any address no toFQDNs selector selects.

Addresses that a live connection uses stay in the ipcache until its flows
end (counted as deferred), so that a flush never cuts a connection.

--name takes a name or a pattern in policy matchPattern syntax
(*.example.com, **.example.com). --endpoint (namespace/name) drops the
names that endpoint's DNS rules let it ask about; the cache is per node,
so other endpoints that use those names learn them again too.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if name != "" {
				if err := fqdn.ValidatePattern(name); err != nil {
					return fmt.Errorf("--name %q: %w", name, err)
				}
				q.Set("name", name)
			}
			if endpoint != "" {
				ns, n, ok := strings.Cut(endpoint, "/")
				if ok && (ns == "" || n == "") || !ok && endpoint == "" {
					return fmt.Errorf("--endpoint %q: want namespace/name or name", endpoint)
				}
				q.Set("endpoint", endpoint)
			}
			body, err := newAgentClient(socket).post(cmd.Context(), "/v1/fqdn/flush", q)
			if err != nil {
				return err
			}
			defer body.Close()
			var res agent.FQDNFlush
			if err := json.NewDecoder(body).Decode(&res); err != nil {
				return fmt.Errorf("decode fqdn flush: %w", err)
			}
			if output == "text" {
				for _, n := range res.Names {
					fmt.Fprintf(cmd.OutOrStdout(), "flushed %s (%d addresses)\n", n.Name, len(n.IPs))
				}
				if _, err := fmt.Fprintf(cmd.OutOrStdout(), "%d names, %d addresses flushed\n", len(res.Names), res.Addresses); err != nil {
					return err
				}
				if res.Deferred > 0 {
					_, err := fmt.Fprintf(cmd.OutOrStdout(), "%d addresses stay in the ipcache until their live connections end\n", res.Deferred)
					return err
				}
				return nil
			}
			return writeStructured(cmd.OutOrStdout(), output, res)
		},
	}
	cmd.Flags().StringVar(&socket, "agent", defaultAgentSocket, "moat-agent API socket")
	cmd.Flags().StringVar(&name, "name", "", "only names matching this name or pattern (*.example.com)")
	cmd.Flags().StringVar(&endpoint, "endpoint", "", "only names this endpoint's DNS rules allow (namespace/name)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text, json or yaml")
	return cmd
}

// post performs POST path?query with no body (agentclient.go's request).
func (c *agentClient) post(ctx context.Context, path string, query url.Values) (io.ReadCloser, error) {
	return c.request(ctx, http.MethodPost, path, query)
}
