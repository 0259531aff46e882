package envoy

import (
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// originalDstRoute returns a route configuration with one virtual host "*"
// that sends every request to cluster. Policy is enforced by the RBAC filter
// before routing; the route only picks the upstream. The route timeout is
// off: a transparent proxy must not cut long polls or streams the
// application allows.
func originalDstRoute(name, cluster string) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    "any",
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Name:  "original-dst",
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
					Timeout:          durationpb.New(0),
				}},
			}},
		}},
	}
}
