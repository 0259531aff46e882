package envoy

import (
	"net/netip"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"
	"sigs.k8s.io/yaml"
)

func TestBootstrapGolden(t *testing.T) {
	tests := []struct {
		name string
		cfg  BootstrapConfig
	}{
		{"bootstrap-default", BootstrapConfig{
			NodeName: "node-1", XDSSocket: "/run/moat/xds.sock", AccessLogSocket: "/run/moat/access-log.sock",
		}},
		{"bootstrap-admin-socket", BootstrapConfig{
			NodeName: "node-1", XDSSocket: "/run/moat/xds.sock", AccessLogSocket: "/run/moat/als.sock",
			AdminSocket: "/run/moat/envoy-admin.sock", StatsAddress: netip.MustParseAddrPort("127.0.0.1:0"),
			AccessLogCluster: "als",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Bootstrap(tc.cfg)
			if err != nil {
				t.Fatalf("Bootstrap: %v", err)
			}
			y, err := BootstrapYAML(b)
			if err != nil {
				t.Fatalf("BootstrapYAML: %v", err)
			}
			checkGoldenFile(t, tc.name, "bootstrap.yaml", y, func(want []byte) string {
				return cmp.Diff(parseBootstrapYAML(t, want), b, protocmp.Transform())
			})
			// JSON renders the same proto, and renders it stably.
			j1, err := BootstrapJSON(b)
			if err != nil {
				t.Fatalf("BootstrapJSON: %v", err)
			}
			j2, _ := BootstrapJSON(b)
			if string(j1) != string(j2) {
				t.Fatal("BootstrapJSON is not stable")
			}
			back := &bootstrapv3.Bootstrap{}
			if err := protojson.Unmarshal(j1, back); err != nil {
				t.Fatalf("parse BootstrapJSON output: %v", err)
			}
			if diff := cmp.Diff(b, back, protocmp.Transform()); diff != "" {
				t.Fatalf("JSON round trip differs:\n%s", diff)
			}
		})
	}
}

func parseBootstrapYAML(t *testing.T, y []byte) *bootstrapv3.Bootstrap {
	t.Helper()
	j, err := yaml.YAMLToJSON(y)
	if err != nil {
		t.Fatalf("parse golden yaml: %v", err)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(j, b); err != nil {
		t.Fatalf("parse golden bootstrap: %v", err)
	}
	return b
}

func TestBootstrapContents(t *testing.T) {
	b, err := Bootstrap(BootstrapConfig{NodeName: "n", XDSSocket: "/x.sock", AccessLogSocket: "/a.sock"})
	if err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	if b.GetNode().GetId() != "n" {
		t.Errorf("node id %q", b.GetNode().GetId())
	}
	clusters := map[string]string{}
	for _, c := range b.GetStaticResources().GetClusters() {
		ep := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress()
		clusters[c.GetName()] = ep.GetPipe().GetPath() + ep.GetSocketAddress().GetAddress()
	}
	want := map[string]string{XDSClusterName: "/x.sock", DefaultAccessLogCluster: "/a.sock", AdminClusterName: "127.0.0.1"}
	if diff := cmp.Diff(want, clusters); diff != "" {
		t.Errorf("static clusters (-want +got):\n%s", diff)
	}
	if got := b.GetDynamicResources().GetAdsConfig().GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName(); got != XDSClusterName {
		t.Errorf("ADS cluster %q", got)
	}
	// Translate's default access-log cluster is the one the bootstrap defines.
	if (Config{}).WithDefaults().AccessLogCluster != DefaultAccessLogCluster {
		t.Error("Config and BootstrapConfig disagree on the access-log cluster")
	}
}

func TestBootstrapConfigErrors(t *testing.T) {
	ok := BootstrapConfig{NodeName: "n", XDSSocket: "/x", AccessLogSocket: "/a"}
	tests := []struct {
		name string
		mod  func(*BootstrapConfig)
		want string
	}{
		{"no node", func(c *BootstrapConfig) { c.NodeName = "" }, "node name is required"},
		{"no xds", func(c *BootstrapConfig) { c.XDSSocket = "" }, "xDS socket path is required"},
		{"no als", func(c *BootstrapConfig) { c.AccessLogSocket = "" }, "access-log socket path is required"},
		{"admin twice", func(c *BootstrapConfig) {
			c.AdminSocket = "/adm"
			c.AdminAddress = DefaultAdminAddress
		}, "both set"},
		{"admin on stats port", func(c *BootstrapConfig) { c.StatsAddress = DefaultAdminAddress }, "share"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mod(&c)
			if _, err := Bootstrap(c); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Bootstrap error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
