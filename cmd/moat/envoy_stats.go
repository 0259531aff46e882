package main

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"

	"github.com/spf13/cobra"

	"github.com/moatnet/moat/envoy"
)

func newEnvoyStatsCommand(o *envoyOptions) *cobra.Command {
	var output, filter string
	var prom bool
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Print the proxy's counters, gauges and histograms",
		Long: `Print the proxy's stats as "name: value" lines (/stats), or in Prometheus
text format with --prometheus (/stats/prometheus). --filter keeps the stats
whose Envoy names match an RE2 regular expression. A proxy that serves only
/stats/prometheus (l7proxy) is read that way.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := envoyCheckOutput(output, "text", "json", "yaml"); err != nil {
				return err
			}
			if prom && output != "text" {
				return fmt.Errorf("--prometheus prints the Prometheus text format: it does not combine with --output %s", output)
			}
			if _, err := regexp.Compile(filter); err != nil {
				return fmt.Errorf("invalid --filter %q: %w", filter, err)
			}
			ctx, c, done, err := o.connect(cmd)
			if err != nil {
				return err
			}
			defer done()
			w := cmd.OutOrStdout()
			if !prom {
				stats, err := c.Stats(ctx, filter)
				var se *envoy.AdminStatusError
				switch {
				case errors.As(err, &se) && se.Status == http.StatusNotFound && output == "text":
					prom = true // l7proxy: only the Prometheus endpoint
				case err != nil:
					return err
				case output != "text":
					if stats == nil {
						stats = []envoy.AdminStat{}
					}
					return writeStructured(w, output, stats)
				default:
					for _, s := range stats {
						fmt.Fprintf(w, "%s: %s\n", s.Name, s.Value)
					}
					return nil
				}
			}
			text, err := c.PrometheusStats(ctx, filter)
			if err != nil {
				return err
			}
			_, err = w.Write(text)
			return err
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text, json or yaml")
	cmd.Flags().StringVar(&filter, "filter", "", "keep stats whose names match this RE2 regular expression")
	cmd.Flags().BoolVar(&prom, "prometheus", false, "read /stats/prometheus (Prometheus text format)")
	return cmd
}
