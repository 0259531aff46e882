package l7proxy

import (
	"errors"
	"fmt"
	"maps"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// decoded is one resource of a response, validated into a spec.
type decoded[S any] struct {
	name string
	raw  *anypb.Any
	spec S
}

// decodeAll unpacks and validates every resource of resp. A response with
// any invalid resource is rejected whole (the previous configuration stays)
// and each failure is recorded for the config dump.
func decodeAll[M proto.Message, S any](p *Proxy, ts *typeState, resp *discoveryv3.DiscoveryResponse, newMsg func() M, name func(M) string, compile func(M) (S, error)) ([]decoded[S], error) {
	var (
		out  []decoded[S]
		errs []error
		seen = map[string]bool{}
	)
	now := p.cfg.Clock()
	fail := func(n string, raw *anypb.Any, err error) {
		errs = append(errs, err)
		ts.errors[n] = &adminv3.UpdateFailureState{
			FailedConfiguration: raw,
			LastUpdateAttempt:   timestamppb.New(now),
			Details:             err.Error(),
			VersionInfo:         resp.GetVersionInfo(),
		}
	}
	for i, raw := range resp.GetResources() {
		m := newMsg()
		if raw.GetTypeUrl() != resp.GetTypeUrl() {
			fail(fmt.Sprintf("#%d", i), raw, fmt.Errorf("resource %d: type %s in a %s response", i, raw.GetTypeUrl(), resp.GetTypeUrl()))
			continue
		}
		if err := raw.UnmarshalTo(m); err != nil {
			fail(fmt.Sprintf("#%d", i), raw, fmt.Errorf("resource %d: decode: %w", i, err))
			continue
		}
		n := name(m)
		if seen[n] {
			fail(n, raw, fmt.Errorf("resource %q given twice", n))
			continue
		}
		seen[n] = true
		spec, err := compile(m)
		if err != nil {
			fail(n, raw, err)
			continue
		}
		out = append(out, decoded[S]{name: n, raw: raw, spec: spec})
	}
	return out, errors.Join(errs...)
}

// commit records the accepted resources of a response in ts, keeping the
// update time of resources whose bytes did not change.
func commit[S any](p *Proxy, ts *typeState, version string, ds []decoded[S]) {
	now := p.cfg.Clock()
	next := make(map[string]appliedResource, len(ds))
	for _, d := range ds {
		r := appliedResource{raw: d.raw, version: version, updated: now}
		if old, ok := ts.resources[d.name]; ok && proto.Equal(old.raw, d.raw) {
			r.updated, r.version = old.updated, old.version
		}
		next[d.name] = r
		delete(ts.errors, d.name)
	}
	ts.resources = next
	ts.version = version
	ts.received = true
}

func (p *Proxy) applyListeners(resp *discoveryv3.DiscoveryResponse) error {
	ts := p.types[listenerType]
	ds, err := decodeAll(p, ts, resp, func() *listenerv3.Listener { return &listenerv3.Listener{} },
		(*listenerv3.Listener).GetName, compileListener)
	if err != nil {
		p.stats.lds.WithLabelValues("rejected").Inc()
		return err
	}
	want := make(map[string]*listenerSpec, len(ds))
	for _, d := range ds {
		want[d.name] = d.spec
	}
	// Bind before ACKing: an ACKed listener accepts connections.
	if err := p.reconcileSockets(want); err != nil {
		p.stats.lds.WithLabelValues("rejected").Inc()
		return err
	}
	commit(p, ts, resp.GetVersionInfo(), ds)
	p.listeners = want
	p.stats.lds.WithLabelValues("success").Inc()
	p.publish()
	return nil
}

func (p *Proxy) applyRoutes(resp *discoveryv3.DiscoveryResponse) error {
	ts := p.types[routeType]
	ds, err := decodeAll(p, ts, resp, func() *routev3.RouteConfiguration { return &routev3.RouteConfiguration{} },
		(*routev3.RouteConfiguration).GetName, compileRoute)
	if err != nil {
		return err
	}
	commit(p, ts, resp.GetVersionInfo(), ds)
	p.routes = make(map[string]*routeSpec, len(ds))
	for _, d := range ds {
		p.routes[d.name] = d.spec
	}
	p.publish()
	return nil
}

func (p *Proxy) applyClusters(resp *discoveryv3.DiscoveryResponse) error {
	ts := p.types[clusterType]
	ds, err := decodeAll(p, ts, resp, func() *clusterv3.Cluster { return &clusterv3.Cluster{} },
		(*clusterv3.Cluster).GetName, compileCluster)
	if err != nil {
		p.stats.cds.WithLabelValues("rejected").Inc()
		return err
	}
	commit(p, ts, resp.GetVersionInfo(), ds)
	next := make(map[string]*upstream, len(ds))
	for _, d := range ds {
		if old := p.upstreams[d.name]; old != nil && *old.spec == *d.spec {
			next[d.name] = old
			continue
		}
		next[d.name] = newUpstream(d.spec, p.cfg.SkipSocketOptions, p.errLog, p.upstreamError)
	}
	for name, old := range p.upstreams {
		if next[name] != old {
			// Connections in use finish; idle ones go now.
			old.transport.CloseIdleConnections()
		}
	}
	p.upstreams = next
	p.clusters = make(map[string]*clusterSpec, len(ds))
	for _, d := range ds {
		p.clusters[d.name] = d.spec
	}
	p.stats.cds.WithLabelValues("success").Inc()
	p.publish()
	return nil
}

// publish makes the current resources the configuration of new
// connections. Caller holds p.mu.
func (p *Proxy) publish() {
	p.snap.Store(&snapshot{
		listeners: maps.Clone(p.listeners),
		routes:    maps.Clone(p.routes),
		clusters:  maps.Clone(p.upstreams),
	})
	if !p.live.Load() && p.types[listenerType].received && p.types[clusterType].received {
		p.live.Store(true)
		p.log.Info("configuration applied; proxy is live", "node", p.cfg.Node)
	}
}
