package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/moatnet/moat/envoy"
)

// envoyTypeURL maps a command's resource kind to its xDS type URL.
func envoyTypeURL(kind string) string {
	switch kind {
	case "listeners":
		return resource.ListenerType
	case "routes":
		return resource.RouteType
	case "clusters":
		return resource.ClusterType
	}
	return ""
}

// envoyResource is one resource in -o json|yaml output.
type envoyResource struct {
	Name    string          `json:"name"`
	Version string          `json:"version,omitempty"`
	Config  json.RawMessage `json:"config"`            // active config, null if none
	Warming json.RawMessage `json:"warming,omitempty"` // config being initialised
	Error   *envoyNACK      `json:"error,omitempty"`   // latest rejected update
}

type envoyNACK struct {
	Version string `json:"version"`
	Details string `json:"details"`
}

func newEnvoyResourceCommand(o *envoyOptions, kind string) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   kind,
		Short: "List the dynamic " + kind + " the proxy runs, one per line (-o json|yaml for the full config)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := envoyCheckOutput(output, "text", "json", "yaml"); err != nil {
				return err
			}
			dump, err := o.fetchDump(cmd)
			if err != nil {
				return err
			}
			applied, err := envoy.AppliedResources(dump)
			if err != nil {
				return err
			}
			byName := applied[envoyTypeURL(kind)]
			names := make([]string, 0, len(byName))
			for n := range byName {
				names = append(names, n)
			}
			slices.Sort(names)
			if output == "text" {
				w := cmd.OutOrStdout()
				for _, n := range names {
					writeEnvoyResourceLine(w, byName[n])
				}
				return nil
			}
			out := make([]envoyResource, 0, len(names))
			for _, n := range names {
				r := byName[n]
				er := envoyResource{Name: n, Version: r.Version}
				if er.Config, err = envoyProtoJSON(r.Active); err != nil {
					return err
				}
				if r.Warming != nil {
					if er.Warming, err = envoyProtoJSON(r.Warming); err != nil {
						return err
					}
				}
				if r.Error != nil {
					er.Error = &envoyNACK{Version: r.Error.GetVersionInfo(), Details: r.Error.GetDetails()}
				}
				out = append(out, er)
			}
			return writeStructured(cmd.OutOrStdout(), output, out)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text, json or yaml")
	return cmd
}

// writeEnvoyResourceLine prints "name  key facts  version v  [state]".
func writeEnvoyResourceLine(w io.Writer, r *envoy.AppliedResource) {
	m := r.Active
	if m == nil {
		m = r.Warming
	}
	facts := envoyResourceFacts(m)
	if r.Version != "" {
		facts = append(facts, "version "+r.Version)
	}
	switch {
	case r.Active == nil && r.Warming != nil:
		facts = append(facts, "WARMING (not active yet)")
	case r.Warming != nil:
		facts = append(facts, "update WARMING")
	}
	if r.Error != nil {
		facts = append(facts, fmt.Sprintf("NACKED version %s: %s", orDash(r.Error.GetVersionInfo()), r.Error.GetDetails()))
	}
	fmt.Fprintf(w, "%-40s %s\n", r.Name, strings.Join(facts, "  "))
}

func envoyResourceFacts(m proto.Message) []string {
	switch m := m.(type) {
	case *listenerv3.Listener:
		f := []string{envoyAddress(m.GetAddress())}
		if m.GetTransparent().GetValue() {
			f = append(f, "transparent")
		}
		return append(f, envoyPlural(len(m.GetFilterChains()), "filter chain"))
	case *routev3.RouteConfiguration:
		routes := 0
		var clusters []string
		for _, vh := range m.GetVirtualHosts() {
			routes += len(vh.GetRoutes())
			for _, rt := range vh.GetRoutes() {
				if c := rt.GetRoute().GetCluster(); c != "" && !slices.Contains(clusters, c) {
					clusters = append(clusters, c)
				}
			}
		}
		f := []string{envoyPlural(len(m.GetVirtualHosts()), "virtual host"), envoyPlural(routes, "route")}
		if len(clusters) > 0 {
			slices.Sort(clusters)
			f = append(f, "→ "+strings.Join(clusters, ","))
		}
		return f
	case *clusterv3.Cluster:
		f := []string{m.GetType().String(), m.GetLbPolicy().String()}
		if t := m.GetConnectTimeout(); t != nil {
			f = append(f, "connect timeout "+t.AsDuration().String())
		}
		return f
	case nil:
		return []string{"(no accepted config)"}
	}
	return nil
}

func envoyAddress(a *corev3.Address) string {
	switch {
	case a.GetSocketAddress() != nil:
		sa := a.GetSocketAddress()
		return net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))
	case a.GetPipe() != nil:
		return "unix:" + a.GetPipe().GetPath()
	}
	return "-"
}

func envoyPlural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}
