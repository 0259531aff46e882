package envoy_test

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/moatnet/moat/envoy/admintest"
)

// adminFixture is a small but realistic node config: an HTTP listener whose
// connection manager carries RBAC (a policy map, so Any bytes depend on
// map order) and the router, its route configuration and an ORIGINAL_DST
// cluster.
type adminFixture struct {
	listener *listenerv3.Listener
	route    *routev3.RouteConfiguration
	cluster  *clusterv3.Cluster
}

func adminAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func newAdminFixture(t testing.TB, paths ...string) adminFixture {
	t.Helper()
	if len(paths) == 0 {
		paths = []string{"/public", "/health"}
	}
	policies := map[string]*rbacv3.Policy{}
	for _, p := range paths {
		policies["allow "+p] = &rbacv3.Policy{
			Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_UrlPath{}}},
			Principals:  []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}},
		}
	}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix:     "moat_egress_http",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "moat/egress-http/15001/0"}},
		HttpFilters: []*hcmv3.HttpFilter{
			{Name: "envoy.filters.http.rbac", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: adminAny(t, &rbacfilterv3.RBAC{
				Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: policies},
			})}},
			{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: adminAny(t, &routerv3.Router{})}},
		},
	}
	return adminFixture{
		listener: &listenerv3.Listener{
			Name: "moat/egress-http/15001",
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 15001},
			}}},
			FilterChains: []*listenerv3.FilterChain{{
				Name: "ep-web",
				Filters: []*listenerv3.Filter{{
					Name:       "envoy.filters.network.http_connection_manager",
					ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: adminAny(t, hcm)},
				}},
			}},
		},
		route: &routev3.RouteConfiguration{
			Name: "moat/egress-http/15001/0",
			VirtualHosts: []*routev3.VirtualHost{{
				Name: "all", Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "moat/egress/0"}}},
				}},
			}},
		},
		cluster: &clusterv3.Cluster{
			Name:                 "moat/egress/0",
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
			LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
			ConnectTimeout:       durationpb.New(5e9),
		},
	}
}

func (f adminFixture) intended() map[resource.Type][]types.Resource {
	return map[resource.Type][]types.Resource{
		resource.ListenerType: {f.listener},
		resource.RouteType:    {f.route},
		resource.ClusterType:  {f.cluster},
	}
}

// dump is the config dump of an Envoy that applied f at version.
func (f adminFixture) dump(version string) *admintest.DumpBuilder {
	return admintest.NewDump().Bootstrap("node-a").
		Cluster(version, f.cluster).
		Listener(version, f.listener).
		Route(version, f.route)
}
