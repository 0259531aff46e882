package envoy

import (
	"fmt"

	"github.com/moatnet/moat/policy"
)

// Resource names are meant to be read in a config dump:
//
//	listener       moat/egress-http/15001, moat/ingress-http/15002
//	route config   moat/egress-http/15001/id-<source identity>, moat/ingress-http/15002
//	cluster        moat/egress/original-dst/id-<source identity>, moat/ingress/original-dst
//	filter chain   <namespace>/<endpoint name>

// ListenerName names the HTTP listener of direction d on port.
func ListenerName(d policy.Direction, port uint16) string {
	return fmt.Sprintf("moat/%s-http/%d", d, port)
}

// RouteName names the route configuration used by the HTTP listener of
// direction d on port for traffic from source identity src (egress only;
// ingress has one route configuration per listener).
func RouteName(d policy.Direction, port uint16, src policy.ID) string {
	if d == policy.Egress {
		return fmt.Sprintf("%s/id-%d", ListenerName(d, port), uint32(src))
	}
	return ListenerName(d, port)
}

// ClusterName names the ORIGINAL_DST cluster of direction d whose upstream
// sockets carry the mark of source identity src (egress only; ingress has
// one cluster).
func ClusterName(d policy.Direction, src policy.ID) string {
	if d == policy.Egress {
		return fmt.Sprintf("moat/egress/original-dst/id-%d", uint32(src))
	}
	return "moat/ingress/original-dst"
}

func filterChainName(ep *policy.EndpointPlan) string {
	return ep.Namespace + "/" + ep.Name
}

func statPrefix(d policy.Direction) string {
	return fmt.Sprintf("moat_%s_http", d)
}
