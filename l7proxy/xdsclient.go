package l7proxy

import (
	"context"
	"fmt"
	"slices"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/moatnet/moat/internal/adsclient"
)

// runXDS keeps an ADS stream open until ctx ends, reconnecting with
// exponential backoff. The accepted configuration stays in force while the
// stream is down. The protocol (node, subscriptions, ACK and NACK) is
// internal/adsclient's, the client the xds tests drive the server with.
func (p *Proxy) runXDS(ctx context.Context) error {
	conn, err := adsclient.Dial(p.cfg.XDSTarget)
	if err != nil {
		return err
	}
	defer conn.Close()
	backoff := p.cfg.BackoffMin
	for {
		got, err := p.adsStream(ctx, conn)
		if ctx.Err() != nil {
			return nil
		}
		if got {
			backoff = p.cfg.BackoffMin
		}
		p.log.Warn("xDS stream ended; reconnecting", "target", p.cfg.XDSTarget, "error", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, p.cfg.BackoffMax)
	}
}

// adsStream runs one ADS stream; got reports whether any response arrived.
func (p *Proxy) adsStream(ctx context.Context, conn *adsclient.Conn) (got bool, err error) {
	st, err := conn.OpenNode(ctx, adsclient.SotW, p.node)
	if err != nil {
		return false, err
	}
	defer st.Close()
	p.m.xdsConnected.Set(1)
	defer p.m.xdsConnected.Set(0)

	// Clusters first, then listeners (as Envoy), then the routes the
	// listeners name.
	p.mu.Lock()
	routes := slices.Clone(p.routeSubs)
	p.mu.Unlock()
	if err := st.Subscribe(clusterType); err != nil {
		return false, err
	}
	if err := st.Subscribe(listenerType); err != nil {
		return false, err
	}
	if len(routes) > 0 {
		if err := st.Subscribe(routeType, routes...); err != nil {
			return false, err
		}
	}
	for {
		r, err := st.Recv()
		if err != nil {
			return got, err
		}
		got = true
		nack, newRoutes, changed := p.handleResponse(discoveryResponse(r))
		if nack != nil {
			err = st.NACK(r, nack.Error())
		} else {
			err = st.ACK(r)
		}
		if err == nil && changed {
			err = st.SetSubscription(routeType, newRoutes...)
		}
		if err != nil {
			return got, err
		}
	}
}

// discoveryResponse turns a received SotW response back into the wire type
// the apply functions validate.
func discoveryResponse(r *adsclient.Response) *discoveryv3.DiscoveryResponse {
	out := &discoveryv3.DiscoveryResponse{TypeUrl: r.TypeURL, VersionInfo: r.Version, Nonce: r.Nonce,
		Resources: make([]*anypb.Any, 0, len(r.Resources))}
	for _, res := range r.Resources {
		out.Resources = append(out.Resources, res.Body)
	}
	return out
}

// handleResponse validates and applies one response. It returns the
// reason to NACK it (nil: ACK), and the route configurations to subscribe
// to when the listeners now name others (changed).
func (p *Proxy) handleResponse(resp *discoveryv3.DiscoveryResponse) (nack error, routes []string, changed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	typeURL := resp.GetTypeUrl()
	ts, ok := p.types[typeURL]
	if !ok {
		p.m.xdsUpdates.WithLabelValues(typeLabel(typeURL), "nack").Inc()
		return fmt.Errorf("unsupported resource type %s", typeURL), nil, false
	}
	ts.nonce = resp.GetNonce()
	var err error
	switch typeURL {
	case listenerType:
		err = p.applyListeners(resp)
	case routeType:
		err = p.applyRoutes(resp)
	case clusterType:
		err = p.applyClusters(resp)
	}
	if err != nil {
		p.m.xdsUpdates.WithLabelValues(typeLabel(typeURL), "nack").Inc()
		p.log.Warn("rejected xDS update (NACK)", "type", typeLabel(typeURL), "version", resp.GetVersionInfo(), "error", err)
		return err, nil, false
	}
	p.m.xdsUpdates.WithLabelValues(typeLabel(typeURL), "ack").Inc()
	if typeURL == listenerType {
		if subs := p.wantedRoutes(); !slices.Equal(subs, p.routeSubs) {
			p.routeSubs = subs
			return nil, slices.Clone(subs), true
		}
	}
	return nil, nil, false
}

// wantedRoutes lists the route configurations the listeners name, sorted.
func (p *Proxy) wantedRoutes() []string {
	var out []string
	for _, ls := range p.listeners {
		for _, c := range ls.chains {
			out = append(out, c.hcm.routeName)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func typeLabel(typeURL string) string {
	switch typeURL {
	case listenerType:
		return "listener"
	case routeType:
		return "route"
	case clusterType:
		return "cluster"
	}
	return "other"
}
