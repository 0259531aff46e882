package envoy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/moatnet/moat/policy"
)

// Translate turns the HTTP rule sets of plan into Envoy resources. It is
// pure and deterministic: endpoints are visited in namespace/name order and
// every list comes out sorted, whatever the order of the Plan. A direction
// without HTTP rule sets gets no listener.
//
// Translate checks what it translates (regexes, header names, port ranges,
// addresses that two endpoints claim, identities that do not fit a mark) and
// returns an error that names the endpoint and rule; (*Resources).Validate
// checks the result against Envoy's own constraints.
func Translate(plan *policy.Plan, cfg Config) (*Resources, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if plan == nil {
		return &Resources{}, nil
	}
	ips, err := newIPIndex(plan)
	if err != nil {
		return nil, fmt.Errorf("translate plan: %w", err)
	}
	tr := &translator{
		cfg:         cfg,
		ips:         ips,
		regexes:     map[string]error{},
		principals:  map[string]*rbacv3.Principal{},
		permissions: map[string]*rbacv3.Permission{},
	}
	eps := make([]*policy.EndpointPlan, 0, len(plan.Endpoints))
	for i := range plan.Endpoints {
		eps = append(eps, &plan.Endpoints[i])
	}
	slices.SortStableFunc(eps, func(a, b *policy.EndpointPlan) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	for i := 1; i < len(eps); i++ {
		if eps[i-1].Namespace == eps[i].Namespace && eps[i-1].Name == eps[i].Name {
			return nil, fmt.Errorf("translate plan: endpoint %s listed twice", filterChainName(eps[i]))
		}
	}

	res := &Resources{}
	for _, d := range []policy.Direction{policy.Egress, policy.Ingress} {
		if err := tr.addDirection(res, d, eps); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// translator holds what one Translate call shares between endpoints. RBAC
// messages it caches are shared by several filter chains and must not be
// modified.
type translator struct {
	cfg         Config
	ips         *ipIndex
	regexes     map[string]error
	principals  map[string]*rbacv3.Principal
	permissions map[string]*rbacv3.Permission
}

func (tr *translator) addDirection(res *Resources, d policy.Direction, eps []*policy.EndpointPlan) error {
	cfg := tr.cfg
	port := cfg.port(d)
	var chains []*listenerv3.FilterChain
	owner := map[netip.Addr]string{}
	var sources []policy.ID
	for _, ep := range eps {
		sets := ep.Direction(d).HTTP
		if len(sets) == 0 || len(ep.Addresses) == 0 {
			// Without an address no connection can match the endpoint.
			continue
		}
		for _, a := range ep.Addresses {
			a = a.Unmap()
			if o, ok := owner[a]; ok {
				return fmt.Errorf("translate %s %s: address %s also belongs to %s", d, filterChainName(ep), a, o)
			}
			owner[a] = filterChainName(ep)
		}
		rbac, err := tr.rbacConfig(d, ep, sets)
		if err != nil {
			return fmt.Errorf("translate %s: %w", filterChainName(ep), err)
		}
		src := policy.IDUnknown
		if d == policy.Egress {
			src = ep.Identity
			if _, err := policy.ProxyMark(d, src); err != nil {
				return fmt.Errorf("translate %s %s: %w", d, filterChainName(ep), err)
			}
			sources = append(sources, src)
		}
		fc, err := filterChain(cfg, d, ep, rbac, RouteName(d, port, src))
		if err != nil {
			return fmt.Errorf("translate %s: %w", d, err)
		}
		chains = append(chains, fc)
	}
	if len(chains) == 0 {
		return nil
	}
	l, err := httpListener(cfg, d, chains)
	if err != nil {
		return fmt.Errorf("translate %s: %w", d, err)
	}
	res.Listeners = append(res.Listeners, l)
	if d == policy.Ingress {
		sources = []policy.ID{policy.IDUnknown}
	}
	slices.Sort(sources)
	for _, src := range slices.Compact(sources) {
		c, err := originalDstCluster(cfg, d, src)
		if err != nil {
			return fmt.Errorf("translate %s: %w", d, err)
		}
		res.Clusters = append(res.Clusters, c)
		res.Routes = append(res.Routes, originalDstRoute(RouteName(d, port, src), c.Name))
	}
	return nil
}

// Resources are the xDS resources of one node.
type Resources struct {
	Listeners []*listenerv3.Listener
	Clusters  []*clusterv3.Cluster
	Routes    []*routev3.RouteConfiguration
}
