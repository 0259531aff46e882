package envoy_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/moatnet/moat/envoy"
	"github.com/moatnet/moat/envoy/admintest"
)

func newAdminServer(t *testing.T, f adminFixture) *admintest.Server {
	t.Helper()
	srv := admintest.New()
	srv.SetServerInfo(&adminv3.ServerInfo{
		Version:            "1.36.0/admintest",
		State:              adminv3.ServerInfo_LIVE,
		UptimeCurrentEpoch: durationpb.New(90e9),
		Node:               &corev3.Node{Id: "node-a"},
	})
	srv.SetDump(f.dump("v1").Build())
	srv.SetStats([]string{
		"cluster.moat/egress/0.upstream_cx_total: 4",
		"http.moat_egress_http.downstream_rq_total: 12",
		"http.moat_egress_http.rbac.denied: 3",
		"server.live: 1",
	}, "# TYPE envoy_server_live gauge\nenvoy_server_live{} 1\n")
	return srv
}

func TestAdminClient(t *testing.T) {
	f := newAdminFixture(t)
	srv := newAdminServer(t, f)
	sock := srv.ServeUnix(t)
	tcp := srv.ServeTCP(t)
	for _, tc := range []struct{ name, addr string }{
		{"unix path", sock},
		{"unix prefix", "unix:" + sock},
		{"tcp", tcp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := envoy.NewAdminClient(tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx := t.Context()

			state, err := c.Ready(ctx)
			if err != nil || state != envoy.AdminStateLive {
				t.Errorf("Ready = %q, %v; want LIVE", state, err)
			}

			info, err := c.ServerInfo(ctx)
			if err != nil {
				t.Fatalf("ServerInfo: %v", err)
			}
			if info.GetState() != adminv3.ServerInfo_LIVE || info.GetUptimeCurrentEpoch().AsDuration().Seconds() != 90 || info.GetNode().GetId() != "node-a" {
				t.Errorf("ServerInfo = %v", info)
			}

			dump, err := c.ConfigDump(ctx, "")
			if err != nil {
				t.Fatalf("ConfigDump: %v", err)
			}
			applied, err := envoy.AppliedResources(dump)
			if err != nil {
				t.Fatal(err)
			}
			l := applied[resource.ListenerType][f.listener.GetName()]
			if l == nil || l.Version != "v1" {
				t.Fatalf("listener %s not in dump: %v", f.listener.GetName(), applied)
			}
			if d := cmp.Diff(f.listener, l.Active, protocmp.Transform()); d != "" {
				t.Errorf("listener after the admin round trip (-sent +parsed):\n%s", d)
			}

			stats, err := c.Stats(ctx, `^http\..*rbac`)
			if err != nil {
				t.Fatal(err)
			}
			want := []envoy.AdminStat{{Name: "http.moat_egress_http.rbac.denied", Value: "3"}}
			if !slices.Equal(stats, want) {
				t.Errorf("Stats = %v, want %v", stats, want)
			}
			prom, err := c.PrometheusStats(ctx, "")
			if err != nil || !strings.Contains(string(prom), "envoy_server_live{} 1") {
				t.Errorf("PrometheusStats = %q, %v", prom, err)
			}
		})
	}
}

func TestAdminClientReadyStates(t *testing.T) {
	srv := admintest.New()
	c, err := envoy.NewAdminClient(srv.ServeTCP(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, state := range []string{envoy.AdminStatePreInitializing, envoy.AdminStateInitializing, envoy.AdminStateDraining, envoy.AdminStateLive} {
		t.Run(state, func(t *testing.T) {
			srv.SetState(state)
			got, err := c.Ready(t.Context())
			if err != nil || got != state {
				t.Errorf("Ready = %q, %v; want %q", got, err, state)
			}
		})
	}
}

func TestAdminClientDrain(t *testing.T) {
	srv := admintest.New()
	c, err := envoy.NewAdminClient(srv.ServeUnix(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.DrainListeners(t.Context()); err != nil {
		t.Fatal(err)
	}
	if srv.Drains() != 1 || !slices.Contains(srv.Requests(), "POST /drain_listeners?graceful=") {
		t.Errorf("drains = %d, requests %v", srv.Drains(), srv.Requests())
	}
}

func TestNewAdminClientBadAddress(t *testing.T) {
	for _, tc := range []struct{ name, addr, want string }{
		{"empty", "", "empty address"},
		{"no port", "localhost", "neither a socket path"},
		{"empty socket", "unix:", "empty socket path"},
		{"relative path", "run/admin.sock", "neither a socket path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := envoy.NewAdminClient(tc.addr)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewAdminClient(%q) = %v, want error containing %q", tc.addr, err, tc.want)
			}
		})
	}
}

func TestAdminClientErrors(t *testing.T) {
	srv := admintest.New()
	tcp := srv.ServeTCP(t)
	missing := filepath.Join(t.TempDir(), "nothing.sock")
	for _, tc := range []struct {
		name, addr string
		call       func(*envoy.AdminClient) error
		want       []string
	}{
		{
			name: "no socket", addr: missing,
			call: func(c *envoy.AdminClient) error { _, err := c.Ready(t.Context()); return err },
			want: []string{"GET /ready on envoy admin " + missing, "no such file"},
		},
		{
			name: "bad resource", addr: tcp,
			call: func(c *envoy.AdminClient) error { _, err := c.ConfigDump(t.Context(), "bogus"); return err },
			want: []string{"GET /config_dump on envoy admin " + tcp, "status 400", "bogus mask not found"},
		},
		{
			name: "bad filter", addr: tcp,
			call: func(c *envoy.AdminClient) error { _, err := c.Stats(t.Context(), "("); return err },
			want: []string{"GET /stats on envoy admin " + tcp, "status 400"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := envoy.NewAdminClient(tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			err = tc.call(c)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestAdminClientConfigDumpResource(t *testing.T) {
	f := newAdminFixture(t)
	srv := newAdminServer(t, f)
	c, err := envoy.NewAdminClient(srv.ServeUnix(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		resource string
		typeURL  string
		name     string
	}{
		{"dynamic_listeners", resource.ListenerType, f.listener.GetName()},
		{"dynamic_active_clusters", resource.ClusterType, f.cluster.GetName()},
		{"dynamic_route_configs", resource.RouteType, f.route.GetName()},
	} {
		t.Run(tc.resource, func(t *testing.T) {
			dump, err := c.ConfigDump(t.Context(), tc.resource)
			if err != nil {
				t.Fatal(err)
			}
			applied, err := envoy.AppliedResources(dump)
			if err != nil {
				t.Fatal(err)
			}
			if len(applied) != 1 || applied[tc.typeURL][tc.name] == nil || applied[tc.typeURL][tc.name].Active == nil {
				t.Errorf("applied = %v, want only %s %s", applied, tc.typeURL, tc.name)
			}
		})
	}
	if !slices.Contains(srv.Requests(), "GET /config_dump?resource=dynamic_listeners") {
		t.Errorf("requests = %v", srv.Requests())
	}
}

func TestParseConfigDumpTolerance(t *testing.T) {
	// A dump from an Envoy newer than moat: a field moat does not know and
	// an extension moat never links in.
	const dump = `{
  "configs": [{
    "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
    "version_info": "v3",
    "a_field_from_the_future": true,
    "dynamic_listeners": [{
      "name": "l1",
      "active_state": {
        "version_info": "v3",
        "listener": {
          "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
          "name": "l1",
          "listener_filters": [{
            "name": "x",
            "typed_config": {"@type": "type.googleapis.com/vendor.Filter", "knob": 7}
          }]
        }
      }
    }]
  }]
}`
	d, unknown, err := envoy.ParseConfigDump([]byte(dump))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(unknown, []string{"type.googleapis.com/vendor.Filter"}) {
		t.Errorf("unknown = %v", unknown)
	}
	applied, err := envoy.AppliedResources(d)
	if err != nil {
		t.Fatal(err)
	}
	if l := applied[resource.ListenerType]["l1"]; l == nil || l.Version != "v3" || l.Active == nil {
		t.Errorf("listener l1 = %+v", l)
	}
	if _, _, err := envoy.ParseConfigDump([]byte(`{"configs": [`)); err == nil {
		t.Error("truncated dump parsed")
	}
}
