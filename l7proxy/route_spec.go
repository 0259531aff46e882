package l7proxy

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// routeSpec is a validated route configuration.
type routeSpec struct {
	name   string
	vhosts []vhostSpec
}

type vhostSpec struct {
	name    string
	domains []string // lower case; "*" matches any
	routes  []routeEntry
}

type routeEntry struct {
	name    string
	prefix  string
	path    string // exact path when set
	cluster string
	timeout time.Duration // 0: none
	direct  *directResponse
}

type directResponse struct {
	status int
	body   string
}

func compileRoute(rc *routev3.RouteConfiguration) (*routeSpec, error) {
	where := fmt.Sprintf("route configuration %q", rc.GetName())
	if rc.GetName() == "" {
		return nil, fmt.Errorf("route configuration: empty name")
	}
	if err := onlyFields(rc, where, "name", "virtual_hosts"); err != nil {
		return nil, err
	}
	rs := &routeSpec{name: rc.GetName()}
	for i, vh := range rc.GetVirtualHosts() {
		w := fmt.Sprintf("%s.virtual_hosts[%d]", where, i)
		if err := onlyFields(vh, w, "name", "domains", "routes"); err != nil {
			return nil, err
		}
		v := vhostSpec{name: vh.GetName()}
		for _, d := range vh.GetDomains() {
			if d != "*" && strings.Contains(d, "*") {
				return nil, fmt.Errorf("%s.domains: wildcard %q unsupported (only \"*\")", w, d)
			}
			v.domains = append(v.domains, strings.ToLower(d))
		}
		if len(v.domains) == 0 {
			return nil, fmt.Errorf("%s.domains: empty", w)
		}
		for j, r := range vh.GetRoutes() {
			e, err := compileRouteEntry(r, fmt.Sprintf("%s.routes[%d]", w, j))
			if err != nil {
				return nil, err
			}
			v.routes = append(v.routes, e)
		}
		rs.vhosts = append(rs.vhosts, v)
	}
	return rs, nil
}

func compileRouteEntry(r *routev3.Route, where string) (routeEntry, error) {
	if err := onlyFields(r, where, "name", "match", "route", "direct_response"); err != nil {
		return routeEntry{}, err
	}
	e := routeEntry{name: r.GetName()}
	m := r.GetMatch()
	if err := onlyFields(m, where+".match", "prefix", "path"); err != nil {
		return routeEntry{}, err
	}
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		e.prefix = ps.Prefix
	case *routev3.RouteMatch_Path:
		e.path = ps.Path
	default:
		return routeEntry{}, fmt.Errorf("%s.match: prefix or path required", where)
	}
	switch a := r.GetAction().(type) {
	case *routev3.Route_Route:
		if err := onlyFields(a.Route, where+".route", "cluster", "timeout"); err != nil {
			return routeEntry{}, err
		}
		if a.Route.GetCluster() == "" {
			return routeEntry{}, fmt.Errorf("%s.route.cluster: empty", where)
		}
		e.cluster = a.Route.GetCluster()
		if t := a.Route.GetTimeout(); t != nil {
			if err := t.CheckValid(); err != nil || t.AsDuration() < 0 {
				return routeEntry{}, fmt.Errorf("%s.route.timeout: invalid", where)
			}
			e.timeout = t.AsDuration()
		} else {
			e.timeout = 15 * time.Second // Envoy's default route timeout
		}
	case *routev3.Route_DirectResponse:
		d := a.DirectResponse
		if err := onlyFields(d, where+".direct_response", "status", "body"); err != nil {
			return routeEntry{}, err
		}
		if d.GetStatus() < 200 || d.GetStatus() > 599 {
			return routeEntry{}, fmt.Errorf("%s.direct_response.status: %d out of range", where, d.GetStatus())
		}
		e.direct = &directResponse{status: int(d.GetStatus())}
		if b := d.GetBody(); b != nil {
			if err := onlyFields(b, where+".direct_response.body", "inline_string"); err != nil {
				return routeEntry{}, err
			}
			e.direct.body = b.GetInlineString()
		}
	default:
		return routeEntry{}, fmt.Errorf("%s: route or direct_response required", where)
	}
	return e, nil
}

// match finds the route of a request: the virtual host by authority (exact
// domain, then "*"), then the first route whose path matches.
func (rs *routeSpec) match(authority, path string) *routeEntry {
	host := strings.ToLower(authority)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	var vh *vhostSpec
	for i := range rs.vhosts {
		if slices.Contains(rs.vhosts[i].domains, host) || slices.Contains(rs.vhosts[i].domains, strings.ToLower(authority)) {
			vh = &rs.vhosts[i]
			break
		}
	}
	if vh == nil {
		for i := range rs.vhosts {
			if slices.Contains(rs.vhosts[i].domains, "*") {
				vh = &rs.vhosts[i]
				break
			}
		}
	}
	if vh == nil {
		return nil
	}
	for i := range vh.routes {
		r := &vh.routes[i]
		switch {
		case r.path != "" && path == r.path:
			return r
		case r.path == "" && strings.HasPrefix(path, r.prefix):
			return r
		}
	}
	return nil
}
