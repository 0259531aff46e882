package l7proxy_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/moatnet/moat/envoy"
	"github.com/moatnet/moat/xds"
)

func TestNACK(t *testing.T) {
	tests := []struct {
		name       string
		mutate     func(*clusterv3.Cluster)
		wantDetail string
	}{
		{"cluster type", func(c *clusterv3.Cluster) {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
		}, "type: unsupported STATIC (only ORIGINAL_DST)"},
		{"unsupported field", func(c *clusterv3.Cluster) { c.AltStatName = "x" }, "unsupported field alt_stat_name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			res, err := envoy.Translate(starwarsPlan(e.upstream.Port()), e.ecfg)
			if err != nil {
				t.Fatal(err)
			}
			byType := res.ByType()
			c := byType[resource.ClusterType][0].(*clusterv3.Cluster)
			tt.mutate(c)
			byType[resource.ClusterType] = []types.Resource{c}
			e.version++
			v := "v2-bad"
			if err := e.xds.SetResources(t.Context(), node, v, byType); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
			defer cancel()
			err = e.xds.WaitForACK(ctx, node, v, resource.ClusterType)
			var nack *xds.NACKError
			if !errors.As(err, &nack) {
				t.Fatalf("WaitForACK = %v, want a NACK", err)
			}
			if !strings.Contains(nack.Detail, tt.wantDetail) || !strings.Contains(nack.Detail, c.Name) {
				t.Errorf("NACK detail %q, want it to name %q and contain %q", nack.Detail, c.Name, tt.wantDetail)
			}
			// The old configuration still serves.
			resp, err := e.client(tiefighterIP).Post("http://deathstar/v1/request-landing", "text/plain", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("status after NACK %d, want 200", resp.StatusCode)
			}
			// The config dump shows the rejected update.
			dump := e.configDump(t)
			applied, err := envoy.AppliedResources(dump)
			if err != nil {
				t.Fatal(err)
			}
			r := applied[resource.ClusterType][c.Name]
			if r == nil || r.Error == nil || !strings.Contains(r.Error.GetDetails(), tt.wantDetail) || r.Active == nil {
				t.Errorf("config dump of %s: %+v, want active config and error state", c.Name, r)
			}
		})
	}
}

func (e *env) configDump(t *testing.T) *adminv3.ConfigDump {
	t.Helper()
	resp, err := http.Get("http://" + e.proxy.AdminAddr().String() + "/config_dump")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("config_dump: %d %s", resp.StatusCode, body)
	}
	dump, unknown, err := envoy.ParseConfigDump(body)
	if err != nil {
		t.Fatal(err)
	}
	if len(unknown) > 0 {
		t.Errorf("config dump has unknown types %v", unknown)
	}
	return dump
}

func TestConfigDumpInSync(t *testing.T) {
	e := newEnv(t)
	res, err := envoy.Translate(starwarsPlan(e.upstream.Port()), e.ecfg)
	if err != nil {
		t.Fatal(err)
	}
	diff, err := envoy.Diff(res.ByType(), e.configDump(t))
	if err != nil {
		t.Fatal(err)
	}
	if diff != "" {
		t.Errorf("config dump differs from the intended resources:\n%s", diff)
	}
}

func TestAdminReadyAndStats(t *testing.T) {
	e := newEnv(t)
	ac, err := envoy.NewAdminClient(e.proxy.AdminAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	state, err := ac.Ready(t.Context())
	if err != nil || state != envoy.AdminStateLive {
		t.Fatalf("Ready = %q, %v; want LIVE", state, err)
	}
	info, err := ac.ServerInfo(t.Context())
	if err != nil {
		t.Fatalf("ServerInfo: %v", err)
	}
	if info.GetState() != adminv3.ServerInfo_LIVE || info.GetNode().GetId() == "" {
		t.Fatalf("server_info state %v node %q; want LIVE and the node id", info.GetState(), info.GetNode().GetId())
	}
	resp, err := e.client(tiefighterIP).Post("http://deathstar/v1/request-landing", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// The exchange is counted when the handler returns, which may be just
	// after the client has the response: poll.
	wants := []string{
		`envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix="moat_ingress_http",envoy_response_code_class="2"} 1`,
		`envoy_http_rbac_allowed{envoy_http_conn_manager_prefix="moat_ingress_http"} 1`,
	}
	deadline := time.Now().Add(waitTimeout)
	for {
		stats, err := ac.PrometheusStats(t.Context(), "")
		if err != nil {
			t.Fatal(err)
		}
		var missing []string
		for _, want := range wants {
			if !strings.Contains(string(stats), want) {
				missing = append(missing, want)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats lack %q:\n%s", missing, stats)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPlanChangeAppliesToNewConnections(t *testing.T) {
	e := newEnv(t)
	plan := starwarsPlan(e.upstream.Port())
	plan.Endpoints[0].Ingress.HTTP[0].Rules[0].Rule.Path = "/v1/exhaust-port"
	plan.Endpoints[0].Ingress.HTTP[0].Rules[0].Rule.Method = "PUT"
	e.setPlan(plan)
	e.waitACK()
	for _, tt := range []struct {
		method, path string
		want         int
	}{{"PUT", "/v1/exhaust-port", 200}, {"POST", "/v1/request-landing", 403}} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), tt.method, "http://deathstar"+tt.path, nil)
			resp, err := e.client(tiefighterIP).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
}
