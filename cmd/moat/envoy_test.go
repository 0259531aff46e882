package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"sigs.k8s.io/yaml"

	"github.com/moatnet/moat/envoy"
	"github.com/moatnet/moat/envoy/admintest"
)

// runEnvoyCLI runs `moat envoy args…` and returns stdout, stderr (with the
// error main would print) and the exit code main would use.
func runEnvoyCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	root := &cobra.Command{Use: "moat", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(newEnvoyCommand())
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(append([]string{"envoy"}, args...))
	if err := root.ExecuteContext(t.Context()); err != nil {
		return out.String(), errb.String() + "Error: " + err.Error(), exitCode(err)
	}
	return out.String(), errb.String(), 0
}

// envoyNode is one node's resources, built by hand so that these tests do
// not depend on translation.
type envoyNode struct {
	listener *listenerv3.Listener
	route    *routev3.RouteConfiguration
	cluster  *clusterv3.Cluster
}

func newEnvoyNode(t *testing.T, statPrefix string) envoyNode {
	t.Helper()
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		t.Fatal(err)
	}
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{
		StatPrefix:     statPrefix,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "moat/egress-http/15001/0"}},
		HttpFilters:    []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return envoyNode{
		listener: &listenerv3.Listener{
			Name: "moat/egress-http/15001",
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 15001},
			}}},
			Transparent: wrapperspb.Bool(true),
			FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
				Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm},
			}}}},
		},
		route: &routev3.RouteConfiguration{
			Name: "moat/egress-http/15001/0",
			VirtualHosts: []*routev3.VirtualHost{{Name: "all", Domains: []string{"*"}, Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "moat/egress/0"}}},
			}}}},
		},
		cluster: &clusterv3.Cluster{
			Name:                 "moat/egress/0",
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
			LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
			ConnectTimeout:       durationpb.New(5e9),
		},
	}
}

func (n envoyNode) resources() map[resource.Type][]types.Resource {
	return map[resource.Type][]types.Resource{
		resource.ListenerType: {n.listener},
		resource.RouteType:    {n.route},
		resource.ClusterType:  {n.cluster},
	}
}

func (n envoyNode) dump(version string) *admintest.DumpBuilder {
	return admintest.NewDump().Bootstrap("node-a").Cluster(version, n.cluster).Listener(version, n.listener).Route(version, n.route)
}

// envoyFixture is a fake proxy admin interface and a fake moat-agent API.
type envoyFixture struct {
	admin     *admintest.Server
	adminSock string
	adminTCP  string
	agentSock string

	mu       sync.Mutex
	intended map[string]*envoy.IntendedResources // by node
	queries  []string
}

func newEnvoyFixture(t *testing.T) (*envoyFixture, envoyNode) {
	t.Helper()
	node := newEnvoyNode(t, "moat_egress_http")
	f := &envoyFixture{admin: admintest.New(), intended: map[string]*envoy.IntendedResources{
		"node-a": {Node: "node-a", Version: "v1", Resources: node.resources()},
	}}
	f.admin.SetServerInfo(&adminv3.ServerInfo{
		Version: "1.36.0/admintest", State: adminv3.ServerInfo_LIVE,
		UptimeCurrentEpoch: durationpb.New(90e9), Node: &corev3.Node{Id: "node-a"},
	})
	f.admin.SetDump(node.dump("v1").Build())
	f.admin.SetStats([]string{
		"http.moat_egress_http.downstream_rq_total: 12",
		"http.moat_egress_http.rbac.denied: 3",
		"server.live: 1",
	}, "# TYPE envoy_server_live gauge\nenvoy_server_live{} 1\n")
	f.adminSock = f.admin.ServeUnix(t)
	f.adminTCP = f.admin.ServeTCP(t)

	f.agentSock = filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", f.agentSock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != envoy.IntendedResourcesPath {
			http.NotFound(w, r)
			return
		}
		node := r.URL.Query().Get("node")
		f.mu.Lock()
		f.queries = append(f.queries, node)
		in := f.intended[node]
		f.mu.Unlock()
		if in == nil {
			http.Error(w, "unknown node "+node, http.StatusNotFound)
			return
		}
		data, err := envoy.MarshalIntended(in)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Write(data)
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return f, node
}

func (f *envoyFixture) args(extra ...string) []string {
	return append([]string{"--admin", f.adminSock, "--agent", f.agentSock}, extra...)
}

func envoyWantContains(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, got)
		}
	}
}

func TestEnvoyStatus(t *testing.T) {
	fx, node := newEnvoyFixture(t)
	nacked := newEnvoyNode(t, "moat_egress_http_v2")
	for _, tc := range []struct {
		name     string
		setup    func()
		args     []string
		code     int
		stdout   []string
		stderr   []string
		wantNode string
	}{
		{
			name: "synced over unix socket", code: 0, wantNode: "node-a",
			stdout: []string{"Proxy:     " + fx.adminSock, "State:     LIVE", "Uptime:    1m30s", "Node:      node-a",
				"Intended:  version v1", "listeners  SYNCED (1, version v1)", "routes     SYNCED", "clusters   SYNCED"},
		},
		{
			name: "synced over tcp", args: []string{"--admin", fx.adminTCP}, code: 0, wantNode: "node-a",
			stdout: []string{"Proxy:     " + fx.adminTCP, "listeners  SYNCED"},
		},
		{
			name: "listener rejected",
			setup: func() {
				fx.mu.Lock()
				fx.intended["node-a"] = &envoy.IntendedResources{Version: "v2", Resources: nacked.resources()}
				fx.mu.Unlock()
				fx.admin.SetDump(node.dump("v1").ListenerError("v2", "Error adding/updating listener(s) moat/egress-http/15001: bad stat prefix", nacked.listener).Build())
			},
			code: 2, wantNode: "node-a",
			stdout: []string{"Intended:  version v2", `listeners  NACKED: rejected moat/egress-http/15001 at version "v2": Error adding/updating listener(s) moat/egress-http/15001: bad stat prefix; different moat/egress-http/15001`, "clusters   SYNCED"},
			stderr: []string{"not ready and in sync: listeners NACKED"},
		},
		{
			name:  "draining",
			setup: func() { fx.admin.SetState(envoy.AdminStateDraining) },
			code:  2, wantNode: "node-a",
			stdout: []string{"State:     DRAINING"},
			stderr: []string{"not ready (DRAINING)"},
		},
		{
			name: "agent unreachable", args: []string{"--agent", filepath.Join(t.TempDir(), "none.sock")}, code: 2,
			stdout: []string{"Sync:      unknown: reach moat-agent at"},
			stderr: []string{"sync state unknown"},
		},
		{
			name: "node override", args: []string{"--node", "node-b"}, code: 2, wantNode: "node-b",
			stdout: []string{"Node:      node-b", "unknown node node-b"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fx.admin.SetState(envoy.AdminStateLive)
			fx.admin.SetDump(node.dump("v1").Build())
			fx.mu.Lock()
			fx.intended["node-a"] = &envoy.IntendedResources{Version: "v1", Resources: node.resources()}
			fx.queries = nil
			fx.mu.Unlock()
			if tc.setup != nil {
				tc.setup()
			}
			stdout, stderr, code := runEnvoyCLI(t, append(fx.args("status"), tc.args...)...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr: %s", code, tc.code, stderr)
			}
			envoyWantContains(t, "stdout", stdout, tc.stdout...)
			envoyWantContains(t, "stderr", stderr, tc.stderr...)
			fx.mu.Lock()
			defer fx.mu.Unlock()
			if tc.wantNode != "" && (len(fx.queries) != 1 || fx.queries[0] != tc.wantNode) {
				t.Errorf("agent asked for nodes %v, want [%s]", fx.queries, tc.wantNode)
			}
		})
	}
}

func TestEnvoyStatusStructured(t *testing.T) {
	fx, _ := newEnvoyFixture(t)
	for _, format := range []string{"json", "yaml"} {
		t.Run(format, func(t *testing.T) {
			stdout, stderr, code := runEnvoyCLI(t, fx.args("status", "-o", format)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			data := []byte(stdout)
			if format == "yaml" {
				var err error
				if data, err = yaml.YAMLToJSON(data); err != nil {
					t.Fatal(err)
				}
			}
			var st struct {
				State, Node, IntendedVersion string
				Sync                         []struct{ Type, State string }
			}
			if err := json.Unmarshal(data, &st); err != nil {
				t.Fatalf("%v:\n%s", err, stdout)
			}
			if st.State != "LIVE" || st.Node != "node-a" || st.IntendedVersion != "v1" || len(st.Sync) != 3 ||
				st.Sync[0].Type != resource.ListenerType || st.Sync[0].State != "SYNCED" {
				t.Errorf("status = %+v", st)
			}
		})
	}
}

func TestEnvoyResourceCommands(t *testing.T) {
	fx, node := newEnvoyFixture(t)
	fx.admin.SetDump(node.dump("v1").WarmingListener("v2", &listenerv3.Listener{Name: "moat/ingress-http/15002"}).Build())
	for _, tc := range []struct {
		kind  string
		lines []string
	}{
		{"listeners", []string{
			"moat/egress-http/15001                   0.0.0.0:15001  transparent  1 filter chain  version v1",
			"moat/ingress-http/15002                  -  0 filter chains  version v2  WARMING (not active yet)",
		}},
		{"routes", []string{"moat/egress-http/15001/0                 1 virtual host  1 route  → moat/egress/0  version v1"}},
		{"clusters", []string{"moat/egress/0                            ORIGINAL_DST  CLUSTER_PROVIDED  connect timeout 5s  version v1"}},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			stdout, stderr, code := runEnvoyCLI(t, fx.args(tc.kind)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if got := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n"); strings.Join(got, "\n") != strings.Join(tc.lines, "\n") {
				t.Errorf("got\n%s\nwant\n%s", stdout, strings.Join(tc.lines, "\n"))
			}
		})
	}
	t.Run("json", func(t *testing.T) {
		stdout, stderr, code := runEnvoyCLI(t, fx.args("clusters", "-o", "json")...)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		var got []struct {
			Name, Version string
			Config        map[string]any
		}
		if err := json.Unmarshal([]byte(stdout), &got); err != nil {
			t.Fatalf("%v:\n%s", err, stdout)
		}
		if len(got) != 1 || got[0].Name != "moat/egress/0" || got[0].Config["type"] != "ORIGINAL_DST" || got[0].Config["connectTimeout"] != "5s" {
			t.Errorf("clusters -o json = %+v", got)
		}
	})
	t.Run("yaml", func(t *testing.T) {
		stdout, _, code := runEnvoyCLI(t, fx.args("listeners", "-o", "yaml")...)
		if code != 0 {
			t.Fatal(code)
		}
		envoyWantContains(t, "yaml", stdout, "- config:", "name: moat/egress-http/15001", "'@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager", "statPrefix: moat_egress_http", "warming:")
	})
}

func TestEnvoyConfigDump(t *testing.T) {
	fx, _ := newEnvoyFixture(t)
	for _, tc := range []struct {
		name  string
		args  []string
		types []string
	}{
		{"all", nil, []string{"BootstrapConfigDump", "ClustersConfigDump", "ListenersConfigDump", "RoutesConfigDump"}},
		{"listeners", []string{"--type", "listeners"}, []string{"ListenersConfigDump"}},
		{"bootstrap yaml", []string{"--type", "bootstrap", "-o", "yaml"}, []string{"BootstrapConfigDump"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runEnvoyCLI(t, fx.args(append([]string{"config-dump"}, tc.args...)...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			data := []byte(stdout)
			if strings.Contains(strings.Join(tc.args, " "), "yaml") {
				var err error
				if data, err = yaml.YAMLToJSON(data); err != nil {
					t.Fatal(err)
				}
			}
			var d struct {
				Configs []map[string]any
			}
			if err := json.Unmarshal(data, &d); err != nil {
				t.Fatalf("%v:\n%s", err, stdout)
			}
			var got []string
			for _, c := range d.Configs {
				typ, _ := c["@type"].(string)
				got = append(got, typ[strings.LastIndex(typ, ".")+1:])
			}
			if strings.Join(got, ",") != strings.Join(tc.types, ",") {
				t.Errorf("sections %v, want %v", got, tc.types)
			}
		})
	}
}

func TestEnvoyStats(t *testing.T) {
	fx, _ := newEnvoyFixture(t)
	// A proxy that serves only /stats/prometheus, as l7proxy does.
	promOnly := filepath.Join(t.TempDir(), "prom.sock")
	ln, err := net.Listen("unix", promOnly)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stats" {
			http.NotFound(w, r)
			return
		}
		fx.admin.ServeHTTP(w, r)
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"all", nil, "http.moat_egress_http.downstream_rq_total: 12\nhttp.moat_egress_http.rbac.denied: 3\nserver.live: 1\n"},
		{"filter", []string{"--filter", `rbac\.denied$`}, "http.moat_egress_http.rbac.denied: 3\n"},
		{"filter json", []string{"--filter", `^server`, "-o", "json"}, "[\n  {\n    \"name\": \"server.live\",\n    \"value\": \"1\"\n  }\n]\n"},
		{"no match json", []string{"--filter", `^nothing`, "-o", "json"}, "[]\n"},
		{"prometheus", []string{"--prometheus"}, "# TYPE envoy_server_live gauge\nenvoy_server_live{} 1\n"},
		{"prometheus only proxy", []string{"--admin", promOnly}, "# TYPE envoy_server_live gauge\nenvoy_server_live{} 1\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runEnvoyCLI(t, fx.args(append([]string{"stats"}, tc.args...)...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if stdout != tc.want {
				t.Errorf("got %q, want %q", stdout, tc.want)
			}
		})
	}
}

func TestEnvoyDiff(t *testing.T) {
	fx, node := newEnvoyFixture(t)
	t.Run("in sync", func(t *testing.T) {
		stdout, stderr, code := runEnvoyCLI(t, fx.args("diff")...)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		envoyWantContains(t, "stdout", stdout, "runs what moat-agent intends for node node-a (version v1)")
	})
	t.Run("differs", func(t *testing.T) {
		old := newEnvoyNode(t, "moat_old_prefix")
		fx.admin.SetDump(admintest.NewDump().Bootstrap("node-a").Cluster("v0", node.cluster).Listener("v0", old.listener).Build())
		stdout, stderr, code := runEnvoyCLI(t, fx.args("diff")...)
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		envoyWantContains(t, "stdout", stdout,
			"Node node-a, intended version v1:",
			`listener "moat/egress-http/15001": differs (-intended +applied, version "v0"):`,
			`route "moat/egress-http/15001/0": missing from Envoy`)
		envoyWantContains(t, "stderr", stderr, "differs from what moat-agent intends")
		for mark, text := range map[string]string{"-": `"statPrefix": "moat_egress_http"`, "+": `"statPrefix": "moat_old_prefix"`} {
			found := false
			for line := range strings.Lines(stdout) {
				if strings.Contains(line, text) {
					found = strings.HasPrefix(strings.TrimSpace(line), mark)
				}
			}
			if !found {
				t.Errorf("no %q line with %s in:\n%s", mark, text, stdout)
			}
		}
	})
}

func TestEnvoyBootstrap(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"admin socket json", []string{"--node", "n1", "--admin", "/run/test/admin.sock", "-o", "json", "--xds-socket", "/x/xds.sock"},
			[]string{`"id": "n1"`, `"path": "/run/test/admin.sock"`, `"path": "/x/xds.sock"`, `"path": "/run/moat/accesslog.sock"`}},
		{"admin address yaml", []string{"--node", "n2", "--admin", "127.0.0.1:9911", "--stats-address", "127.0.0.1:9912"},
			[]string{"id: n2", "portValue: 9911", "portValue: 9912"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runEnvoyCLI(t, append([]string{"bootstrap"}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			envoyWantContains(t, "bootstrap", stdout, tc.want...)
		})
	}
}

func TestEnvoyBadFlags(t *testing.T) {
	fx, _ := newEnvoyFixture(t)
	missing := filepath.Join(t.TempDir(), "missing.sock")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"admin neither path nor address", []string{"status", "--admin", "localhost"}, `invalid --admin: create envoy admin client: "localhost" is neither a socket path`},
		{"admin not listening", []string{"listeners", "--admin", missing}, "GET /config_dump on envoy admin " + missing},
		{"output", []string{"listeners", "-o", "xml"}, `invalid --output "xml": want text, json or yaml`},
		{"dump output", []string{"config-dump", "-o", "text"}, `invalid --output "text": want json or yaml`},
		{"dump type", []string{"config-dump", "--type", "secrets"}, `invalid --type "secrets": want all, bootstrap, listeners, clusters, routes or endpoints`},
		{"stats filter", []string{"stats", "--filter", "("}, `invalid --filter "(": error parsing regexp`},
		{"stats prometheus json", []string{"stats", "--prometheus", "-o", "json"}, "--prometheus prints the Prometheus text format"},
		{"timeout", []string{"status", "--timeout", "0s"}, "invalid --timeout 0s: must be positive"},
		{"bootstrap admin", []string{"bootstrap", "--node", "n", "--admin", "localhost:99"}, `invalid --admin "localhost:99": want a socket path or IP:port`},
		{"bootstrap stats", []string{"bootstrap", "--node", "n", "--stats-address", "x"}, `invalid --stats-address "x"`},
		{"unknown flag", []string{"status", "--bogus"}, "unknown flag: --bogus"},
		{"extra argument", []string{"listeners", "extra"}, `unknown command "extra"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--admin", fx.adminSock, "--agent", fx.agentSock}, tc.args...)
			stdout, stderr, code := runEnvoyCLI(t, args...)
			if code != 1 {
				t.Errorf("exit %d, want 1; stdout %q", code, stdout)
			}
			envoyWantContains(t, "stderr", stderr, tc.want)
		})
	}
}
